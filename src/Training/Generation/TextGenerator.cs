using Federated.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Generation;

/// <summary>
/// Autoregressive generation with a key/value cache: the prompt runs through the model once, then each new token
/// once. Greedy at temperature 0; otherwise each token is drawn from softmax(logits / temperature) by inverting its
/// cumulative distribution at a uniform number from a generator seeded with <see cref="GenerationOptions.Seed"/>.
/// </summary>
public static class TextGenerator
{
    /// <summary>Continues <paramref name="promptIds"/> until a stop id, the token limit or the model's context length.</summary>
    public static GenerationResult Generate(LlamaForCausalLM model, IReadOnlyList<int> promptIds, GenerationOptions options) =>
        Generate(model, promptIds, options, useCache: true);

    /// <param name="useCache">False recomputes the whole sequence for every token: the reference the cached path must equal.</param>
    internal static GenerationResult Generate(LlamaForCausalLM model, IReadOnlyList<int> promptIds, GenerationOptions options, bool useCache)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(promptIds);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        int vocab = model.Config.VocabSize;
        int context = model.Config.MaxPositionEmbeddings;
        if (promptIds.Count == 0)
        {
            throw new ArgumentException("the prompt has no tokens", nameof(promptIds));
        }
        if (promptIds.Count >= context)
        {
            throw new ArgumentException($"the prompt has {promptIds.Count} tokens; the model's context (max_position_embeddings) is {context}", nameof(promptIds));
        }
        foreach (int id in promptIds)
        {
            if (id < 0 || id >= vocab)
            {
                throw new ArgumentException($"prompt token id {id} is outside the vocabulary [0, {vocab - 1}]", nameof(promptIds));
            }
        }

        bool wasTraining = model.training;
        // Inference mode: no LoRA dropout, so the same seed gives the same tokens.
        model.eval();
        var sequence = new List<int>(promptIds);
        var generated = new List<int>();
        using var sampler = new Generator((ulong)options.Seed);
        using var cache = useCache ? model.NewCache(Math.Min(context, promptIds.Count + options.MaxNewTokens)) : null;
        try
        {
            using var noGrad = torch.no_grad();
            IReadOnlyList<int> pending = promptIds;
            while (true)
            {
                int next;
                using (var scope = torch.NewDisposeScope())
                {
                    Tensor logits = cache is not null
                        ? model.ForwardCached(IdsTensor(pending), cache)
                        : model.forward(IdsTensor(sequence));
                    next = Choose(logits[0, -1], options.Temperature, sampler);
                }
                generated.Add(next);
                sequence.Add(next);
                if (options.StopIds.Contains(next))
                {
                    return new GenerationResult([.. promptIds], generated, GenerationStop.EndOfSequence);
                }
                if (generated.Count == options.MaxNewTokens)
                {
                    return new GenerationResult([.. promptIds], generated, GenerationStop.MaxNewTokens);
                }
                if (sequence.Count >= context)
                {
                    return new GenerationResult([.. promptIds], generated, GenerationStop.ContextLength);
                }
                pending = [next];
            }
        }
        finally
        {
            model.train(wasTraining);
        }
    }

    /// <summary>The next token from last-position logits [vocab]: argmax at temperature 0, else a seeded draw.</summary>
    internal static int Choose(Tensor logits, double temperature, Generator sampler)
    {
        if (temperature == 0)
        {
            return (int)logits.argmax().item<long>();
        }
        using var scope = torch.NewDisposeScope();
        // Probabilities in float64 on the CPU, so the draw does not depend on the device's float32 reductions.
        double[] probabilities = logits.to_type(ScalarType.Float64).cpu().div(temperature).softmax(-1).data<double>().ToArray();
        double u = torch.rand([1], ScalarType.Float64, generator: sampler).item<double>();
        double cumulative = 0;
        for (int i = 0; i < probabilities.Length; i++)
        {
            cumulative += probabilities[i];
            if (u < cumulative)
            {
                return i;
            }
        }
        // Rounding left the total a hair under u: the last token with any probability.
        return Array.FindLastIndex(probabilities, p => p > 0);
    }

    private static Tensor IdsTensor(IReadOnlyList<int> ids) =>
        torch.tensor(ids.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0);
}
