using System.Buffers.Binary;
using System.Text.Json;
using Federated.Aggregation.Privacy;

namespace Federated.Simulation;

/// <summary>One simulated data holder's private JSONL lines: what it trains on and its held-out evaluation split.</summary>
internal sealed record ClientData(string Name, IReadOnlyList<string> TrainLines, IReadOnlyList<string> EvalLines, string Source);

/// <summary>
/// Private data for the simulation's clients: synthetic non-IID text (each client writes about its own topic, drawn
/// from a seeded AES-CTR stream so a seed reproduces it), or the caller's JSONL files, <c>DIR/&lt;client&gt;.jsonl</c>
/// with an optional held-out <c>DIR/&lt;client&gt;.eval.jsonl</c>.
/// </summary>
internal static class SimulationData
{
    /// <summary>Share of a client's examples held out for evaluation when no .eval.jsonl file is given.</summary>
    public const double HeldOutShare = 0.2;

    public const int SyntheticTrainExamples = 48;
    public const int SyntheticEvalExamples = 16;

    // Each client writes about one topic: the clients' distributions differ (non-IID), yet they share English spelling.
    private static readonly (string Name, string[] Templates, string[][] Slots)[] s_topics =
    [
        ("pets", ["the {0} cat {1} on the {2}", "a {0} dog {1} in the {2}", "my {0} kitten {1} near the {2}"],
            [["small", "old", "lazy", "happy", "grey"], ["sleeps", "sits", "plays", "waits", "naps"], ["mat", "sofa", "porch", "rug", "garden"]]),
        ("weather", ["today the sky is {0} and the wind is {1} from the {2}", "tomorrow will be {0} with {1} rain in the {2}"],
            [["clear", "cloudy", "dark", "bright", "grey"], ["light", "strong", "cold", "warm", "steady"], ["north", "south", "east", "west", "hills"]]),
        ("cooking", ["stir the {0} with {1} for {2} minutes", "bake the {0} with {1} for {2} minutes"],
            [["soup", "bread", "rice", "beans", "sauce"], ["butter", "salt", "garlic", "onion", "pepper"], ["five", "ten", "twenty", "thirty", "forty"]]),
        ("banking", ["the account paid {0} dollars to the {1} on {2}", "a transfer of {0} dollars reached the {1} on {2}"],
            [["twenty", "fifty", "ninety", "three hundred", "eight hundred"], ["landlord", "utility", "school", "clinic", "grocer"], ["monday", "tuesday", "friday", "sunday", "payday"]]),
        ("football", ["the {0} team scored {1} goals in the {2} half", "our {0} striker missed {1} shots in the {2} half"],
            [["home", "away", "young", "local", "visiting"], ["two", "three", "four", "no", "many"], ["first", "second", "last", "early", "late"]]),
        ("music", ["she played a {0} song on the {1} in {2}", "he hummed a {0} tune on the {1} in {2}"],
            [["slow", "sad", "bright", "loud", "gentle"], ["piano", "guitar", "violin", "flute", "drum"], ["spring", "winter", "autumn", "summer", "the hall"]]),
        ("travel", ["the {0} train to {1} leaves at {2}", "our {0} flight to {1} boards at {2}"],
            [["early", "late", "night", "fast", "slow"], ["paris", "rome", "oslo", "lima", "cairo"], ["noon", "dawn", "six", "nine", "midnight"]]),
        ("clinic", ["the patient reported {0} pain in the {1} since {2}", "the nurse noted {0} swelling of the {1} since {2}"],
            [["mild", "sharp", "dull", "severe", "steady"], ["knee", "back", "wrist", "ankle", "neck"], ["monday", "march", "last week", "the fall", "friday"]]),
    ];

    /// <summary>Client names client-1 .. client-N (also the identities' names and the --data file stems).</summary>
    public static IReadOnlyList<string> ClientNames(int clients) => [.. Enumerable.Range(1, clients).Select(i => $"client-{i}")];

