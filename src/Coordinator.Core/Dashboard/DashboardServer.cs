using System.Net;
using System.Security.Cryptography;
using System.Text;
using Federated.Coordinator.Cli;
using Federated.Trust;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Dashboard;

/// <summary>
/// The dashboard's web server (Kestrel, plain HTTP on the bound address). It serves exactly three routes: the page, its
/// live fragment and the engineer's abort form; no file is ever served, so the PFX, the password and state files
/// cannot be. Pages are no-store with a CSP that allows only this origin and the page's own nonce'd style and script.
/// On a loopback bind the Host header must name loopback, so a DNS-rebinding page cannot read the dashboard.
/// </summary>
internal sealed class DashboardServer : IAsyncDisposable
{
    public const long MaxRequestBodyBytes = 16 * 1024;

    private readonly WebApplication _app;
    private readonly DashboardReader _reader;
    private readonly string _abortToken = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
    private readonly bool _loopback;

    private DashboardServer(WebApplication app, DashboardReader reader, bool loopback)
    {
        _app = app;
        _reader = reader;
        _loopback = loopback;
    }

    /// <summary>Where the dashboard listens, once started.</summary>
    public Uri Address { get; private set; } = null!;

    /// <summary>Builds the server; <see cref="StartAsync"/> binds it. The reader is owned by the server from here on.</summary>
    public static DashboardServer Create(DashboardReader reader, IPAddress address, int port)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(address);
        // Production whatever ASPNETCORE_ENVIRONMENT says: the developer exception page would serve stack traces.
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], EnvironmentName = Environments.Production });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // The only body is the abort form (a run id and a token).
            kestrel.Limits.MaxRequestBodySize = MaxRequestBodyBytes;
            kestrel.Listen(address, port);
        });
        WebApplication app = builder.Build();
        var server = new DashboardServer(app, reader, IPAddress.IsLoopback(address));
        server.Map();
        return server;
    }

    /// <summary>Binds; a port in use surfaces as the IOException Kestrel throws (the command turns it into one line).</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await _app.StartAsync(cancellationToken);
        string bound = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Address = new Uri(bound.EndsWith('/') ? bound : bound + "/");
    }

    public Task WaitForShutdownAsync(CancellationToken cancellationToken) => _app.WaitForShutdownAsync(cancellationToken);

    private void Map()
    {
        _app.Use(async (context, next) =>
        {
            HttpResponse response = context.Response;
            response.Headers.CacheControl = "no-store";
            response.Headers.XContentTypeOptions = "nosniff";
            response.Headers.XFrameOptions = "DENY";
            response.Headers["Referrer-Policy"] = "no-referrer";
            if (_loopback && !IsLoopbackHost(context.Request.Host))
            {
                response.StatusCode = StatusCodes.Status421MisdirectedRequest;
                await response.WriteAsync("the dashboard answers only to a loopback host name", context.RequestAborted);
                return;
            }
            await next(context);
        });
        _app.MapGet("/", async context =>
        {
            string nonce = Convert.ToBase64String(RandomNumberGenerator.GetBytes(16));
            DashboardSnapshot snapshot = await _reader.ReadAsync(context.RequestAborted);
            await Html(context, DashboardPage.Document(snapshot, _abortToken, nonce), nonce);
        });
        _app.MapGet("/fragment", async context =>
        {
            DashboardSnapshot snapshot = await _reader.ReadAsync(context.RequestAborted);
            await Html(context, DashboardPage.Fragment(snapshot, _abortToken), nonce: null);
        });
        _app.MapPost("/abort", AbortAsync);
    }

    private async Task AbortAsync(HttpContext context)
    {
        if (_reader.Role != FederationRole.Engineer)
        {
            // The coordinator would refuse it too; the dashboard does not offer it.
            context.Response.StatusCode = StatusCodes.Status403Forbidden;
            await context.Response.WriteAsync($"not available to role {FederationRoleExtension.Name(_reader.Role)}", context.RequestAborted);
            return;
        }
        if (!context.Request.HasFormContentType)
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            return;
        }
        IFormCollection form = await context.Request.ReadFormAsync(context.RequestAborted);
        string token = form["token"].ToString();
        if (!CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(token), Encoding.ASCII.GetBytes(_abortToken)))
        {
            // Only a page this dashboard served holds the token: a form posted from another site does not.
            context.Response.StatusCode = StatusCodes.Status403Forbidden;
            await context.Response.WriteAsync("the abort form's token does not match this dashboard", context.RequestAborted);
            return;
        }
        string runId;
        try
        {
            runId = AdminArguments.RunId(form["run"].ToString());
        }
        catch (UsageException ex)
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            await context.Response.WriteAsync(ex.Message, context.RequestAborted);
            return;
        }
        _reader.Notify(await _reader.AbortAsync(runId, context.RequestAborted));
        context.Response.Redirect("/");
        context.Response.StatusCode = StatusCodes.Status303SeeOther;
    }

    private static Task Html(HttpContext context, string body, string? nonce)
    {
        context.Response.ContentType = "text/html; charset=utf-8";
        string scripts = nonce is null ? "'none'" : $"'nonce-{nonce}'";
        context.Response.Headers.ContentSecurityPolicy =
            $"default-src 'none'; connect-src 'self'; form-action 'self'; img-src 'self'; style-src {scripts}; script-src {scripts}; base-uri 'none'; frame-ancestors 'none'";
        return context.Response.WriteAsync(body, context.RequestAborted);
    }

    private static bool IsLoopbackHost(HostString host)
    {
        string name = host.Host.Trim('[', ']');
        return string.Equals(name, "localhost", StringComparison.OrdinalIgnoreCase) || IPAddress.TryParse(name, out IPAddress? ip) && IPAddress.IsLoopback(ip);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.DisposeAsync();
        _reader.Dispose();
    }
}
