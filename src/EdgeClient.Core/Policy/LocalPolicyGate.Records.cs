using System.Globalization;

namespace Federated.EdgeClient.Policy;

// The record-level unit of the gate: a round's DP-SGD plan priced with this machine's own record count BEFORE training,
// against max_record_epsilon (per run) and max_record_epsilon_lifetime; separate from the client-level budgets.
public sealed partial class LocalPolicyGate
{
    /// <summary>This machine's record-level epsilon for <paramref name="runId"/> at its policy's delta, as its ledger prices it now.</summary>
    internal (double Epsilon, double Delta) RecordEpsilonOf(string runId)
    {
        lock (_gate)
        {
            return (ledger.RecordSpent(policy.Delta, runId).Epsilon, policy.Delta);
        }
    }

    // A record-level plan this machine cannot price, or a record-only round under a policy that never opted into record-level guarantees.
    private PolicyDecision? RecordLevelRefusal(RoundTerms terms)
    {
        if (terms.Record is { } work && work.Problem() is { } problem)
        {
            return PolicyDecision.Decline(RecordParametersRule, $"the round's record-level DP-SGD plan cannot be priced on this machine: {problem}");
        }
        if (!terms.ClientLevel && terms.Record is null)
        {
            return PolicyDecision.Decline(RecordParametersRule, "a round without client-level noise must carry a record-level DP-SGD plan");
        }
        if (!terms.ClientLevel && policy.MaxRecordEpsilon is null)
        {
            // Client-level limits cannot bound a round with no client-level noise: only a policy that caps the record-level epsilon takes one.
            return PolicyDecision.Decline(MaxRecordEpsilonRule,
                "a record-only round adds no client-level noise; this machine takes one only when its policy sets max_record_epsilon");
        }
        return null;
    }

    // Called under _gate, after the client-level rules that do not depend on epsilon.
    private PolicyDecision? RecordBudgetRefusal(RoundTerms terms, out string summary)
    {
        summary = "";
        if (terms.Record is not { } work)
        {
            return null;
        }
        string F(double v) => v.ToString("0.####", CultureInfo.InvariantCulture);
        var charge = new LocalRecordCharge(terms.RunId, terms.Round, work, time.GetUtcNow());
        double run = ledger.RecordSpent(policy.Delta, terms.RunId, charge).Epsilon;
        double lifetime = ledger.RecordSpent(policy.Delta, plus: charge).Epsilon;
        string rate = work.SamplingRate.ToString("G4", CultureInfo.InvariantCulture);
        if (policy.MaxRecordEpsilon is { } runCap && !(run <= runCap))
        {
            return PolicyDecision.Decline(MaxRecordEpsilonRule,
                $"run {terms.RunId} would reach record-level epsilon {F(run)} at delta {policy.Delta:g3} ({work.Steps} DP-SGD steps at q {rate} = {work.ExpectedBatch} of {work.Records} records, z {F(work.NoiseMultiplier)}; maximum {F(runCap)})");
        }
        if (policy.MaxRecordEpsilonLifetime is { } lifetimeCap && !(lifetime <= lifetimeCap))
        {
            return PolicyDecision.Decline(MaxRecordEpsilonLifetimeRule,
                $"this machine would reach lifetime record-level epsilon {F(lifetime)} at delta {policy.Delta:g3} (maximum {F(lifetimeCap)})");
        }
        string Cap(double? cap) => cap is { } c ? $" of {F(c)}" : "";
        summary = $"record epsilon {F(run)}{Cap(policy.MaxRecordEpsilon)} this run, {F(lifetime)}{Cap(policy.MaxRecordEpsilonLifetime)} lifetime (q {rate})";
        return null;
    }
}
