using System.Security.Cryptography;
using Federated.Aggregation.SecureAggregation;

namespace Federated.Aggregation.Tests.SecureAggregation;

public sealed class SecAggProtocolTests
{
    [Fact]
    public void Unmask_RandomRoundsWithDropoutsAtEveryStage_EqualsPlainSumOfSurvivors()
    {
        using var random = new DeterministicRandom(2024);
        int completed = 0;
        int failed = 0;
        for (int trial = 0; trial < 30; trial++)
        {
            int n = 2 + random.Next(59);
            int d = 1 + random.Next(300);
            int bits = 16 + random.Next(17);
            int degree = n - 1;
            if (n > 6 && random.Next(2) == 0)
            {
                degree = 2 * (1 + random.Next((n - 2) / 2)); // even, at most n - 2: a Harary graph
            }
            int threshold = 1 + random.Next(degree + 1);
            var p = SecAggRound.Create(n, d, bits, degree, threshold, seed: trial);
            using var round = new SecAggRound(p, trial);
            var inputs = round.RandomInputs();
            // Each client independently drops before one stage, with a small probability.
            var drops = new HashSet<int>[4];
            for (int s = 0; s < 4; s++)
            {
                drops[s] = [];
            }
            int dropRate = random.Next(4); // 0%, ~5%, ~10%, ~15% per stage
            foreach (int id in p.ClientIds)
            {
                for (int s = 0; s < 4; s++)
                {
                    if (random.Next(20) < dropRate)
                    {
                        drops[s].Add(id);
                        break;
                    }
                }
            }
            try
            {
                round.Advertise(drops[0]);
                round.Share(drops[1]);
                round.Mask(drops[2], inputs, chunk: random.Next(2) == 0 ? 0 : 1 + random.Next(d));
                // One to three unmasking workers: the key agreements and mask removal split across them give the same sum.
                uint[] result = round.Unmask(drops[3], parallelism: 1 + random.Next(3));
                var survivors = round.Server.State.MaskedInputs;
                Assert.Equal(round.PlainSum(survivors, inputs), result);
                Assert.DoesNotContain(drops[2], survivors.Contains);
                Assert.Empty(round.Server.State.ReconstructedSelfMaskSeeds.Intersect(round.Server.State.ReconstructedMaskKeys));
                Assert.Equal(survivors, round.Server.State.ReconstructedSelfMaskSeeds);
                Assert.Equal(SecAggStage.Completed, round.Server.Stage);
                completed++;
            }
            catch (InsufficientSurvivorsException)
            {
                // Legitimate only when some secret really lacks t holders; the server releases nothing.
                Assert.Equal(SecAggStage.Failed, round.Server.Stage);
                Assert.NotNull(round.Server.State.FailureReason);
                Assert.Throws<ProtocolStageException>(() => round.Server.Unmask());
                failed++;
            }
        }
        Assert.True(completed >= 20, $"only {completed} of 30 random rounds completed ({failed} failed for lack of shares)");
    }

    [Fact]
    public void Unmask_DropoutsUpToNMinusT_CompleteGraph_IsExact()
    {
        var p = SecAggRound.Create(n: 12, d: 257, bits: 20, degree: 11, threshold: 7);
        foreach (int stage in new[] { 0, 1, 2, 3 })
        {
            using var round = new SecAggRound(p, 40 + stage);
            var inputs = round.RandomInputs();
            var drop = p.ClientIds.Take(5).ToHashSet(); // n - t = 5
            var none = new HashSet<int>();
            round.Advertise(stage == 0 ? drop : none);
            round.Share(stage == 1 ? drop : none);
            round.Mask(stage == 2 ? drop : none, inputs);
            uint[] result = round.Unmask(stage == 3 ? drop : none);
            Assert.Equal(round.PlainSum(round.Server.State.MaskedInputs, inputs), result);
            if (stage == 2)
            {
                // Dropped after sharing: their mask keys were rebuilt, never their self-mask seeds.
                Assert.Equal(drop.Order(), round.Server.State.ReconstructedMaskKeys);
                Assert.Empty(round.Server.State.ReconstructedSelfMaskSeeds.Intersect(drop));
            }
        }
    }

