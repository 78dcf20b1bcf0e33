namespace Federated.Coordinator.Rounds;

/// <summary>
/// Bounds the memory a round holds in masked-input uploads that are still arriving (each is buffered until whole):
/// uploads beyond <see cref="MaxBufferedBytes"/> wait for a slot, so a round holds min(n, this / 4d) vectors besides its sum.
/// </summary>
internal sealed class UploadBuffers(int vectorLength, int participants)
{
    /// <summary>Memory the round may hold in uploads that are still arriving.</summary>
    public const long MaxBufferedBytes = 256L << 20;

    private readonly SemaphoreSlim _slots = new((int)Math.Clamp(MaxBufferedBytes / (4L * vectorLength), 1, participants));

    /// <summary>Waits for a free buffer; dispose the result to release it (once, however often it is disposed).</summary>
    public async Task<IDisposable> AcquireAsync(CancellationToken cancellationToken)
    {
        await _slots.WaitAsync(cancellationToken);
        return new Slot(_slots);
    }

    private sealed class Slot(SemaphoreSlim slots) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                slots.Release();
            }
        }
    }
}
