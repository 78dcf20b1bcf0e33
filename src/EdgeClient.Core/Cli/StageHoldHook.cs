using Federated.Protos.V1;

namespace Federated.EdgeClient.Cli;

/// <summary>The dropout tests' fault injection for `edge-client run`: hold the client right before one SecAgg+ stage.</summary>
internal static class StageHoldHook
{
    /// <summary>
    /// TEST ONLY (fault injection for the dropout tests): when set to advertise_keys, share_keys, masked_input or
    /// unmask, the client logs "test hook: holding before STAGE" and stops talking right before sending that stage's
    /// message, so a test can SIGKILL it at exactly that point. Never set it on a real deployment.
    /// </summary>
    public const string Variable = "FEDERATED_EDGE_TEST_HOLD_BEFORE_STAGE";

    /// <summary>The hook named by <see cref="Variable"/> in this process's environment; null when it is not set.</summary>
    public static Func<RoundStage, CancellationToken, Task>? FromEnvironment() => Parse(Environment.GetEnvironmentVariable(Variable));

    public static Func<RoundStage, CancellationToken, Task>? Parse(string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            return null;
        }
        RoundStage hold = value.ToLowerInvariant() switch
        {
            "advertise_keys" => RoundStage.AdvertiseKeys,
            "share_keys" => RoundStage.ShareKeys,
            "masked_input" => RoundStage.MaskedInput,
            "unmask" => RoundStage.Unmask,
            _ => throw new UsageException($"{Variable} '{value}' is not one of advertise_keys, share_keys, masked_input, unmask"),
        };
        return async (stage, cancellationToken) =>
        {
            if (stage == hold)
            {
                Console.Error.WriteLine($"edge-client: test hook: holding before {stage}");
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
        };
    }
}
