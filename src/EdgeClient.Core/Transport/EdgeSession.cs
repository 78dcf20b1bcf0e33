using Federated.EdgeClient.Rounds;
using Federated.Protos.V1;
using Grpc.Core;

namespace Federated.EdgeClient.Transport;

/// <summary>
/// The edge client's life on the network: register, heartbeat at the coordinator's interval, hand each round
/// invitation to the caller, register again when the coordinator has forgotten this client, and ride out outages
/// with the connection's backoff. Cancellation ends it between steps.
/// </summary>
public sealed class EdgeSession(CoordinatorConnection connection, RegisterRequest registration, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    /// <summary>One event per state change (registered, invited, waiting); never data.</summary>
    public Action<EdgeEvent>? Report { get; init; }

    /// <summary>Runs until cancelled; <paramref name="onInvitation"/> runs to completion before the next heartbeat.</summary>
    public async Task RunAsync(Func<RoundRef, CancellationToken, Task> onInvitation, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(onInvitation);
        TimeSpan interval = await RegisterAsync(cancellationToken);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            HeartbeatResponse heartbeat;
            try
            {
                heartbeat = await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, cancellationToken);
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.FailedPrecondition)
            {
                // The coordinator does not know this client (for example, a fresh state file): register again.
                interval = await RegisterAsync(cancellationToken);
                continue;
            }
            if (heartbeat.Invitation is { } invitation)
            {
                Report?.Invoke(new EdgeEvent(EdgeEvent.Invited, $"invited to round {invitation.Round} of run {invitation.RunId}")
                {
                    RunId = invitation.RunId,
                    Round = invitation.Round,
                });
                await onInvitation(invitation, cancellationToken);
                Report?.Invoke(new EdgeEvent(EdgeEvent.Waiting, "waiting for rounds"));
                continue;
            }
            await Task.Delay(Interval(heartbeat.HeartbeatIntervalSeconds, interval), _time, cancellationToken);
        }
    }

    private async Task<TimeSpan> RegisterAsync(CancellationToken cancellationToken)
    {
        RegisterResponse registered = await connection.RegisterAsync(registration, cancellationToken);
        TimeSpan interval = Interval(registered.HeartbeatIntervalSeconds, TimeSpan.FromSeconds(10));
        string name = connection.ClientCertificate.GetNameInfo(System.Security.Cryptography.X509Certificates.X509NameType.SimpleName, forIssuer: false);
        Report?.Invoke(new EdgeEvent(EdgeEvent.Registered, $"registered as {name} (client), heartbeat every {interval.TotalSeconds:0} s")
        {
            Name = name,
            Role = "client",
        });
        Report?.Invoke(new EdgeEvent(EdgeEvent.Waiting, "waiting for rounds"));
        return interval;
    }

    // A coordinator-sent interval is clamped: a hostile 0 must not turn heartbeats into a busy loop.
    private static TimeSpan Interval(uint seconds, TimeSpan fallback) =>
        seconds == 0 ? fallback : TimeSpan.FromSeconds(Math.Clamp(seconds, 1u, 3600u));
}
