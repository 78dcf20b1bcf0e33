using System.Net;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace Federated.EdgeClient.Telemetry;

/// <summary>
/// `edge-client run --metrics-port N [--metrics-address IP]`: a Prometheus scrape endpoint (http://IP:N/metrics,
/// loopback unless told otherwise) and OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set.
/// </summary>
public static class EdgeTelemetry
{
    public const string ServiceName = "federated-edge-client";

    /// <summary>Starts the exporters; null when neither a port nor an OTLP endpoint asks for one.</summary>
    /// <exception cref="InvalidOperationException">The port cannot be bound (in use, or not allowed): one line naming it.</exception>
    public static MeterProvider? Start(int? port, string address)
    {
        bool otlp = !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if (port is null && !otlp)
        {
            return null;
        }
        IPAddress ip = IPAddress.Parse(address);
        if (port is { } p)
        {
            // HttpListener reports a taken port only when it starts, inside the provider; a probe names it first.
            try
            {
                using var probe = new System.Net.Sockets.TcpListener(ip, p);
                probe.Start();
                probe.Stop();
            }
            catch (System.Net.Sockets.SocketException ex)
            {
                throw new InvalidOperationException($"metrics port {p} on {address} cannot be used ({ex.SocketErrorCode}); choose another --metrics-port", ex);
            }
        }
        MeterProviderBuilder builder = Sdk.CreateMeterProviderBuilder()
            .ConfigureResource(resource => resource.AddService(ServiceName, serviceVersion: typeof(EdgeTelemetry).Assembly.GetName().Version?.ToString()))
            .AddMeter(EdgeMetrics.MeterName);
        if (port is { } metricsPort)
        {
            builder.AddPrometheusHttpListener(options =>
            {
                options.Host = ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ip}]" : ip.ToString();
                options.Port = metricsPort;
                options.ScrapeEndpointPath = "/metrics";
                // No response cache: a scrape reflects this moment.
                options.ScrapeResponseCacheDurationMilliseconds = 0;
            });
        }
        if (otlp)
        {
            builder.AddOtlpExporter();
        }
        return builder.Build();
    }
}
