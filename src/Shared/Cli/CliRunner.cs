using System.Runtime.InteropServices;
using Spectre.Console.Cli;

namespace Federated.Cli;

/// <summary>A command-line problem the user can fix: the process prints one line and exits with 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>Runs a command app and maps outcomes to exit codes: 0 ok (and a clean stop on SIGTERM), 1 failed, 2 bad usage, 130 Ctrl+C.</summary>
/// <remarks>
/// One runner for both executables (src/Shared), so coordinator and edge-client behave alike. A failure is one line in the
/// user's terms (<see cref="UserMessage"/>); `--verbose`, accepted by every command, adds the exception with its type and stack.
/// </remarks>
public static class CliRunner
{
    /// <summary>The flag every command accepts: print failures in full (type names, inner exceptions, stack).</summary>
    public const string VerboseFlag = "--verbose";

    public const int Ok = 0;
    public const int Failed = 1;
    public const int BadUsage = 2;
    public const int Interrupted = 130;

    /// <summary>True when this process was started with --verbose (commands may print more detail).</summary>
    public static bool Verbose { get; private set; }

    public static async Task<int> RunAsync(string name, Action<IConfigurator> configure, string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        // A global flag, taken out before parsing so that every command accepts it (strict parsing refuses unknown flags).
        Verbose = args.Contains(VerboseFlag, StringComparer.Ordinal);
        string[] commandArgs = Verbose ? [.. args.Where(a => !string.Equals(a, VerboseFlag, StringComparison.Ordinal))] : args;
        // Before any host reads (and may clear) NOTIFY_SOCKET.
        _ = ServiceNotifier.IsEnabled;
        using var interrupt = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            // The first Ctrl+C asks commands to stop between steps; a second one kills the process.
            e.Cancel = !interrupt.IsCancellationRequested;
            interrupt.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        // SIGTERM (systemd, docker stop, kill): the same clean stop as Ctrl+C, said in one line, and exit 0, instead of
        // the runtime's silent exit 143.
        bool terminated = false;
        using PosixSignalRegistration? onTerminate = OperatingSystem.IsWindows() ? null : PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            if (!terminated)
            {
                terminated = true;
                Console.Error.WriteLine($"{name}: SIGTERM received; stopping");
                ServiceNotifier.Stopping();
                interrupt.Cancel();
            }
        });
        try
        {
            var app = new CommandApp();
            app.Configure(config =>
            {
                config.SetApplicationName(name);
                config.PropagateExceptions();
                config.UseStrictParsing();
                configure(config);
            });
            int code = await app.RunAsync(commandArgs, interrupt.Token);
            if (terminated)
            {
                Console.Error.WriteLine($"{name}: stopped (SIGTERM)");
                return Ok;
            }
            return code;
        }
        catch (OperationCanceledException) when (terminated)
        {
            Console.Error.WriteLine($"{name}: stopped (SIGTERM)");
            return Ok;
        }
        catch (OperationCanceledException) when (interrupt.IsCancellationRequested)
        {
            Console.Error.WriteLine($"{name}: interrupted");
            return Interrupted;
        }
        catch (Exception ex) when (ex is CommandParseException or CommandRuntimeException or UsageException)
        {
            Console.Error.WriteLine($"{name}: {UserMessage.Of(ex)}");
            WriteDetail(ex);
            return BadUsage;
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"{name}: error: {UserMessage.Of(ex)}");
            WriteDetail(ex);
            return Failed;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private static void WriteDetail(Exception ex)
    {
        if (Verbose)
        {
            Console.Error.WriteLine(ex.ToString());
        }
    }
}
