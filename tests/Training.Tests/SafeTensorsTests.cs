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
    public void Write_BFloat16_RoundsToNearestEven()
    {
        using var scope = torch.NewDisposeScope();
        // 1 + 2^-8 lies exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even mantissa (1).
        byte[] bytes = SafeTensorsWriter.ToBytes([("x", torch.tensor(new[] { 1f + 1f / 256, 1f + 3f / 512 }), SafeTensorDType.BF16)]);

        int data = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal((ushort)0x3F80, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(data)));
        Assert.Equal((ushort)0x3F81, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(data + 2)));
    }

    [Fact]
    public void ToBytes_StreamAndBufferReaders_MatchTheFileReader()
    {
        using var dir = new TempDirectory();
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(3);
        Tensor a = torch.randn(4, 6);
        Tensor b = torch.arange(5L);
        (string, Tensor, SafeTensorDType)[] tensors = [("a", a, SafeTensorDType.F32), ("b", b, SafeTensorDType.I64)];
        string path = dir.Sub("x.safetensors");
        SafeTensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["k"] = "v" });

        byte[] bytes = SafeTensorsWriter.ToBytes(tensors, new Dictionary<string, string> { ["k"] = "v" });
        using var fromBytes = new SafeTensorsReader(bytes);
        using var fromStream = new SafeTensorsReader(new MemoryStream(bytes));

        Assert.Equal(File.ReadAllBytes(path), bytes);
        foreach (var reader in new[] { fromBytes, fromStream })
        {
            Assert.Equal("v", reader.Metadata["k"]);
            Assert.Equal(a.data<float>().ToArray(), reader.ReadFloat32("a").data<float>().ToArray());
            Assert.Equal(b.data<long>().ToArray(), reader.Read("b").data<long>().ToArray());
        }
    }

    [Theory]
    [InlineData(SafeTensorDType.F32, ScalarType.BFloat16)]
    [InlineData(SafeTensorDType.BF16, ScalarType.BFloat16)]
    [InlineData(SafeTensorDType.BF16, ScalarType.Float32)]
    [InlineData(SafeTensorDType.F16, ScalarType.Float16)]
    public void ReadInto_TargetType_EqualsTorchConversion(SafeTensorDType stored, ScalarType target)
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(4);
        Tensor values = torch.randn(33, 17);
        byte[] bytes = SafeTensorsWriter.ToBytes([("w", values, stored)]);
        using var reader = new SafeTensorsReader(bytes);
        Tensor destination = torch.empty(33, 17, target);

        reader.ReadInto("w", destination);

        Tensor expected = values.to_type(SafeTensorDTypes.ToScalarType(stored)).to_type(target);
        Assert.True(destination.eq(expected).all().item<bool>());
    }

    [Fact]
    public void ReadInto_WrongElementCount_NamesTheTensor()
    {
        using var scope = torch.NewDisposeScope();
        using var reader = new SafeTensorsReader(SafeTensorsWriter.ToBytes([("w", torch.ones(6), SafeTensorDType.F32)]));

        var e = Assert.Throws<ArgumentException>(() => reader.ReadInto("w", torch.empty(5)));
        Assert.Contains("'w'", e.Message);
    }

    [Fact]
    public void Write_SpecWritingTooFewBytes_IsRefused()
    {
        var spec = new SafeTensorSpec("w", SafeTensorDType.F32, [4], s => s.Write(new byte[12]));

        var e = Assert.Throws<InvalidOperationException>(() => SafeTensorsWriter.Write(new MemoryStream(), [spec]));
        Assert.Contains("'w'", e.Message);
    }
}
