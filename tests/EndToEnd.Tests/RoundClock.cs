using Federated.Coordinator;
using Federated.Coordinator.Rounds;
using Federated.Protos.V1;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// A round's stage deadlines on a fake clock: the honest participants take what real time they need (no deadline can
/// cut a slow one), and a test closes a stage on its deadline only once that stage waits for nobody but the participants
/// it made vanish, instead of sleeping through seconds of stage timeout.
/// </summary>
internal static class RoundClock
{
    private static readonly TimeSpan s_patience = TimeSpan.FromMinutes(3);

    /// <summary>A fake clock starting now, for <c>RoundRegistry.Start(plan, clock: ...)</c>.</summary>
    public static FakeTimeProvider Create() => new(DateTimeOffset.UtcNow);

    /// <summary>Waits (real time, at most three minutes) until <paramref name="condition"/> holds; the timeout names <paramref name="what"/>.</summary>
    public static Task UntilAsync(Func<bool> condition, string what) => UntilAsync(condition, () => $"{what} did not happen within {s_patience}");

    /// <summary>The live round <paramref name="round"/> of <paramref name="runId"/> once the orchestrator opened it (real time, at most three minutes).</summary>
    public static async Task<SecAggRound> FindAsync(RoundRegistry rounds, string runId, uint round)
    {
        var reference = new RoundRef { RunId = runId, Round = round };
        SecAggRound? found = null;
        await UntilAsync(() =>
        {
            try
            {
                found = rounds.Find(reference);
                return true;
            }
            catch (RoundNotInProgressException)
            {
                return false;
            }
        }, () => $"round {round} of run {runId} did not open within {s_patience}");
        return found!;
    }

    /// <summary>
    /// Waits (real time, at most three minutes) until <paramref name="signers"/> survivors have signed the survivor set,
    /// then moves <paramref name="clock"/> past half the unmask stage, when the consistency check answers with the
    /// signatures it has (those who did not sign count as dropped for it).
    /// </summary>
    public static async Task ExpireConsistencyCheckAsync(SecAggRound round, FakeTimeProvider clock, int signers)
    {
        await UntilAsync(() => round.ConfirmationCount >= signers,
            () => $"{round.ConfirmationCount} of {signers} survivors signed the survivor set after {s_patience}");
        // The check closes half a stage after the masked inputs closed; the fake clock has not moved since then.
        clock.Advance(round.Plan.StageTimeout / 2);
    }

    /// <summary>
    /// Waits (real time, at most three minutes) until <paramref name="stage"/> is open and waits only for
    /// <paramref name="missing"/>, then moves <paramref name="clock"/> to that stage's deadline, which closes it.
    /// </summary>
    public static Task ExpireStageAsync(SecAggRound round, FakeTimeProvider clock, RoundStage stage, params string[] missing) =>
        ExpireStageAsync(round, clock, stage, missing, _ => false);

    /// <summary>
    /// As above, where a participant the stage still waits for also counts as gone once <paramref name="ended"/> says its
    /// client has stopped (an honest client that refused to go on, e.g. at a failed consistency check).
    /// </summary>
    public static async Task ExpireStageAsync(SecAggRound round, FakeTimeProvider clock, RoundStage stage, string[] missing, Func<string, bool> ended)
    {
        int index = stage switch
        {
            RoundStage.AdvertiseKeys => 0,
            RoundStage.ShareKeys => 1,
            RoundStage.MaskedInput => 2,
            RoundStage.Unmask => 3,
            _ => throw new ArgumentOutOfRangeException(nameof(stage), stage, "not a stage with a deadline"),
        };
        string[] expected = [.. missing.Order(StringComparer.Ordinal)];
        IReadOnlyList<string> waiting = [];
        await UntilAsync(() =>
        {
            (waiting, DateTimeOffset? deadline) = round.Waiting();
            if (deadline == round.Deadlines[index] && expected.All(waiting.Contains) && waiting.All(w => expected.Contains(w) || ended(w)))
            {
                return true;
            }
            if (round.Stage is RoundStage.Completed or RoundStage.Failed)
            {
                throw new InvalidOperationException($"the round ended ({round.Stage}) before {stage} waited only for {string.Join(", ", expected)}");
            }
            return false;
        }, () => $"{stage} still waits for [{string.Join(", ", waiting)}], not only [{string.Join(", ", expected)}], after {s_patience}");
        if (clock.GetUtcNow() < round.Deadlines[index])
        {
            clock.SetUtcNow(round.Deadlines[index]);
        }
    }

    // The one polling loop: every 10 ms until the condition holds or the patience runs out (then the message says what is missing).
    private static async Task UntilAsync(Func<bool> condition, Func<string> timeout)
    {
        using var patience = new CancellationTokenSource(s_patience);
        while (!condition())
        {
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(10), patience.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException(timeout());
            }
        }
    }
}
