using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Audit;
using Federated.Coordinator.Dashboard;
using Federated.Protos.V1;
using Google.Protobuf;

namespace Federated.Coordinator.Tests.Dashboard;

public sealed class AuditFollowerTests : IDisposable
{
    private static readonly DateTimeOffset s_time = new(2026, 1, 2, 3, 4, 5, TimeSpan.Zero);
    private readonly ECDsa _key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly X509Certificate2 _server;

    public AuditFollowerTests()
    {
        var request = new CertificateRequest("CN=coordinator", _key, HashAlgorithmName.SHA256);
        _server = request.CreateSelfSigned(s_time.AddDays(-1), s_time.AddDays(1));
    }

    private static readonly (string Actor, string Action, Dictionary<string, string> Details)[] s_events =
    [
        ("officer", "budget.set", new() { ["population"] = "p", ["epsilon"] = "10" }),
        ("engineer", "run.start", new() { ["run_id"] = "run-a", ["population"] = "p", ["planned_epsilon"] = "4.5" }),
        ("coordinator", "round.start", new() { ["run_id"] = "run-a", ["round"] = "1", ["participants"] = "alice,bob,carol" }),
        ("bob", "round.decline", new() { ["run_id"] = "run-a", ["round"] = "1" }),
        ("coordinator", "round.complete", new() { ["run_id"] = "run-a", ["round"] = "1", ["survivors"] = "2", ["epsilon_after"] = "1.25" }),
        ("coordinator", "round.start", new() { ["run_id"] = "run-a", ["round"] = "2", ["participants"] = "alice,carol" }),
        ("coordinator", "round.fail", new() { ["run_id"] = "run-a", ["round"] = "2", ["reason"] = "too few survivors" }),
    ];

    /// <summary>The whole chain for <paramref name="events"/>, as the coordinator stores it.</summary>
    private static List<AuditEntry> Chain(IEnumerable<(string Actor, string Action, Dictionary<string, string> Details)> events)
    {
        var entries = new List<AuditEntry>();
        string previous = AuditChain.GenesisHash;
        long sequence = 1;
        foreach ((string actor, string action, Dictionary<string, string> details) in events)
        {
            string json = AuditChain.Canonicalize(sequence, s_time.AddSeconds(sequence), actor, action, details, previous);
            previous = AuditChain.Hash(json);
            entries.Add(new AuditEntry { Sequence = (ulong)sequence++, CanonicalJson = json, Hash = previous });
        }
        return entries;
    }

    /// <summary>What GetAudit answers for entries from <paramref name="from"/>, with the head signed by the server key.</summary>
    private GetAuditResponse Slice(List<AuditEntry> chain, ulong from)
    {
        var response = new GetAuditResponse { HeadSequence = chain[^1].Sequence, HeadHash = chain[^1].Hash };
        response.Entries.AddRange(chain.Where(e => e.Sequence >= from).Select(e => e.Clone()));
        response.HeadSignature = ByteString.CopyFrom(AuditChain.SignHead(_key, (long)response.HeadSequence, response.HeadHash));
        return response;
    }

    [Fact]
    public void Accept_TwoPolls_RunsAndRoundsFromTheVerifiedEntries()
    {
        var follower = new AuditFollower();
        List<AuditEntry> chain = Chain(s_events);

        Assert.True(follower.Accept(Slice(chain[..4], 1), 1, _server));
        Assert.True(follower.Accept(Slice(chain, 4), 4, _server));

        Assert.Null(follower.Problem);
        Assert.Equal(7UL, follower.HeadSequence);
        RunHistory run = Assert.Single(follower.Runs);
        Assert.Equal(("run-a", "p", 4.5), (run.RunId, run.Population, run.PlannedEpsilon));
        RoundHistory first = run.Rounds[1];
        Assert.Equal((3, 1, 2, 1, 1.25), (first.Selected, first.Declined, first.Survivors, first.Dropouts, first.EpsilonAfter));
        RoundHistory second = run.Rounds[2];
        Assert.Equal(("too few survivors", 2, (int?)null), (second.FailedReason, second.Dropouts, second.Survivors));
        Assert.Equal([1UL, 2, 3, 4, 5, 6, 7], follower.Tail.Select(l => l.Sequence));
        Assert.Equal("round.decline", follower.Tail[3].Action);
    }

    [Fact]
    public void Accept_EntryAlreadyReadRewritten_ProblemAndNothingMoreFolded()
    {
        var follower = new AuditFollower();
        Assert.True(follower.Accept(Slice(Chain(s_events)[..4], 1), 1, _server));
        // A history rewritten from entry 4 on: consistent in itself and signed, but entry 4 is not the one read before.
        var rewritten = s_events.ToList();
        rewritten[3] = ("alice", "round.decline", new() { ["run_id"] = "run-a", ["round"] = "1" });

        Assert.False(follower.Accept(Slice(Chain(rewritten), 4), 4, _server));

        Assert.Equal("entry 4 changed or vanished since it was first read", follower.Problem);
        Assert.False(follower.Runs[0].Rounds[1].Survivors.HasValue);
    }

    [Fact]
    public void Accept_OneBitFlippedInANewEntry_ProblemAndNotFolded()
    {
        var follower = new AuditFollower();
        List<AuditEntry> chain = Chain(s_events);
        GetAuditResponse slice = Slice(chain, 1);
        AuditEntry complete = slice.Entries[4];
        char[] json = complete.CanonicalJson.ToCharArray();
        int at = complete.CanonicalJson.IndexOf("1.25", StringComparison.Ordinal);
        json[at] ^= (char)1; // "1.25" becomes "0.25"
        complete.CanonicalJson = new string(json);

        Assert.False(follower.Accept(slice, 1, _server));

        Assert.StartsWith("entry 5 hashes to", follower.Problem, StringComparison.Ordinal);
        Assert.Empty(follower.Runs);
    }

    [Fact]
    public void Accept_HeadSignedByAnotherKey_Problem()
    {
        var follower = new AuditFollower();
        using ECDsa other = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using X509Certificate2 impostor = new CertificateRequest("CN=coordinator", other, HashAlgorithmName.SHA256).CreateSelfSigned(s_time.AddDays(-1), s_time.AddDays(1));

        Assert.False(follower.Accept(Slice(Chain(s_events), 1), 1, impostor));

        Assert.Equal("the head signature does not verify with the coordinator's TLS key", follower.Problem);
    }

    public void Dispose()
    {
        _server.Dispose();
        _key.Dispose();
    }
}
