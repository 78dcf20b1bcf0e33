using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Reads a PNG as a viewer would, without the library that wrote it: the signature, every chunk's CRC-32, IHDR first,
/// IEND last, and the IDAT stream inflated and unfiltered to exactly height rows of width pixels. SkiaSharp's decoder
/// checks it a second way.
/// </summary>
internal static class PngFile
{
    private static readonly byte[] s_signature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>The image's (width, height); throws with what is wrong when the file is not a decodable PNG.</summary>
    public static (int Width, int Height) Check(string path)
    {
        byte[] png = File.ReadAllBytes(path);
        if (png.Length < 8 || !png.AsSpan(0, 8).SequenceEqual(s_signature))
        {
            throw new InvalidDataException($"{path}: no PNG signature");
        }
        int offset = 8;
        int width = 0, height = 0, bitDepth = 0, colorType = -1;
        var idat = new MemoryStream();
        var chunks = new List<string>();
        while (offset < png.Length)
        {
            int length = checked((int)BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(offset)));
            string type = Encoding.ASCII.GetString(png, offset + 4, 4);
            ReadOnlySpan<byte> data = png.AsSpan(offset + 8, length);
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(offset + 8 + length));
            if (Crc32(png.AsSpan(offset + 4, 4 + length)) != crc)
            {
                throw new InvalidDataException($"{path}: chunk {type} has a bad CRC");
            }
            chunks.Add(type);
            if (type == "IHDR")
            {
                if (length != 13 || chunks.Count != 1)
                {
                    throw new InvalidDataException($"{path}: IHDR must come first with 13 bytes");
                }
                width = checked((int)BinaryPrimitives.ReadUInt32BigEndian(data));
                height = checked((int)BinaryPrimitives.ReadUInt32BigEndian(data[4..]));
                bitDepth = data[8];
                colorType = data[9];
                if (data[12] != 0)
                {
                    throw new InvalidDataException($"{path}: interlaced images are not checked here");
                }
            }
            else if (type == "IDAT")
            {
                idat.Write(data);
            }
            offset += 12 + length;
            if (type == "IEND")
            {
                break;
            }
        }
        if (chunks.Count == 0 || chunks[0] != "IHDR" || chunks[^1] != "IEND" || offset != png.Length)
        {
            throw new InvalidDataException($"{path}: chunks {string.Join(",", chunks)} do not run from IHDR to IEND at the end of the file");
        }
        int channels = colorType switch
        {
            0 => 1,
            2 => 3,
            3 => 1,
            4 => 2,
            6 => 4,
            _ => throw new InvalidDataException($"{path}: colour type {colorType} is not a PNG colour type"),
        };
        int stride = checked((width * channels * bitDepth + 7) / 8);
        idat.Position = 0;
        using var inflated = new MemoryStream();
        using (var zlib = new ZLibStream(idat, CompressionMode.Decompress))
        {
            zlib.CopyTo(inflated);
        }
        byte[] pixels = inflated.ToArray();
        if (pixels.Length != height * (1 + stride))
        {
            throw new InvalidDataException($"{path}: IDAT inflates to {pixels.Length} bytes, not {height} rows of 1 + {stride}");
        }
        for (int row = 0; row < height; row++)
        {
            if (pixels[row * (1 + stride)] > 4)
            {
                throw new InvalidDataException($"{path}: row {row} has filter type {pixels[row * (1 + stride)]}");
            }
        }
        using SkiaSharp.SKBitmap? decoded = SkiaSharp.SKBitmap.Decode(png);
        if (decoded is null || decoded.Width != width || decoded.Height != height)
        {
            throw new InvalidDataException($"{path}: SkiaSharp does not decode it as {width}x{height}");
        }
        return (width, height);
    }

    /// <summary>CRC-32 (ISO 3309, as PNG uses it), bit by bit: slow and obviously right.</summary>
    public static uint Crc32(ReadOnlySpan<byte> bytes)
    {
        uint crc = 0xFFFF_FFFF;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int bit = 0; bit < 8; bit++)
            {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1;
            }
        }
        return ~crc;
    }
}
