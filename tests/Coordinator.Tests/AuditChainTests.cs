using System.Data.Common;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Audit;
using Federated.Coordinator.Cli;
using Federated.Coordinator.State;
using Federated.Coordinator.Tests.State;

namespace Federated.Coordinator.Tests;

public sealed class AuditChainTests
{
    [Fact]
    public void Canonicalize_DetailsInAnyOrder_SameBytesWithSortedKeys()
    {
        var time = new DateTimeOffset(2026, 11, 25, 23, 0, 0, TimeSpan.Zero);
        string a = AuditChain.Canonicalize(1, time, "officer", "budget.set", new Dictionary<string, string> { ["z"] = "1", ["a"] = "2" }, AuditChain.GenesisHash);
        string b = AuditChain.Canonicalize(1, time, "officer", "budget.set", new Dictionary<string, string> { ["a"] = "2", ["z"] = "1" }, AuditChain.GenesisHash);

        Assert.Equal(a, b);
        Assert.Equal(
            "{\"action\":\"budget.set\",\"actor\":\"officer\",\"details\":{\"a\":\"2\",\"z\":\"1\"},\"prev\":\"" + AuditChain.GenesisHash + "\",\"sequence\":1,\"time\":\"2026-11-25T23:00:00.000Z\"}",
            a);
        // SHA-256 known answer for the empty string guards the hex encoding.
        Assert.Equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", AuditChain.Hash(""));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Verify_UntouchedChain_IsValid(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        BuildChain(db, out X509Certificate2 signer);
        using (signer)
        {
            AuditVerification result = Verify(db, signer);
            Assert.True(result.Valid, result.Problem);
            Assert.Equal(5, result.Entries);
        }
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Verify_OneByteChanged_DetectsAlteredEntry(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        BuildChain(db, out X509Certificate2 signer);
        using (signer)
        {
            string json = db.Scalar<string>("SELECT canonical_json FROM audit WHERE sequence = 3");
            string edited = json.Replace("\"epsilon\":\"3\"", "\"epsilon\":\"9\"", StringComparison.Ordinal);
            Assert.NotEqual(json, edited);
            db.Execute("UPDATE audit SET canonical_json = @v WHERE sequence = 3", ("@v", edited));

            AuditVerification result = Verify(db, signer);

            Assert.False(result.Valid);
            Assert.Contains("entry 3 was altered", result.Problem, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Verify_EntryAndHashRewritten_DetectsBrokenLink(StateBackend backend)
    {
        // An attacker who also recomputes the edited entry's hash still breaks the next entry's link.
        using var db = new TestStateDatabase(backend);
        BuildChain(db, out X509Certificate2 signer);
        using (signer)
        {
            string json = db.Scalar<string>("SELECT canonical_json FROM audit WHERE sequence = 2").Replace("officer", "officel", StringComparison.Ordinal);
            db.Execute("UPDATE audit SET canonical_json = @v WHERE sequence = 2", ("@v", json));
            db.Execute("UPDATE audit SET hash = @v WHERE sequence = 2", ("@v", AuditChain.Hash(json)));

            AuditVerification result = Verify(db, signer);

            Assert.False(result.Valid);
            Assert.Contains("entry 3 does not link to entry 2", result.Problem, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Verify_MiddleEntryRemoved_DetectsGap(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        BuildChain(db, out X509Certificate2 signer);
        using (signer)
        {
            db.Execute("DELETE FROM audit WHERE sequence = 2");

            AuditVerification result = Verify(db, signer);

            Assert.False(result.Valid);
            Assert.Contains("entry 2 is missing", result.Problem, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Verify_LastEntryRemoved_DetectsHeadMismatch(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        BuildChain(db, out X509Certificate2 signer);
        using (signer)
        {
            db.Execute("DELETE FROM audit WHERE sequence = 5");

            AuditVerification result = Verify(db, signer);

            Assert.False(result.Valid);
            Assert.Contains("signed head names entry 5", result.Problem, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Verify_TwoEntriesSwapped_DetectsReorder(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        BuildChain(db, out X509Certificate2 signer);
        using (signer)
        {
            db.Execute("""
                UPDATE audit SET sequence = -1 WHERE sequence = 2;
                UPDATE audit SET sequence = 2 WHERE sequence = 3;
                UPDATE audit SET sequence = 3 WHERE sequence = -1;
                """);

            AuditVerification result = Verify(db, signer);

            Assert.False(result.Valid);
            Assert.Contains("reordered", result.Problem, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Verify_HeadResignedByAnotherKey_DetectsForgery(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        BuildChain(db, out X509Certificate2 signer);
        using (signer)
        {
            // Drop the last entry and re-sign a consistent head with a key that is not the coordinator's.
            db.Execute("DELETE FROM audit WHERE sequence = 5");
            string hash = db.Scalar<string>("SELECT hash FROM audit WHERE sequence = 4");
            using ECDsa forger = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            db.Execute("UPDATE audit_head SET sequence = 4, hash = '" + hash + "', signature = @v", ("@v", AuditChain.SignHead(forger, 4, hash)));

            AuditVerification result = Verify(db, signer);

            Assert.False(result.Valid);
            Assert.Contains("signature does not verify", result.Problem, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public async Task VerifyCommand_ValidThenTampered_ExitsZeroThenOne(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        BuildChain(db, out X509Certificate2 signer);
        signer.Dispose();

        Assert.Equal(CliRunner.Ok, await CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["audit", "verify", "--state", db.Argument, "--json"]));
        db.Execute("UPDATE audit SET canonical_json = replace(canonical_json, 'officer', 'OFFICER') WHERE sequence = 2");
        Assert.Equal(CliRunner.Failed, await CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["audit", "verify", "--state", db.Argument]));
        Assert.Equal(CliRunner.BadUsage, await CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["audit", "verify", "--state", db.Folder.File("missing.db")]));
    }

    private static void BuildChain(TestStateDatabase db, out X509Certificate2 signer)
    {
        signer = TestSigner.Create();
        using CoordinatorState state = db.Open(signer);
        state.Clients.Register("alice", "aa", "1.0", "cpu");
        state.Budgets.Set("default", 2.0, 1e-6, "officer");
        state.Budgets.Set("default", 3.0, 1e-6, "officer");
        state.Audit.Append("engineer", "run.start", new Dictionary<string, string> { ["run_id"] = "r1" });
        state.Clients.Register("bob", "bb", "1.0", "cpu");
    }

    private static AuditVerification Verify(TestStateDatabase db, X509Certificate2 signer)
    {
        using DbConnection connection = CoordinatorState.OpenReadOnly(db.Location);
        using ECDsa key = signer.GetECDsaPublicKey()!;
        return AuditChain.Verify(AuditStore.ReadRecords(connection), AuditStore.ReadHead(connection), key);
    }
}
