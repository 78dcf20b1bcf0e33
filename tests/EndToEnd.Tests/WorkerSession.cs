using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// The loops the in-process training clients of these tests share: an <see cref="EdgeSession"/> handing each invitation
/// to a real <see cref="EdgeRoundWorker"/> until the test cancels, and an admin watch of a run to its end.
/// </summary>
internal static class WorkerSession
{
    /// <summary>Runs the session until <paramref name="cancellationToken"/> ends it, adding each round's result to <paramref name="results"/>.</summary>
    public static async Task RunAsync(CoordinatorConnection connection, EdgeRoundWorker worker, List<RoundWorkResult> results, CancellationToken cancellationToken)
    {
        var session = new EdgeSession(connection, new RegisterRequest { ClientVersion = "test", Device = "cpu" });
        try
        {
            await session.RunAsync(async (invitation, ct) =>
            {
                RoundWorkResult result = await worker.HandleAsync(invitation, ct);
                lock (results)
                {
                    results.Add(result);
                }
            }, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // The test ends the session.
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled)
        {
            // Idem, mid-call.
        }
    }

    /// <summary>The run's last status, once WatchRun ends (the run ended).</summary>
    public static async Task<RunStatus> WatchToEndAsync(AdminService.AdminServiceClient admin, string runId, CancellationToken cancellationToken)
    {
        using AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = runId }, new CallOptions(cancellationToken: cancellationToken));
        RunStatus? last = null;
        await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(cancellationToken))
        {
            last = status;
        }
        return last ?? throw new InvalidOperationException("WatchRun ended without a status");
    }
}
