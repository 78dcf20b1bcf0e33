using System.Security.Cryptography;
using System.Text;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Federated.Training.Trainer;
using TorchSharp;

namespace Federated.Training.Memorisation;

/// <summary>
/// The canary format of a memorisation audit: a fixed prefix followed by <see cref="Digits"/> random decimal digits
/// separated by spaces ("my secret code is 4 7 1 9 3 8"), so the randomness space R holds 10^Digits secrets.
/// </summary>
public sealed record CanaryFormat(string Prefix, int Digits)
{
    /// <summary>The format of the simulation's canaries: six digits, |R| = 10^6.</summary>
    public static CanaryFormat Default { get; } = new("my secret code is ", 6);

    /// <summary>log2 |R|, the largest exposure a canary can have.</summary>
    public double SpaceBits => Digits * Math.Log2(10);

    /// <summary>A secret drawn uniformly from R with <see cref="RandomNumberGenerator"/> ("4 7 1 9 3 8").</summary>
    public string RandomSecret()
    {
        if (Digits is < 1 or > 18)
        {
            throw new ArgumentOutOfRangeException(nameof(Digits), Digits, "a canary has 1..18 digits");
        }
        var builder = new StringBuilder(2 * Digits);
        for (int i = 0; i < Digits; i++)
        {
            if (i > 0)
            {
                builder.Append(' ');
            }
            builder.Append((char)('0' + RandomNumberGenerator.GetInt32(10)));
        }
        return builder.ToString();
    }

    /// <summary>The full canary text for a secret.</summary>
    public string Text(string secret) => Prefix + secret;
}

/// <summary>One canary's measured exposure.</summary>
/// <param name="Secret">The planted digits.</param>
/// <param name="LogPerplexity">Its log-perplexity in bits given the prefix: -log2 Pr(secret | prefix).</param>
/// <param name="Candidates">How many random secrets of R it was ranked against.</param>
/// <param name="CandidatesAtOrBelow">How many of them had a log-perplexity at most the canary's.</param>
/// <param name="Exposure">The sampled estimate -log2((k + 1) / (S + 1)), at most <paramref name="MaxMeasurable"/>.</param>
/// <param name="MaxMeasurable">log2(S + 1): the estimate cannot exceed it; exposures up to log2 |R| exist.</param>
public sealed record CanaryExposureResult(string Secret, double LogPerplexity, int Candidates, int CandidatesAtOrBelow, double Exposure, double MaxMeasurable);

/// <summary>
/// Exposure of planted canaries (Carlini et al. 2019, "The Secret Sharer", USENIX Security, Sec. 4): exposure =
/// log2 |R| - log2 rank, where rank is the canary's position when all of R is ordered by log-perplexity.
/// </summary>
/// <remarks>
/// Ranking all 10^6 secrets is too slow for a demo, so this uses the paper's sampling estimate (Sec. 4.2): with
/// S secrets drawn uniformly from R, rank / |R| is estimated by the share of them at or below the canary's
/// log-perplexity. We count the canary itself, (k + 1) / (S + 1), so a canary that beats every sample gets the
/// conservative log2(S + 1) rather than infinity; exposure about 1 means "no more likely than a random secret".
/// </remarks>
public static class CanaryExposure
{
    /// <summary>Exact exposure from a full ranking: log2 |R| - log2 rank (Carlini et al. 2019, Definition 4.1).</summary>
    public static double Exposure(double spaceSize, double rank)
    {
        if (!(spaceSize >= 1) || !double.IsFinite(spaceSize))
        {
            throw new ArgumentOutOfRangeException(nameof(spaceSize), spaceSize, "the randomness space must hold at least 1 secret");
        }
        if (!(rank >= 1) || rank > spaceSize)
        {
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in 1..{spaceSize}");
        }
        return Math.Log2(spaceSize) - Math.Log2(rank);
    }

    /// <summary>Sampled estimate (Carlini et al. 2019, Sec. 4.2): -log2((k + 1) / (S + 1)), k = samples at or below the canary.</summary>
    public static double SampledExposure(double canaryLogPerplexity, IReadOnlyCollection<double> candidateLogPerplexities, out int atOrBelow)
    {
        ArgumentNullException.ThrowIfNull(candidateLogPerplexities);
        if (double.IsNaN(canaryLogPerplexity))
        {
            throw new ArgumentOutOfRangeException(nameof(canaryLogPerplexity), "the canary's log-perplexity is NaN");
        }
        atOrBelow = candidateLogPerplexities.Count(p => p <= canaryLogPerplexity);
        return -Math.Log2((atOrBelow + 1.0) / (candidateLogPerplexities.Count + 1.0));
    }

