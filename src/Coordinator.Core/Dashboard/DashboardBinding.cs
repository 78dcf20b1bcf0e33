using System.Net;

namespace Federated.Coordinator.Dashboard;

/// <summary>
/// Where the dashboard listens: 127.0.0.1 unless --address names an IP explicitly. The page shows what the identity may
/// read, so nothing but an explicit flag may widen it: a URL variable that ASP.NET would honour (ASPNETCORE_URLS,
/// DOTNET_URLS) and that names a non-loopback host is refused rather than silently overridden.
/// </summary>
internal static class DashboardBinding
{
    public const int DefaultPort = 7450;

    public static readonly string[] UrlVariables = ["ASPNETCORE_URLS", "DOTNET_URLS"];

    /// <summary>The address to bind; a <see cref="UsageException"/> (exit 2, one line) for anything else.</summary>
    public static IPAddress Resolve(string? addressFlag, Func<string, string?> environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        if (addressFlag is not null)
        {
            if (!IPAddress.TryParse(addressFlag, out IPAddress? explicitAddress) || addressFlag.Contains('%', StringComparison.Ordinal))
            {
                throw new UsageException($"--address must be an IP address such as 127.0.0.1 or 0.0.0.0, got '{Shorten(addressFlag)}'");
            }
            return explicitAddress;
        }
        foreach (string variable in UrlVariables)
        {
            string? urls = environment(variable);
            if (string.IsNullOrWhiteSpace(urls))
            {
                continue;
            }
            foreach (string url in urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (!IsLoopbackUrl(url))
                {
                    throw new UsageException(
                        $"{variable} asks for '{Shorten(url)}', a non-loopback bind; the dashboard binds 127.0.0.1 unless --address IP is given explicitly");
                }
            }
        }
        return IPAddress.Loopback;
    }

    /// <summary>The port flag: 0 (any free port) to 65535.</summary>
    public static int Port(int? portFlag)
    {
        int port = portFlag ?? DefaultPort;
        if (port is < 0 or > 65535)
        {
            throw new UsageException($"--port must be an integer in 0..65535, got {port}");
        }
        return port;
    }

    private static bool IsLoopbackUrl(string url)
    {
        // ASP.NET's wildcard hosts (*, +) bind every interface.
        if (!Uri.TryCreate(url.Replace("://*", "://wildcard.invalid", StringComparison.Ordinal).Replace("://+", "://wildcard.invalid", StringComparison.Ordinal),
                UriKind.Absolute, out Uri? uri))
        {
            return false;
        }
        if (uri.IsLoopback)
        {
            return true;
        }
        return IPAddress.TryParse(uri.Host.Trim('[', ']'), out IPAddress? ip) && IPAddress.IsLoopback(ip);
    }

    private static string Shorten(string text) => text.Length > 80 ? text[..80] + "..." : text;
}
