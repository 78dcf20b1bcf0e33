using System.Buffers.Binary;
using System.Text;
using Federated.Training.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class SafeTensorsTests
{
    [Theory]
    [InlineData(SafeTensorDType.F32)]
    [InlineData(SafeTensorDType.F16)]
    [InlineData(SafeTensorDType.BF16)]
    public void WriteRead_FloatTypes_Lossless(SafeTensorDType dtype)
    {
        using var dir = new TempDirectory();
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(1);
        // Values already representable in the stored type, so the round trip must be bit-exact.
        ScalarType stored = dtype switch
        {
            SafeTensorDType.F16 => ScalarType.Float16,
            SafeTensorDType.BF16 => ScalarType.BFloat16,
            _ => ScalarType.Float32,
        };
        Tensor a = torch.randn(3, 5).to_type(stored).to_type(ScalarType.Float32);
        Tensor b = torch.randn(7).to_type(stored).to_type(ScalarType.Float32);
        string path = dir.Sub("x.safetensors");

        SafeTensorsWriter.Write(path, [("a", a, dtype), ("b.weight", b, dtype)], new Dictionary<string, string> { ["format"] = "pt" });

        using var reader = new SafeTensorsReader(path);
        Assert.Equal(dtype, reader.Info("a").DType);
        Assert.Equal([3L, 5L], reader.Info("a").Shape);
        Assert.Equal("pt", reader.Metadata["format"]);
        Assert.Equal(a.data<float>().ToArray(), reader.ReadFloat32("a").data<float>().ToArray());
        Assert.Equal(b.data<float>().ToArray(), reader.ReadFloat32("b.weight").data<float>().ToArray());
        Assert.Equal(stored, reader.Read("a").dtype);
    }

    [Fact]
    public void Write_Header_IsEightByteAlignedJson()
    {
        using var dir = new TempDirectory();
        using var scope = torch.NewDisposeScope();
        string path = dir.Sub("x.safetensors");

        SafeTensorsWriter.Write(path, [("odd_name_x", torch.ones(3), SafeTensorDType.F32)]);

        byte[] bytes = File.ReadAllBytes(path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0UL, headerLength % 8);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        Assert.StartsWith("{", header);
        Assert.Contains("\"dtype\":\"F32\"", header);
        Assert.Contains("\"data_offsets\":[0,12]", header);
        Assert.Equal(8 + (long)headerLength + 12, bytes.Length);
        Assert.Equal(1f, BitConverter.ToSingle(bytes, 8 + (int)headerLength));
    }

    [Fact]
    public void WriteRead_Int64_Lossless()
    {
        using var dir = new TempDirectory();
        using var scope = torch.NewDisposeScope();
        string path = dir.Sub("i.safetensors");
        Tensor ids = torch.tensor(new long[] { long.MinValue, -1, 0, 1L << 40, long.MaxValue });

        SafeTensorsWriter.Write(path, [("ids", ids, SafeTensorDType.I64)]);

        using var reader = new SafeTensorsReader(path);
        Assert.Equal(ids.data<long>().ToArray(), reader.Read("ids").data<long>().ToArray());
    }

    [Fact]
    public void Open_OffsetsBeyondFile_IsError()
    {
        using var dir = new TempDirectory();
        string path = dir.Sub("bad.safetensors");
        byte[] header = Encoding.UTF8.GetBytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}");
        var bytes = new byte[8 + header.Length + 8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);

        var e = Assert.Throws<InvalidDataException>(() => new SafeTensorsReader(path));
        Assert.Contains("'w'", e.Message);
    }

    [Fact]
    public void Open_HugeHeaderLength_IsError()
    {
        using var dir = new TempDirectory();
        string path = dir.Sub("bad.safetensors");
        var bytes = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, ulong.MaxValue);
        File.WriteAllBytes(path, bytes);

        Assert.Throws<InvalidDataException>(() => new SafeTensorsReader(path));
    }

    [Fact]
    public void Checkpoint_ShardedIndex_FindsEveryTensor()
    {
        using var dir = new TempDirectory();
        using var scope = torch.NewDisposeScope();
        SafeTensorsWriter.Write(dir.Sub("model-00001-of-00002.safetensors"), [("a", torch.ones(2), SafeTensorDType.F32)]);
        SafeTensorsWriter.Write(dir.Sub("model-00002-of-00002.safetensors"), [("b", torch.full(3, 2f), SafeTensorDType.BF16)]);
        File.WriteAllText(dir.Sub("model.safetensors.index.json"), """
            {"metadata": {"total_size": 10}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
            """);

        using var checkpoint = SafeTensorsCheckpoint.Open(dir.Path);

        Assert.Equal(["a", "b"], checkpoint.Names.Order());
        Assert.Equal([2f, 2f, 2f], checkpoint.ReadFloat32("b").data<float>().ToArray());
    }

    [Fact]
    public void Checkpoint_ShardNameWithPath_IsRejected()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.Sub("model.safetensors.index.json"), """{"weight_map": {"a": "../evil.safetensors"}}""");

        Assert.Throws<InvalidDataException>(() => SafeTensorsCheckpoint.Open(dir.Path));
    }

    [Fact]
    public void ToBFloat16_RoundsToNearestEven()
    {
        // 1 + 2^-8 lies exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even mantissa (1).
        Assert.Equal((ushort)0x3F80, SafeTensorsWriter.ToBFloat16(1f + 1f / 256));
        Assert.Equal((ushort)0x3F81, SafeTensorsWriter.ToBFloat16(1f + 3f / 512));
        using var t = torch.tensor(new[] { 1f + 3f / 512 }).to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
        Assert.Equal(0x3F81u, BitConverter.SingleToUInt32Bits(t.item<float>()) >> 16);
    }
}
