using Federated.Protos.V1;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Federated.Protos.Tests;

public sealed class ProtoDescriptorTests
{
    private static readonly string[] s_files = ["admin", "common", "edge", "identity"];

    public static TheoryData<string> Files() => new(s_files);

    [Theory]
    [MemberData(nameof(Files))]
    public void SourceDescriptor_EveryElement_HasLeadingComment(string file)
    {
        FileDescriptorProto proto = LoadSourceDescriptor(file);
        var comments = proto.SourceCodeInfo.Location
            .Where(l => !string.IsNullOrWhiteSpace(l.LeadingComments))
            .Select(l => string.Join('.', l.Path))
            .ToHashSet();

        var missing = new List<string>();
        // Paths follow descriptor.proto's field numbers: 4 message_type, 5 enum_type, 6 service, 2 field/value/method.
        for (int m = 0; m < proto.MessageType.Count; m++)
        {
            Require($"4.{m}", proto.MessageType[m].Name);
            for (int f = 0; f < proto.MessageType[m].Field.Count; f++)
            {
                Require($"4.{m}.2.{f}", $"{proto.MessageType[m].Name}.{proto.MessageType[m].Field[f].Name}");
            }
        }
        for (int e = 0; e < proto.EnumType.Count; e++)
        {
            Require($"5.{e}", proto.EnumType[e].Name);
            for (int v = 0; v < proto.EnumType[e].Value.Count; v++)
            {
                Require($"5.{e}.2.{v}", proto.EnumType[e].Value[v].Name);
            }
        }
        for (int s = 0; s < proto.Service.Count; s++)
        {
            Require($"6.{s}", proto.Service[s].Name);
            for (int r = 0; r < proto.Service[s].Method.Count; r++)
            {
                Require($"6.{s}.2.{r}", $"{proto.Service[s].Name}.{proto.Service[s].Method[r].Name}");
            }
        }
        Assert.True(missing.Count == 0, $"undocumented in {file}.proto: {string.Join(", ", missing)}");

        void Require(string path, string name)
        {
            if (!comments.Contains(path))
            {
                missing.Add(name);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void SourceDescriptor_Package_IsFederatedV1WithCSharpNamespace(string file)
    {
        FileDescriptorProto proto = LoadSourceDescriptor(file);
        Assert.Equal("federated.v1", proto.Package);
        Assert.Equal("Federated.Protos.V1", proto.Options.CsharpNamespace);
        Assert.Equal("proto3", proto.Syntax);
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void SourceDescriptor_EveryEnum_StartsWithUnspecifiedZero(string file)
    {
        FileDescriptorProto proto = LoadSourceDescriptor(file);
        foreach (EnumDescriptorProto e in proto.EnumType)
        {
            Assert.Equal(0, e.Value[0].Number);
            Assert.EndsWith("_UNSPECIFIED", e.Value[0].Name, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Services_CompiledDescriptors_HaveTheDocumentedMethods()
    {
        ServiceDescriptor edge = EdgeReflection.Descriptor.FindTypeByName<ServiceDescriptor>("EdgeService");
        Assert.Equal(
            ["Register", "Heartbeat", "GetRoundManifest", "DeclineRound", "DownloadAdapter", "AdvertiseKeys", "ShareKeys", "UploadMaskedInput", "ConfirmSurvivors", "Unmask"],
            edge.Methods.Select(m => m.Name));
        Assert.True(edge.FindMethodByName("UploadMaskedInput").IsClientStreaming);
        Assert.True(edge.FindMethodByName("DownloadAdapter").IsServerStreaming);

        ServiceDescriptor admin = AdminReflection.Descriptor.FindTypeByName<ServiceDescriptor>("AdminService");
        Assert.Equal(
            ["StartRun", "GetRunStatus", "WatchRun", "AbortRun", "ExportRun", "ListClients", "SetBudget", "GetBudget", "GetLedger", "GetAudit"],
            admin.Methods.Select(m => m.Name));
        Assert.True(admin.FindMethodByName("WatchRun").IsServerStreaming);
        Assert.Equal("federated.v1.AdminService", admin.FullName);
    }

    [Fact]
    public void MaskedInputChunk_RoundTrip_PreservesEveryField()
    {
        byte[] payload = new byte[4096];
        for (int i = 0; i < payload.Length; i++)
        {
            payload[i] = (byte)(i * 31 + 7);
        }
        var chunk = new MaskedInputChunk
        {
            Round = new RoundRef { RunId = "0123abcd", Round = 3 },
            Offset = 1UL << 33,
            Data = ByteString.CopyFrom(payload),
            TotalBytes = 4UL * 1_048_576,
        };

        MaskedInputChunk parsed = MaskedInputChunk.Parser.ParseFrom(chunk.ToByteArray());

        Assert.Equal(chunk, parsed);
        Assert.Equal(payload, parsed.Data.ToByteArray());
        Assert.Equal(1UL << 33, parsed.Offset);
    }

    [Fact]
    public void RoundManifest_UnknownFutureField_IsPreservedAcrossReserialization()
    {
        // A client built against this version must pass a newer manifest's bytes through unchanged, which
        // is why signatures are checked over the exact bytes and not over a re-serialization.
        var manifest = new RoundManifest { Round = new RoundRef { RunId = "r", Round = 1 }, LocalSteps = 5 };
        byte[] bytes = manifest.ToByteArray();
        byte[] extended = [.. bytes, 0xF0, 0x01, 0x2A]; // field 30 (unassigned), varint 42
        RoundManifest parsed = RoundManifest.Parser.ParseFrom(extended);
        Assert.Equal(5u, parsed.LocalSteps);
        Assert.Equal(extended, parsed.ToByteArray());
    }

    private static FileDescriptorProto LoadSourceDescriptor(string file)
    {
        string path = Path.Combine(AppContext.BaseDirectory, "descriptors", file + ".descriptor.pb");
        FileDescriptorSet set = FileDescriptorSet.Parser.ParseFrom(File.ReadAllBytes(path));
        return Assert.Single(set.File, f => f.Name == $"federated/v1/{file}.proto");
    }
}
