namespace Federated.Aggregation.Privacy;

/// <summary>An (epsilon, delta) budget set by the privacy officer for one population.</summary>
public sealed record PrivacyBudget(double Epsilon, double Delta)
{
    /// <summary>Throws unless 0 &lt; epsilon &lt; infinity and 0 &lt; delta &lt; 1.</summary>
    public void Validate()
    {
        if (!(Epsilon > 0) || double.IsInfinity(Epsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "budget epsilon must be a finite number > 0");
        }
        if (!(Delta > 0 && Delta < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Delta), Delta, "budget delta must be in (0, 1)");
        }
    }
}

/// <summary>One round's charge as stored: RDP per order of the ledger's order list.</summary>
public sealed record PrivacyCharge(string RunId, long Round, double[] Rdp);

/// <summary>A run's reservation as stored: what it planned and what of that it has not spent yet, per order.</summary>
public sealed record PrivacyReservation(string RunId, double[] Planned, double[] Remaining);

/// <summary>A ledger's full state as plain values, for persistence by the coordinator or the edge client.</summary>
public sealed record PrivacyLedgerState(
    string Population, double BudgetEpsilon, double BudgetDelta, double[] Orders, PrivacyCharge[] Charges, PrivacyReservation[]? Reservations = null);

/// <summary>Spent, reserved and remaining epsilon at the budget's delta; Spent + Reserved + Remaining = Budget while within it.</summary>
public sealed record PrivacyBalance(double Budget, double Delta, double Spent, double Reserved, double Remaining);

/// <summary>What happened to a charge.</summary>
public enum ChargeOutcome
{
    /// <summary>The charge was recorded.</summary>
    Charged,

    /// <summary>This (run, round) was charged before; nothing changed.</summary>
    AlreadyCharged,

    /// <summary>The charge would exceed the budget; nothing changed.</summary>
    Refused,
}

/// <summary>Result of a charge: the outcome and the epsilon spent after it.</summary>
public sealed record ChargeResult(ChargeOutcome Outcome, PrivacySpent Spent);

/// <summary>What happened to a reservation.</summary>
public enum ReservationOutcome
{
    /// <summary>The run's planned RDP is now reserved.</summary>
    Reserved,

    /// <summary>The run already held this reservation; nothing changed.</summary>
    AlreadyReserved,

    /// <summary>The plan does not fit next to what is spent and reserved; nothing changed.</summary>
    Refused,
}

/// <summary>Result of a reservation: the outcome and the balance after it (before it, when refused).</summary>
public sealed record ReservationResult(ReservationOutcome Outcome, PrivacyBalance Balance);

/// <summary>Result of a budget change: whether it was applied, the balance under the new budget, and a refusal naming the numbers.</summary>
public sealed record BudgetChangeResult(bool Changed, PrivacyBalance Balance, string? Refusal);