    [Fact]
    public void Unmask_FewerThanThresholdSurvivors_FailsAndReleasesNothing()
    {
        var p = SecAggRound.Create(n: 8, d: 16, bits: 32, degree: 7, threshold: 6);
        using var round = new SecAggRound(p, 3);
        var inputs = round.RandomInputs();
        round.Advertise(new HashSet<int>());
        round.Share(new HashSet<int>());
        var ex = Assert.Throws<InsufficientSurvivorsException>(() => round.Mask(p.ClientIds.Take(3).ToHashSet(), inputs));
        Assert.Contains("threshold 6", ex.Message);
        Assert.Equal(SecAggStage.Failed, round.Server.Stage);
        Assert.Throws<ProtocolStageException>(() => round.Server.Unmask());
    }

    [Fact]
    public void Unmask_UnmaskRespondersBelowThreshold_FailsAndReleasesNothing()
    {
        var p = SecAggRound.Create(n: 6, d: 16, bits: 32, degree: 5, threshold: 5);
        using var round = new SecAggRound(p, 4);
        var inputs = round.RandomInputs();
        var none = new HashSet<int>();
        round.Advertise(none);
        round.Share(none);
        round.Mask(none, inputs);
        Assert.Throws<InsufficientSurvivorsException>(() => round.Unmask(p.ClientIds.Take(2).ToHashSet()));
        Assert.Equal(SecAggStage.Failed, round.Server.Stage);
    }

