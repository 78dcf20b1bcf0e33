namespace Federated.EdgeClient.Transport;

/// <summary>
/// Which of several coordinators (a leader and standbys on one state database) the edge client talks to: it tries
/// them in list order with <see cref="ReconnectBackoff"/> between tries, sticks to the one that serves rounds for as
/// long as it does, and moves on to the next in the list (wrapping around) when that one fails or says it is not the
/// leader. Failures the caller does not classify as "try the next one" end the run.
/// </summary>
internal sealed class CoordinatorFailover
{
    private readonly IReadOnlyList<Uri> _coordinators;
    private readonly TimeProvider _time;
    private readonly ReconnectBackoff _backoff;
    private int _current;
    private Uri? _serving;

    /// <param name="coordinators">The coordinators in the order to try them; at least one.</param>
    /// <param name="time">The clock the waits between tries run on.</param>
    /// <param name="initialBackoff">The first wait after a failed try (default 1 s).</param>
    /// <param name="maximumBackoff">The longest wait between tries (default 2 min).</param>
    public CoordinatorFailover(IReadOnlyList<Uri> coordinators, TimeProvider time, TimeSpan? initialBackoff = null, TimeSpan? maximumBackoff = null)
    {
        ArgumentNullException.ThrowIfNull(coordinators);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfZero(coordinators.Count, nameof(coordinators));
        _coordinators = coordinators;
        _time = time;
        _backoff = new ReconnectBackoff(initialBackoff ?? TimeSpan.FromSeconds(1), maximumBackoff ?? TimeSpan.FromMinutes(2));
    }

    /// <summary>The coordinator being tried or used now.</summary>
    public Uri Current => _coordinators[_current];

    /// <summary>The coordinator that last served rounds; null until one has.</summary>
    public Uri? Serving => _serving;

    /// <summary>Hears (serving, switched from) when a coordinator other than the last serving one (at first, the first listed) serves rounds.</summary>
    public Action<Uri, Uri>? Switched { get; init; }

    /// <summary>Hears (failed, why, next, wait) each time a try fails and the next coordinator is tried after the wait.</summary>
    public Action<Uri, string, Uri, TimeSpan>? MovingOn { get; init; }

    /// <summary>
    /// Runs <paramref name="attempt"/> against one coordinator after another until an attempt returns. An attempt calls
    /// its <c>served</c> callback once its coordinator has shown it serves rounds (this client is registered): that
    /// coordinator is then the one to stay with, and the backoff starts over. <paramref name="moveOnReason"/> says why
    /// a failure means "try the next coordinator" (null: the failure is rethrown and nothing else is tried).
    /// </summary>
    public async Task RunAsync(Func<Uri, Action, CancellationToken, Task> attempt, Func<Exception, string?> moveOnReason, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(attempt);
        ArgumentNullException.ThrowIfNull(moveOnReason);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Uri coordinator = Current;
            string? reason;
            try
            {
                await attempt(coordinator, () => Served(coordinator), cancellationToken);
                return;
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested && (reason = moveOnReason(ex)) is not null)
            {
                _current = (_current + 1) % _coordinators.Count;
                TimeSpan wait = _backoff.Next();
                MovingOn?.Invoke(coordinator, reason, Current, wait);
                await Task.Delay(wait, _time, cancellationToken);
            }
        }
    }

    private void Served(Uri coordinator)
    {
        _backoff.Reset();
        Uri previous = _serving ?? _coordinators[0];
        _serving = coordinator;
        if (previous != coordinator)
        {
            Switched?.Invoke(coordinator, previous);
        }
    }
}
