using System.Text;

namespace Federated.Training.Data;

/// <summary>A line of a text file, or why it could not be decoded (kept so the reader can name its line number).</summary>
internal readonly record struct RawLine(string? Text, string? Error);

/// <summary>Reads a file line by line with strict UTF-8, so an undecodable or oversized line is reported, not mangled.</summary>
/// <remarks>File.ReadLines would silently replace invalid bytes with U+FFFD and train on the damage.</remarks>
internal static class Utf8LineReader
{
    private static readonly UTF8Encoding s_strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static IEnumerable<RawLine> Read(string path, int maxLineChars)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLineChars, 1);
        // A UTF-8 character is at most 4 bytes, so more bytes than this cannot decode to an acceptable line.
        long maxLineBytes = 4L * maxLineChars;
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var assembler = new LineAssembler(maxLineBytes);
        var chunk = new byte[1 << 16];
        bool first = true;
        int read;
        while ((read = stream.Read(chunk, 0, chunk.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < read; i++)
            {
                if (chunk[i] == (byte)'\n')
                {
                    assembler.Append(chunk, start, i - start);
                    yield return assembler.Finish(first, maxLineChars);
                    first = false;
                    start = i + 1;
                }
            }
            assembler.Append(chunk, start, read - start);
        }
        if (assembler.HasContent)
        {
            yield return assembler.Finish(first, maxLineChars);
        }
    }

    private sealed class LineAssembler(long maxLineBytes)
    {
        private byte[] _buffer = new byte[4096];
        private int _length;
        private long _dropped;

        public bool HasContent => _length > 0 || _dropped > 0;

        public void Append(byte[] source, int offset, int count)
        {
            if (_dropped > 0 || _length + (long)count > maxLineBytes)
            {
                // Keep counting but stop storing: the line is already too long to be an example.
                _dropped += count;
                return;
            }
            if (_length + count > _buffer.Length)
            {
                Array.Resize(ref _buffer, (int)Math.Min(maxLineBytes, Math.Max(_buffer.Length * 2L, _length + (long)count)));
            }
            Buffer.BlockCopy(source, offset, _buffer, _length, count);
            _length += count;
        }

        public RawLine Finish(bool firstLine, int maxLineChars)
        {
            try
            {
                if (_dropped > 0)
                {
                    return new RawLine(null, $"line is over {maxLineChars} characters, more than allowed");
                }
                ReadOnlySpan<byte> bytes = _buffer.AsSpan(0, _length);
                if (firstLine && bytes.StartsWith("\uFEFF"u8))
                {
                    bytes = bytes[3..];
                }
                if (bytes.EndsWith("\r"u8))
                {
                    bytes = bytes[..^1];
                }
                try
                {
                    return new RawLine(s_strict.GetString(bytes), null);
                }
                catch (DecoderFallbackException ex)
                {
                    return new RawLine(null, $"not valid UTF-8: {ex.Message}");
                }
            }
            finally
            {
                _length = 0;
                _dropped = 0;
            }
        }
    }
}
