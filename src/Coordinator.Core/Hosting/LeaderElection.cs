using System.Data.Common;
using System.Globalization;
using Federated.Coordinator.State;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator;

/// <summary>
/// Drives a coordinator that shares its PostgreSQL state: stands by, polling the lease every
/// <see cref="LeaseTiming.PollInterval"/>, until it takes it; then resumes the runs the last leader left (the existing
/// resume path: interrupted rounds recorded failed, nothing charged) and serves, renewing every
/// <see cref="LeaseTiming.RenewInterval"/>. Once the lease is lost (taken over, unrenewable for its whole duration, or a
/// write was fenced) it never leads again in this process: the host stops and exits non-zero, and the service manager
/// starts it afresh as a standby.
/// </summary>
internal sealed class LeaderElection : IAsyncDisposable
{
    private readonly LeaderLease _lease;
    private readonly Leadership _leadership;
    private readonly Func<int> _resume;
    private readonly Action<string> _lost;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _firstAttempt = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _loop = Task.CompletedTask;

    /// <param name="resume">Runs once the lease is taken, before serving: resumes the runs; returns how many.</param>
    /// <param name="lost">Called once with one line saying why, when the lease is lost after it was held.</param>
    public LeaderElection(LeaderLease lease, Leadership leadership, Func<int> resume, Action<string> lost, TimeProvider time, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(lease);
        ArgumentNullException.ThrowIfNull(leadership);
        ArgumentNullException.ThrowIfNull(resume);
        ArgumentNullException.ThrowIfNull(lost);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(logger);
        _lease = lease;
        _leadership = leadership;
        _resume = resume;
        _lost = lost;
        _time = time;
        _logger = logger;
    }

    public void Start() => _loop = Task.Run(() => RunAsync(_stop.Token));

    /// <summary>
    /// Completes once the first try for the lease is over: leading (runs resumed) when the lease was free, else standing
    /// by. A coordinator alone on its database is thus the leader when its start returns, as one on SQLite is.
    /// </summary>
    public Task FirstAttempt => _firstAttempt.Task;

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
    }

    private async Task RunAsync(CancellationToken stop)
    {
        try
        {
            long takenAt = await StandByAsync(stop);
            int resumed;
            try
            {
                resumed = _resume();
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // Could not even resume (fenced at once, the database gone): no half-leader; stop as on any loss.
                Lose($"took the leader lease but could not resume the runs: {ex.Message}");
                return;
            }
            _leadership.Renewed(takenAt, _lease.Address);
            CoordinatorLog.LeaseTaken(_logger, _lease.Token, resumed, _lease.Address);
            _firstAttempt.TrySetResult();
            await LeadAsync(takenAt, stop);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            // The host is stopping.
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A loop that died unseen would leave a standby that never takes over, or a leader that never renews: stop
            // instead, so the service manager starts a fresh process.
            Lose($"the lease loop failed: {ex.Message}");
        }
        finally
        {
            _firstAttempt.TrySetResult();
        }
    }

    /// <summary>Polls until the lease is taken; returns the timestamp at which the taking request was sent.</summary>
    private async Task<long> StandByAsync(CancellationToken stop)
    {
        string? announced = null;
        bool pollFailed = false;
        while (true)
        {
            long sentAt = _time.GetTimestamp();
            try
            {
                LeaseAttempt attempt = await _lease.TryAcquireAsync(stop);
                if (attempt.Acquired)
                {
                    return sentAt;
                }
                string? leader = attempt.Current?.Address;
                _leadership.StandBy(leader);
                if (leader != announced || pollFailed)
                {
                    CoordinatorLog.StandingBy(_logger, _lease.Address, _leadership.StandbyDetail);
                    announced = leader;
                }
                pollFailed = false;
                _firstAttempt.TrySetResult();
            }
            catch (Exception ex) when (ex is DbException or TimeoutException or IOException)
            {
                // The database may be restarting: a standby keeps polling (and keeps refusing calls) until it answers.
                if (!pollFailed)
                {
                    CoordinatorLog.LeasePollFailed(_logger, ex.Message);
                    pollFailed = true;
                }
                _firstAttempt.TrySetResult();
            }
            await Task.Delay(_lease.Timing.PollInterval, _time, stop);
        }
    }

    private async Task LeadAsync(long renewedAt, CancellationToken stop)
    {
        using var lostOrStopped = CancellationTokenSource.CreateLinkedTokenSource(stop, _lease.Lost);
        while (true)
        {
            try
            {
                await Task.Delay(_lease.Timing.RenewInterval, _time, lostOrStopped.Token);
            }
            catch (OperationCanceledException) when (!stop.IsCancellationRequested)
            {
                // A write was fenced: another coordinator holds the lease.
                Lose(_lease.LostReason ?? "the leader lease was lost");
                return;
            }
            long sentAt = _time.GetTimestamp();
            try
            {
                if (!await _lease.RenewAsync(stop))
                {
                    Lose(_lease.LostReason ?? "the leader lease was taken over");
                    return;
                }
                renewedAt = sentAt;
                _leadership.Renewed(sentAt, _lease.Address);
            }
            catch (Exception ex) when (ex is DbException or TimeoutException or IOException)
            {
                TimeSpan since = _time.GetElapsedTime(renewedAt);
                if (since >= _lease.Timing.Duration)
                {
                    // A standby may have taken the lease by now: stop before answering anything more from memory.
                    Lose(string.Create(CultureInfo.InvariantCulture,
                        $"could not renew the leader lease for {since.TotalSeconds:0.#} s (lease {_lease.Timing.Duration.TotalSeconds:0.#} s): {ex.Message}"));
                    return;
                }
                CoordinatorLog.LeaseRenewFailed(_logger, ex.Message);
            }
        }
    }

    private void Lose(string reason)
    {
        _leadership.Depose(_lease.Successor);
        CoordinatorLog.LeaseLost(_logger, reason);
        _lost(reason);
    }
}