    /// <summary>Synthetic text for each client: topic i mod 8, sentences drawn from the topic's templates.</summary>
    public static IReadOnlyList<ClientData> Synthetic(IReadOnlyList<string> clients, long seed)
    {
        ArgumentNullException.ThrowIfNull(clients);
        Span<byte> seedBytes = stackalloc byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(seedBytes, seed);
        // Determinism is the point here (a seed reproduces the data), hence a seeded AES-CTR stream.
        using var random = new AesCtrRandomSource("federated-simulate-data", seedBytes);
        var result = new List<ClientData>(clients.Count);
        for (int c = 0; c < clients.Count; c++)
        {
            (string topic, string[] templates, string[][] slots) = s_topics[c % s_topics.Length];
            // Distinct sentences, every fourth held out: a client is evaluated on sentences it never trained on.
            var distinct = new List<string>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int tries = 0; distinct.Count < SyntheticTrainExamples + SyntheticEvalExamples && tries < 10_000; tries++)
            {
                string template = templates[Below(random, templates.Length)];
                string sentence = string.Format(System.Globalization.CultureInfo.InvariantCulture, template,
                    slots[0][Below(random, slots[0].Length)], slots[1][Below(random, slots[1].Length)], slots[2][Below(random, slots[2].Length)]);
                if (seen.Add(sentence))
                {
                    distinct.Add(sentence);
                }
            }
            string[] eval = [.. distinct.Where((_, i) => i % 4 == 3).Select(Json)];
            string[] train = [.. distinct.Where((_, i) => i % 4 != 3).Select(Json)];
            result.Add(new ClientData(clients[c], train, eval, $"synthetic topic '{topic}'"));
        }
        return result;
    }

    /// <summary>Reads DIR/&lt;client&gt;.jsonl for each client; the held-out split is DIR/&lt;client&gt;.eval.jsonl or the last 20%.</summary>
    public static IReadOnlyList<ClientData> FromDirectory(string directory, IReadOnlyList<string> clients)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(clients);
        if (!Directory.Exists(directory))
        {
            throw new UsageException($"--data '{directory}' is not a folder");
        }
        var result = new List<ClientData>(clients.Count);
        foreach (string client in clients)
        {
            string path = Path.Combine(directory, client + ".jsonl");
            if (!File.Exists(path))
            {
                throw new UsageException($"--data '{directory}' has no {client}.jsonl (expected one file per client: {string.Join(", ", clients.Select(c => c + ".jsonl"))})");
            }
            string[] lines = [.. File.ReadLines(path).Where(l => !string.IsNullOrWhiteSpace(l))];
            string evalPath = Path.Combine(directory, client + ".eval.jsonl");
            string[] train, eval;
            if (File.Exists(evalPath))
            {
                train = lines;
                eval = [.. File.ReadLines(evalPath).Where(l => !string.IsNullOrWhiteSpace(l))];
            }
            else
            {
                int held = Math.Max(1, (int)Math.Round(lines.Length * HeldOutShare));
                if (lines.Length < held + 1)
                {
                    throw new UsageException($"{path} has {lines.Length} examples: at least 2 are needed (one to train on, one held out)");
                }
                train = lines[..^held];
                eval = lines[^held..];
            }
            if (train.Length == 0 || eval.Length == 0)
            {
                throw new UsageException($"{path}: a client needs at least one training and one held-out example");
            }
            result.Add(new ClientData(client, train, eval, path));
        }
        return result;
    }

    /// <summary>The client's data with each canary text inserted <paramref name="repeats"/> times at random places.</summary>
    public static ClientData WithCanaries(ClientData client, IReadOnlyList<string> canaryTexts, int repeats)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(canaryTexts);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        var lines = new List<string>(client.TrainLines);
        foreach (string text in canaryTexts)
        {
            for (int i = 0; i < repeats; i++)
            {
                lines.Insert(System.Security.Cryptography.RandomNumberGenerator.GetInt32(lines.Count + 1), Json(text));
            }
        }
        return client with { TrainLines = lines };
    }

    public static string Json(string text) => JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = text });

    /// <summary>Uniform in [0, bound) by rejection (no modulo bias).</summary>
    private static int Below(IRandomSource random, int bound)
    {
        uint limit = uint.MaxValue - uint.MaxValue % (uint)bound;
        Span<byte> bytes = stackalloc byte[4];
        while (true)
        {
            random.Fill(bytes);
            uint value = BinaryPrimitives.ReadUInt32LittleEndian(bytes);
            if (value < limit)
            {
                return (int)(value % (uint)bound);
            }
        }
    }
}
