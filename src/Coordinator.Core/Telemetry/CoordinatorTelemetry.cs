using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Federated.Coordinator.Telemetry;

/// <summary>
/// Wires the coordinator's metrics and traces: a Prometheus scrape endpoint on its own plain-HTTP listener
/// (`serve --metrics-port`, loopback unless `--metrics-address`), and OTLP export of metrics and round spans when the
/// standard OTEL_EXPORTER_OTLP_ENDPOINT is set.
/// </summary>
internal static class CoordinatorTelemetry
{
    /// <summary>The standard variable that turns OTLP export on (the SDK reads it and its siblings itself).</summary>
    internal const string OtlpEndpointVariable = "OTEL_EXPORTER_OTLP_ENDPOINT";

    public const string ScrapePath = "/metrics";

    /// <summary>The resource's service.name (Prometheus's target_info, OTLP's resource).</summary>
    public const string ServiceName = "federated-coordinator";

    public static void AddServices(IServiceCollection services, CoordinatorOptions options)
    {
        services.AddSingleton<CoordinatorMetrics>();
        services.AddSingleton<RpcMetricsInterceptor>();
        bool otlp = !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(OtlpEndpointVariable));
        if (options.MetricsPort is null && !otlp)
        {
            return;
        }
        OpenTelemetryBuilder telemetry = services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(ServiceName, serviceVersion: typeof(CoordinatorTelemetry).Assembly.GetName().Version?.ToString()))
            .WithMetrics(metrics =>
        {
            metrics.AddMeter(CoordinatorMetrics.MeterName);
            if (options.MetricsPort is not null)
            {
                // No response cache: a scrape reflects the state at that moment (Prometheus scrapes every 15 s or so).
                metrics.AddPrometheusExporter(prometheus => prometheus.ScrapeResponseCacheDurationMilliseconds = 0);
            }
            if (otlp)
            {
                metrics.AddOtlpExporter();
            }
        });
        if (otlp)
        {
            telemetry.WithTracing(tracing => tracing.AddSource(CoordinatorMetrics.MeterName).AddOtlpExporter());
        }
    }

    /// <summary>The scrape listener: HTTP/1.1 without TLS (Prometheus's default), on its own port.</summary>
    public static void Listen(KestrelServerOptions kestrel, CoordinatorOptions options)
    {
        if (options.MetricsPort is { } port)
        {
            kestrel.Listen(IPAddress.Parse(options.MetricsAddress), port, listen => listen.Protocols = HttpProtocols.Http1);
        }
    }

    /// <summary>
    /// Serves /metrics on the scrape listener only, and nothing else there: the gRPC services stay behind mutual TLS
    /// (the only listener with TLS), so a request without TLS reaches the scrape endpoint or a 404.
    /// </summary>
    public static void MapEndpoint(WebApplication app, CoordinatorOptions options)
    {
        if (options.MetricsPort is null)
        {
            return;
        }
        app.Use(async (context, next) =>
        {
            if (context.Request.IsHttps || (context.Request.Path == ScrapePath && HttpMethods.IsGet(context.Request.Method)))
            {
                await next(context);
                return;
            }
            context.Response.StatusCode = StatusCodes.Status404NotFound;
        });
        app.UseOpenTelemetryPrometheusScrapingEndpoint(context => !context.Request.IsHttps && context.Request.Path == ScrapePath);
    }
}