    /// <summary>
    /// Log-perplexity in bits of each secret after <paramref name="format"/>'s prefix under the model as it stands
    /// (its adapter, if any): the sum over the secret's tokens of -log2 Pr(token | everything before it).
    /// </summary>
    public static double[] LogPerplexities(LlamaForCausalLM model, ITextTokenizer tokenizer, CanaryFormat format, IReadOnlyList<string> secrets,
        int batchSize = 128, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(format);
        ArgumentNullException.ThrowIfNull(secrets);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        // Prompt/completion puts the loss on the secret (and the EOS after it, the same token for every candidate).
        var lines = secrets.Select(s => System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string> { ["prompt"] = format.Prefix, ["completion"] = s }));
        JsonlDataset dataset = JsonlDataset.Parse(lines, "canaries", tokenizer, new DatasetOptions { MaxLength = 512 }, cancellationToken);
        if (dataset.Examples.Count != secrets.Count)
        {
            throw new InvalidDataException($"{secrets.Count - dataset.Examples.Count} canary candidates could not be tokenized");
        }
        var result = new double[secrets.Count];
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            for (int start = 0; start < result.Length; start += batchSize)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                int count = Math.Min(batchSize, result.Length - start);
                TokenBatch batch = TokenBatcher.Collate([.. dataset.Examples.Skip(start).Take(count)], tokenizer.PadId);
                var (ids, labels, mask) = LoraTrainer.ToTensors(batch, model.Device);
                torch.Tensor logits = model.Forward(ids, mask);
                torch.Tensor perToken = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), labels.reshape(-1),
                    ignore_index: TokenizedExample.IgnoreIndex, reduction: torch.nn.Reduction.None);
                // Nats summed per sequence, then to bits as in the paper's log2 perplexity.
                double[] nats = perToken.reshape(count, -1).sum(1).to_type(torch.ScalarType.Float64).cpu().data<double>().ToArray();
                for (int i = 0; i < count; i++)
                {
                    result[start + i] = nats[i] / Math.Log(2);
                }
            }
        }
        finally
        {
            model.train(wasTraining);
        }
        return result;
    }

    /// <summary>
    /// Measures each canary against <paramref name="candidates"/> secrets drawn uniformly from R (fresh ones from
    /// <see cref="RandomNumberGenerator"/> when null): the sampled exposure estimate under the model as it stands.
    /// </summary>
    public static IReadOnlyList<CanaryExposureResult> Measure(LlamaForCausalLM model, ITextTokenizer tokenizer, CanaryFormat format,
        IReadOnlyList<string> canaries, IReadOnlyList<string> candidates, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(canaries);
        ArgumentNullException.ThrowIfNull(candidates);
        if (candidates.Count == 0)
        {
            throw new ArgumentException("at least one candidate secret is needed to estimate a rank", nameof(candidates));
        }
        double[] canaryScores = LogPerplexities(model, tokenizer, format, canaries, cancellationToken: cancellationToken);
        double[] candidateScores = LogPerplexities(model, tokenizer, format, candidates, cancellationToken: cancellationToken);
        var results = new List<CanaryExposureResult>(canaries.Count);
        for (int i = 0; i < canaries.Count; i++)
        {
            double exposure = SampledExposure(canaryScores[i], candidateScores, out int atOrBelow);
            results.Add(new CanaryExposureResult(canaries[i], canaryScores[i], candidates.Count, atOrBelow, exposure, Math.Log2(candidates.Count + 1.0)));
        }
        return results;
    }

    /// <summary><paramref name="count"/> secrets drawn uniformly from R, leaving out the planted ones.</summary>
    public static IReadOnlyList<string> SampleCandidates(CanaryFormat format, int count, IReadOnlyCollection<string> exclude)
    {
        ArgumentNullException.ThrowIfNull(format);
        ArgumentNullException.ThrowIfNull(exclude);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var result = new List<string>(count);
        while (result.Count < count)
        {
            string secret = format.RandomSecret();
            if (!exclude.Contains(secret))
            {
                result.Add(secret);
            }
        }
        return result;
    }
}
