using Microsoft.Extensions.Hosting.Systemd;

namespace Federated.Cli;

/// <summary>
/// The service manager's notification protocol (sd_notify(3)) for `Type=notify` units: READY=1 once the service does
/// its job (the coordinator listens; the edge client is registered), STATUS= with its state in one line, STOPPING=1
/// on SIGTERM. Sent only where systemd asked for it (NOTIFY_SOCKET is set), through Microsoft.Extensions.Hosting.Systemd's
/// notifier; a no-op everywhere else. Status text never holds data or secrets (the callers' log lines don't).
/// </summary>
public static class ServiceNotifier
{
    private const int MaxStatusLength = 200;
    private static readonly SystemdNotifier s_notifier;

    // Read once, first thing (CliRunner touches IsEnabled before any host starts): under UseSystemd the host's lifetime
    // sends its own READY=1, after which a notifier created in the same process no longer found NOTIFY_SOCKET (seen here).
    static ServiceNotifier() => s_notifier = new SystemdNotifier();

    /// <summary>Whether a service manager listens (NOTIFY_SOCKET was set when the process started).</summary>
    public static bool IsEnabled => s_notifier.IsEnabled;

    /// <summary>A status line, then READY=1 (one assignment per datagram: the notifier sends a state's text as given).</summary>
    public static void Ready(string status)
    {
        Status(status);
        Send("READY=1");
    }

    /// <summary>STATUS=line: what the service does now (shown by `systemctl status`).</summary>
    public static void Status(string status) => Send($"STATUS={Line(status)}");

    /// <summary>STOPPING=1: a clean stop has begun.</summary>
    public static void Stopping() => Send("STOPPING=1");

    private static void Send(string state)
    {
        if (!s_notifier.IsEnabled)
        {
            return;
        }
        try
        {
            s_notifier.Notify(new ServiceState(state));
        }
        catch (Exception ex) when (ex is System.Net.Sockets.SocketException or IOException or ObjectDisposedException)
        {
            // The service manager went away: notifications are advice, never a reason to stop.
        }
    }

    private static string Line(string text)
    {
        string line = text.ReplaceLineEndings(" ");
        return line.Length > MaxStatusLength ? line[..MaxStatusLength] : line;
    }
}
