namespace Federated.Aggregation.SecureAggregation;

/// <summary>
/// The k-regular communication graph of SecAgg+ (Bell et al. 2020): a Harary graph H(k, n) (each client joined to
/// the k/2 clients on either side of it on a ring) over a uniformly random ordering of the clients drawn from the
/// public graph seed, or the complete graph when k = n - 1. Every party computes the same graph.
/// </summary>
internal sealed class NeighbourGraph
{
    private readonly Dictionary<int, int[]> _neighbours;

    public NeighbourGraph(SecAggParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        int n = parameters.ClientCount;
        int[] order = parameters.ClientIds.ToArray();
        _neighbours = new Dictionary<int, int[]>(n);
        if (parameters.IsCompleteGraph)
        {
            foreach (int id in order)
            {
                _neighbours[id] = order.Where(o => o != id).ToArray();
            }
            return;
        }
        Shuffle(order, parameters.GraphSeed);
        int half = parameters.Degree / 2;
        for (int position = 0; position < n; position++)
        {
            var list = new int[parameters.Degree];
            for (int j = 1; j <= half; j++)
            {
                list[2 * (j - 1)] = order[(position + j) % n];
                list[2 * (j - 1) + 1] = order[(position - j + n) % n];
            }
            Array.Sort(list);
            _neighbours[order[position]] = list;
        }
    }

    /// <summary>The client's neighbours, ascending, excluding itself.</summary>
    public IReadOnlyList<int> NeighboursOf(int clientId) =>
        _neighbours.TryGetValue(clientId, out int[]? list) ? list : throw new ArgumentOutOfRangeException(nameof(clientId), clientId, "not a client of this round.");

    public bool AreNeighbours(int a, int b) => _neighbours.TryGetValue(a, out int[]? list) && Array.BinarySearch(list, b) >= 0;

    // Fisher-Yates with indices drawn by rejection from the AES-CTR stream of the public seed (no modulo bias).
    private static void Shuffle(int[] items, ReadOnlyMemory<byte> seed)
    {
        using var prg = new MaskPrg(seed.Span);
        uint[] buffer = new uint[256];
        int used = buffer.Length;
        long offset = 0;
        for (int i = items.Length - 1; i > 0; i--)
        {
            uint bound = (uint)(i + 1);
            uint limit = uint.MaxValue - (uint.MaxValue % bound);
            uint draw;
            do
            {
                if (used == buffer.Length)
                {
                    prg.Apply(offset, buffer, KeystreamOperation.Store);
                    offset += buffer.Length;
                    used = 0;
                }
                draw = buffer[used++];
            }
            while (draw >= limit);
            int j = (int)(draw % bound);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