    [Fact]
    public void MaskInput_MaskedBytes_PassChiSquareUniformity()
    {
        var p = SecAggRound.Create(n: 4, d: 16384, bits: 32, degree: 3, threshold: 3);
        using var round = new SecAggRound(p, 5);
        // A structured input (all zeros): any non-uniformity would come from the masks.
        var inputs = p.ClientIds.ToDictionary(id => id, _ => new uint[p.VectorLength]);
        var none = new HashSet<int>();
        round.Advertise(none);
        round.Share(none);
        round.Mask(none, inputs);
        foreach (MaskedInputMessage masked in round.Masked.Values)
        {
            var counts = new long[256];
            foreach (byte b in System.Runtime.InteropServices.MemoryMarshal.AsBytes(masked.MaskedInput.AsSpan()))
            {
                counts[b]++;
            }
            double expected = masked.MaskedInput.Length * 4 / 256.0;
            double chi2 = counts.Sum(c => (c - expected) * (c - expected) / expected);
            // 255 degrees of freedom: the 99.99th percentile is about 347.
            Assert.InRange(chi2, 150, 347);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(8 * 60 + 3)]
    [InlineData(8 * SecAggCrypto.ShareCiphertextBytes - 1)]
    public void ReceiveForwardedShares_OneBitFlipInOnePeersCiphertext_ThatPeerIsADropoutForThisClientOnly(int bit)
    {
        var p = SecAggRound.Create(n: 4, d: 8, bits: 32, degree: 3, threshold: 3);
        for (int s = 0; s < 3; s++)
        {
            using var round = new SecAggRound(p, 6);
            var none = new HashSet<int>();
            round.Advertise(none);
            round.Share(none);
            int receiver = p.ClientIds[1];
            ForwardedSharesMessage genuine = round.Forwarded[receiver];
            byte[] tampered = (byte[])genuine.Shares[s].Ciphertext.Clone();
            tampered[bit / 8] ^= (byte)(1 << (bit % 8));
            var shares = genuine.Shares.Select((f, i) => i == s ? f with { Ciphertext = tampered } : f).ToList();

            round.Clients[receiver].ReceiveForwardedShares(genuine with { Shares = shares });

            // Authenticated encryption caught it; the client goes on without that peer's shares.
            ClientSessionState state = round.Clients[receiver].State;
            Assert.True(state.SharesReceived);
            Assert.Equal([genuine.Shares[s].Sender], state.RejectedPeers);
            Assert.Contains(genuine.Shares[s].Sender, state.MaskingPeers);
        }
    }

    [Fact]
    public void ReceiveForwardedShares_CiphertextsSwappedBetweenSenders_BothRejected()
    {
        var p = SecAggRound.Create(n: 4, d: 8, bits: 32, degree: 3, threshold: 3);
        using var round = new SecAggRound(p, 6);
        var none = new HashSet<int>();
        round.Advertise(none);
        round.Share(none);
        int receiver = p.ClientIds[1];
        ForwardedSharesMessage genuine = round.Forwarded[receiver];
        // The associated data binds the sender: a ciphertext replayed under another sender's name fails.
        var swapped = genuine.Shares.Select((f, i) => i < 2 ? f with { Ciphertext = genuine.Shares[1 - i].Ciphertext } : f).ToList();

        // Two of its three peers rejected: with itself it holds shares of 2 < t = 3 clients, so it leaves the round.
        Assert.Throws<InsufficientSurvivorsException>(() => round.Clients[receiver].ReceiveForwardedShares(genuine with { Shares = swapped }));
    }

    [Fact]
    public void Round_HostilePeerSendsGarbageToOneHolder_HonestClientsCompleteAndTheSumIsExact()
    {
        var p = SecAggRound.Create(n: 5, d: 33, bits: 24, degree: 4, threshold: 3);
        using var round = new SecAggRound(p, 9);
        var inputs = round.RandomInputs();
        var none = new HashSet<int>();
        round.Advertise(none);
        round.Share(none);
        int hostile = p.ClientIds[0], victim = p.ClientIds[1];
        ForwardedSharesMessage toVictim = round.Forwarded[victim];
        round.Forwarded[victim] = toVictim with
        {
            Shares = [.. toVictim.Shares.Select(f => f.Sender == hostile ? f with { Ciphertext = RandomNumberGenerator.GetBytes(f.Ciphertext.Length) } : f)],
        };

        round.Mask(none, inputs);
        uint[] sum = round.Unmask(none);

        Assert.Equal([hostile], round.Clients[victim].State.RejectedPeers);
        // The victim revealed nothing of the hostile peer; the others' shares reconstructed its seed.
        Assert.DoesNotContain(round.Responses[victim].SelfMaskSeedShares, r => r.Owner == hostile);
        Assert.Equal(round.PlainSum(p.ClientIds, inputs), sum);
    }

    // A lying server tells some holders that the victim dropped (they reveal its mask-key shares) and the others that it
    // survived (they reveal its self-mask-seed shares): with both secrets it could unmask the victim's input. Every
    // split of the holders is tried against real client sessions. Below a majority threshold (t = 2 of 5) some split
    // yields t shares of both; with t > n/2 (t = 3 of 5, what every edge and the coordinator now require) none does,
    // since the key holders D and the seed holders S (with the victim itself) satisfy |D| + |S| + 1 <= n < 2t.
    [Theory]
    [InlineData(2, true)]
    [InlineData(3, false)]
    public void LyingServer_DifferentDropoutSetsToDifferentHolders_BothSecretsOfOneClientOnlyWithoutAMajorityThreshold(int threshold, bool bothReachable)
    {
        var p = SecAggRound.Create(n: 5, d: 8, bits: 32, degree: 4, threshold: threshold);
        int victim = p.ClientIds[0];
        int[] holders = [.. p.ClientIds.Where(id => id != victim)];
        bool anyBoth = false;
        for (int split = 0; split < 1 << holders.Length; split++)
        {
            using var round = new SecAggRound(p, 11);
            var none = new HashSet<int>();
            round.Advertise(none);
            round.Share(none);
            round.Mask(none, round.RandomInputs());
            int seedShares = 0, keyShares = 0;
            foreach (int id in p.ClientIds)
            {
                bool toldDropped = id != victim && (split >> Array.IndexOf(holders, id) & 1) == 1;
                var lie = new UnmaskRequestMessage(id, [.. p.ClientIds.Where(c => !toldDropped || c != victim)], toldDropped ? [victim] : []);
                try
                {
                    UnmaskResponseMessage revealed = round.Clients[id].ReceiveUnmaskRequest(lie);
                    seedShares += revealed.SelfMaskSeedShares.Count(r => r.Owner == victim);
                    keyShares += revealed.MaskKeyShares.Count(r => r.Owner == victim);
                }
                catch (InsufficientSurvivorsException)
                {
                    // Told fewer than t survivors: this holder reveals nothing.
                }
            }
            anyBoth |= seedShares >= threshold && keyShares >= threshold;
        }

        Assert.Equal(bothReachable, anyBoth);
    }

    [Fact]
    public void ReceiveUnmaskResponse_OneBitFlipInAShareOrSalt_OnlyThatShareIsDroppedAndTheRoundCompletes()
    {
        var p = SecAggRound.Create(n: 5, d: 33, bits: 24, degree: 4, threshold: 3);
        foreach (bool seedList in new[] { true, false })
        {
            foreach (bool inSalt in new[] { false, true })
            {
                using var round = new SecAggRound(p, 7);
                var inputs = round.RandomInputs();
                var none = new HashSet<int>();
                round.Advertise(none);
                round.Share(none);
                round.Mask(new HashSet<int> { p.ClientIds[0] }, inputs);
                int responder = p.ClientIds[2];
                UnmaskResponseMessage genuine = round.Clients[responder].ReceiveUnmaskRequest(round.Requests[responder]);
                Assert.NotEmpty(genuine.MaskKeyShares);
                var list = seedList ? genuine.SelfMaskSeedShares : genuine.MaskKeyShares;
                byte[] share = (byte[])list[0].Share.Clone();
                byte[] salt = (byte[])list[0].Salt.Clone();
                if (inSalt)
                {
                    salt[3] ^= 0x10;
                }
                else
                {
                    share[7] ^= 0x01; // stays a canonical field element, so only the commitment catches it
                }
                var altered = list.Select((r, j) => j == 0 ? r with { Share = share, Salt = salt } : r).ToList();

                round.Server.ReceiveUnmaskResponse(seedList ? genuine with { SelfMaskSeedShares = altered } : genuine with { MaskKeyShares = altered });
                foreach (var (id, request) in round.Requests.Where(r => r.Key != responder))
                {
                    round.Server.ReceiveUnmaskResponse(round.Clients[id].ReceiveUnmaskRequest(request));
                }

                Assert.Equal([(responder, list[0].Owner)], round.Server.RejectedShares);
                Assert.Equal(round.PlainSum(round.Server.State.MaskedInputs, inputs), round.Server.Unmask());
            }
        }
    }

    [Fact]
    public void Sessions_Misuse_IsRefusedWithSpecificExceptionsAndSessionStaysUsable()
    {
        var p = SecAggRound.Create(n: 4, d: 10, bits: 16, degree: 3, threshold: 3);
        using var round = new SecAggRound(p, 8);
        var inputs = round.RandomInputs();
        int a = p.ClientIds[0], b = p.ClientIds[1];
        ClientSession ca = round.Clients[a];

        // Wrong stage.
        Assert.Throws<ProtocolStageException>(() => ca.ReceiveRoster(new KeyRosterMessage(a, [])));
        Assert.Throws<ProtocolStageException>(() => round.Server.CloseShareKeys());
        Assert.Throws<ProtocolStageException>(() => round.Server.ReceiveMaskedInput(new MaskedInputMessage(a, new uint[10])));
        AdvertiseKeysMessage adv = ca.AdvertiseKeys();
        Assert.Throws<ProtocolStageException>(() => ca.AdvertiseKeys());

        // Unknown sender, duplicate, wrong lengths.
        Assert.Throws<UnknownParticipantException>(() => round.Server.ReceiveAdvertisement(adv with { Sender = 999 }));
        Assert.Throws<MalformedMessageException>(() => round.Server.ReceiveAdvertisement(adv with { MaskPublicKey = new byte[64] }));
        round.Server.ReceiveAdvertisement(adv);
        Assert.Throws<DuplicateMessageException>(() => round.Server.ReceiveAdvertisement(adv));
        foreach (int id in p.ClientIds.Skip(1))
        {
            round.Server.ReceiveAdvertisement(round.Clients[id].AdvertiseKeys());
        }
        var rosters = round.Server.CloseAdvertiseKeys();
        Assert.Throws<UnknownParticipantException>(() => ca.ReceiveRoster(rosters[b]));
        var badPoint = rosters[a] with { Neighbours = rosters[a].Neighbours.Select((e, i) => i == 0 ? e with { MaskPublicKey = Enumerable.Repeat((byte)4, 65).ToArray() } : e).ToList() };
        Assert.Throws<MalformedMessageException>(() => ca.ReceiveRoster(badPoint));
        var dupRoster = rosters[a] with { Neighbours = [.. rosters[a].Neighbours, rosters[a].Neighbours[0]] };
        Assert.Throws<DuplicateMessageException>(() => ca.ReceiveRoster(dupRoster));
        var shareKeys = p.ClientIds.ToDictionary(id => id, id => round.Clients[id].ReceiveRoster(rosters[id]));
        var shortCipher = shareKeys[a] with { Shares = shareKeys[a].Shares.Select((s, i) => i == 0 ? s with { Ciphertext = s.Ciphertext[..10] } : s).ToList() };
        Assert.Throws<MalformedMessageException>(() => round.Server.ReceiveShareKeys(shortCipher));
        Assert.Throws<MalformedMessageException>(() => round.Server.ReceiveShareKeys(shareKeys[a] with { Shares = shareKeys[a].Shares.Skip(1).ToList() }));
        foreach (var m in shareKeys.Values)
        {
            round.Server.ReceiveShareKeys(m);
        }
        Assert.Throws<DuplicateMessageException>(() => round.Server.ReceiveShareKeys(shareKeys[a]));
        var forwarded = round.Server.CloseShareKeys();

        // Masking before shares arrive, wrong input length, values outside the ring.
        Assert.Throws<ProtocolStageException>(() => ca.MaskInput(inputs[a]));
        ca.ReceiveForwardedShares(forwarded[a]);
        Assert.Throws<DuplicateMessageException>(() => ca.ReceiveForwardedShares(forwarded[a]));
        Assert.Throws<ArgumentException>(() => ca.MaskInput(new uint[9]));
        Assert.Throws<ArgumentOutOfRangeException>(() => ca.MaskInput(Enumerable.Repeat(1u << 16, 10).ToArray()));
        var masked = new Dictionary<int, MaskedInputMessage> { [a] = ca.MaskInput(inputs[a]) };
        Assert.Throws<MalformedMessageException>(() => round.Server.ReceiveMaskedInput(masked[a] with { MaskedInput = new uint[9] }));
        uint[] outside = (uint[])masked[a].MaskedInput.Clone();
        outside[4] = 1u << 20;
        Assert.Throws<MalformedMessageException>(() => round.Server.ReceiveMaskedInput(masked[a] with { MaskedInput = outside }));
        var chunks = masked[a].Chunks(4).ToList();
        Assert.Throws<MalformedMessageException>(() => round.Server.ReceiveMaskedInputChunk(chunks[1]));
        foreach (MaskedInputChunk c in chunks)
        {
            round.Server.ReceiveMaskedInputChunk(c);
        }
        Assert.Throws<DuplicateMessageException>(() => round.Server.ReceiveMaskedInput(masked[a]));
        foreach (int id in p.ClientIds.Skip(1))
        {
            round.Clients[id].ReceiveForwardedShares(forwarded[id]);
            round.Server.ReceiveMaskedInput(round.Clients[id].MaskInput(inputs[id]));
        }
        var requests = round.Server.CloseMaskedInput();

        // A request that would reveal both secrets of one client, or drops the receiver itself, is refused.
        var both = requests[a] with { Dropped = [requests[a].Survivors.First(s => s != a)] };
        Assert.Throws<MalformedMessageException>(() => ca.ReceiveUnmaskRequest(both));
        var selfDropped = requests[a] with { Survivors = requests[a].Survivors.Where(s => s != a).ToList(), Dropped = [a] };
        Assert.Throws<MalformedMessageException>(() => ca.ReceiveUnmaskRequest(selfDropped));
        UnmaskResponseMessage response = ca.ReceiveUnmaskRequest(requests[a]);
        Assert.Throws<ProtocolStageException>(() => ca.ReceiveUnmaskRequest(requests[a] with { Survivors = [a], Dropped = requests[a].Survivors.Where(s => s != a).ToList() }));
        Assert.Throws<UnknownParticipantException>(() => round.Server.ReceiveUnmaskResponse(response with { Sender = 999 }));
        round.Server.ReceiveUnmaskResponse(response);
        Assert.Throws<DuplicateMessageException>(() => round.Server.ReceiveUnmaskResponse(response));
        foreach (int id in p.ClientIds.Skip(1))
        {
            round.Server.ReceiveUnmaskResponse(round.Clients[id].ReceiveUnmaskRequest(requests[id]));
        }
        Assert.Equal(round.PlainSum(p.ClientIds, inputs), round.Server.Unmask());
        Assert.Throws<ProtocolStageException>(() => round.Server.Unmask());
    }

    [Fact]
    public void CloseMaskedInput_ClientStoppedMidStream_FailsClearly()
    {
        var p = SecAggRound.Create(n: 3, d: 20, bits: 32, degree: 2, threshold: 2);
        using var round = new SecAggRound(p, 9);
        var inputs = round.RandomInputs();
        var none = new HashSet<int>();
        round.Advertise(none);
        round.Share(none);
        int a = p.ClientIds[0];
        round.Clients[a].ReceiveForwardedShares(round.Forwarded[a]);
        round.Server.ReceiveMaskedInputChunk(round.Clients[a].MaskInput(inputs[a]).Chunks(8).First());
        var ex = Assert.Throws<SecureAggregationException>(() => round.Server.CloseMaskedInput());
        Assert.Contains("part-way", ex.Message);
        Assert.Equal(SecAggStage.Failed, round.Server.Stage);
    }
}
