using System.Security.Cryptography;
using Federated.Aggregation.Privacy;
using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Wire;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using DomainParameters = Federated.Aggregation.SecureAggregation.SecAggParameters;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// One round of the lying coordinator: signed manifests priced with the real <see cref="PrivacyPlan"/>, the SecAgg+
/// stages run by the real <see cref="ServerSession"/>, each stage a long poll that closes once every real edge has
/// submitted, the sybils (real <see cref="ClientSession"/>s with the coordinator's own inputs, zeros) acting when a
/// stage closes. Everything the edges sent is kept, so a test can tell what the coordinator collected.
/// </summary>
internal sealed class LyingRound : IDisposable
{
    private readonly Lock _lock = new();
    private readonly LyingRoundPlan _plan;
    private readonly CoordinatorSigner _signer;
    private readonly RoundManifest _template;
    private readonly Dictionary<string, int> _indices = new(StringComparer.Ordinal);
    private readonly Dictionary<int, string> _names = [];
    private readonly Dictionary<int, Sybil> _sybils = [];
    private readonly HashSet<int> _edges = [];
    private readonly ServerSession _server;
    private readonly Dictionary<int, SignedKeys> _signedKeys = [];
    private readonly HashSet<int> _advertised = [], _shared = [], _uploaded = [];
    private readonly List<SurvivorSignature> _confirmations = [];
    private readonly TaskCompletionSource<IReadOnlyDictionary<int, AdvertiseKeysResponse>> _rosters = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<IReadOnlyDictionary<int, ForwardedSharesMessage>> _forwarded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<IReadOnlyDictionary<int, UploadMaskedInputResponse>> _survivors = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<IReadOnlyList<SurvivorSignature>> _confirmed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<uint[]> _sum = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public LyingRound(LyingRoundPlan plan, TestFederation federation, CoordinatorSigner signer, AdapterRef adapter, int dimension)
    {
        _plan = plan;
        _signer = signer;
        string[] names = [.. plan.Edges.Concat(plan.Sybils).Order(StringComparer.Ordinal)];
        for (int i = 0; i < names.Length; i++)
        {
            _indices[names[i]] = i + 1;
            _names[i + 1] = names[i];
        }
        int n = names.Length;
        // Priced with the plan the real coordinator and the real edge use, so the edge's own calculation agrees with the manifest.
        PrivacyPlan privacy = PrivacyPlan.Create(new PrivacyPlanParameters(PrivacyMechanism.DistributedSkellam, dimension, n, plan.Threshold, 32, 1.0,
            plan.NoiseMultiplier, Rounds: 1, plan.Delta));
        Privacy = privacy;
        Ref = new RoundRef { RunId = plan.RunId, Round = plan.Round };
        byte[] graphSeed = RandomNumberGenerator.GetBytes(32);
        DateTimeOffset deadline = DateTimeOffset.UtcNow.AddMinutes(3);
        _template = new RoundManifest
        {
            Round = Ref,
            Secagg = new Protos.V1.SecAggParameters
            {
                Participants = (uint)n, Threshold = (uint)plan.Threshold, Neighbours = (uint)(n - 1), RingBits = 32,
                VectorLength = (ulong)privacy.Quantizer.PaddedDimension, MaxChunkBytes = 4096, GraphSeed = ByteString.CopyFrom(graphSeed),
            },
            AdvertiseKeysDeadline = Timestamp.FromDateTimeOffset(deadline),
            ShareKeysDeadline = Timestamp.FromDateTimeOffset(deadline),
            MaskedInputDeadline = Timestamp.FromDateTimeOffset(deadline),
            UnmaskDeadline = Timestamp.FromDateTimeOffset(deadline),
            Dp = new DpParameters
            {
                Mechanism = NoiseMechanism.DistributedSkellam, ClipNorm = 1.0, NoiseMultiplier = plan.NoiseMultiplier, Scale = privacy.Scale,
                PerClientVariance = 2 * privacy.Quantizer.LocalSkellamMu, RotationSeed = ByteString.CopyFrom(RandomNumberGenerator.GetBytes(32)),
                Delta = plan.Delta, MaxClients = (uint)n, Adjacency = privacy.AdjacencyName, MinSurvivors = (uint)plan.Threshold,
            },
            GlobalAdapter = adapter,
            LocalSteps = 1,
            LearningRate = 0.01,
            EpsilonAfterRound = privacy.EpsilonAfter(1).Epsilon,
            CrlDer = ByteString.CopyFrom(plan.CrlDer ?? []),
        };
        foreach ((int index, string name) in _names.OrderBy(p => p.Key))
        {
            _template.Participants.Add(new ParticipantRef { Index = (uint)index, ClientId = name });
        }
        var parameters = DomainParameters.Create(plan.RunId, (long)plan.Round, _names.Keys, (int)_template.Secagg.VectorLength, 32, n - 1, plan.Threshold, graphSeed);
        _server = new ServerSession(parameters);
        foreach (string edge in plan.Edges)
        {
            _edges.Add(_indices[edge]);
        }
        foreach (string name in plan.Sybils)
        {
            var sybil = new Sybil(EdgeIdentity.Load(federation.Identity(name), federation.CaPath), new ClientSession(parameters, _indices[name]), _indices[name]);
            _sybils[sybil.Index] = sybil;
            AdvertiseKeysRequest keys = SecAggWire.ToSignedRequest(Ref, (uint)sybil.Index, sybil.Session.AdvertiseKeys(), sybil.Identity.Certificate);
            _server.ReceiveAdvertisement(SecAggWire.FromRequest(sybil.Index, keys));
            _signedKeys[sybil.Index] = new SignedKeys(sybil.Identity.Certificate.RawData, keys.KeySignature.ToByteArray());
        }
    }

    public RoundRef Ref { get; }

    /// <summary>The round's price as the manifest states it.</summary>
    public PrivacyPlan Privacy { get; }

    /// <summary>The participant index of <paramref name="name"/>.</summary>
    public int IndexOf(string name) => _indices[name];

    /// <summary>Declines received, by client name.</summary>
    public List<(string Client, DeclineRoundRequest Request)> Declines { get; } = [];

    /// <summary>Masked vectors received, by participant index (a list: a second upload for one round would show).</summary>
    public List<(int Index, uint[] Masked)> Uploads { get; } = [];

    /// <summary>Share-keys messages received, by participant index.</summary>
    public List<(int Index, ShareKeysRequest Request)> SharedKeys { get; } = [];

    /// <summary>Revealed shares received, by participant index: what the coordinator collected in the unmask stage.</summary>
    public List<(int Index, UnmaskRequest Request)> Reveals { get; } = [];

    /// <summary>The sum the coordinator unmasked (fails when the round could not be unmasked).</summary>
    public Task<uint[]> Sum => _sum.Task;

    public GetRoundManifestResponse Manifest(string client)
    {
        if (!_indices.TryGetValue(client, out int index))
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, $"{client} is not a participant"));
        }
        RoundManifest manifest = _template.Clone();
        manifest.Self = manifest.Participants.Single(p => p.Index == (uint)index);
        byte[] bytes = manifest.ToByteArray();
        return new GetRoundManifestResponse { Manifest = ByteString.CopyFrom(bytes), Signature = ByteString.CopyFrom(_signer.Sign(bytes)) };
    }

    public void Decline(string client, DeclineRoundRequest request)
    {
        lock (_lock)
        {
            Declines.Add((client, request.Clone()));
        }
    }

    public async Task<AdvertiseKeysResponse> AdvertiseAsync(string client, byte[] certificate, AdvertiseKeysRequest request, CancellationToken cancellationToken)
    {
        int index = _indices[client];
        lock (_lock)
        {
            _server.ReceiveAdvertisement(SecAggWire.FromRequest(index, request));
            _signedKeys[index] = new SignedKeys(certificate, request.KeySignature.ToByteArray());
            _advertised.Add(index);
            if (_advertised.IsSupersetOf(_edges))
            {
                var rosters = new Dictionary<int, AdvertiseKeysResponse>();
                foreach ((int id, KeyRosterMessage roster) in _server.CloseAdvertiseKeys())
                {
                    if (_sybils.TryGetValue(id, out Sybil? sybil))
                    {
                        _server.ReceiveShareKeys(sybil.Session.ReceiveRoster(roster));
                        continue;
                    }
                    AdvertiseKeysResponse response = SecAggWire.ToResponse(roster, _names, _signedKeys);
                    rosters[id] = _plan.LieRoster?.Invoke(id, response) ?? response;
                }
                _rosters.TrySetResult(rosters);
            }
        }
        return (await _rosters.Task.WaitAsync(cancellationToken))[index];
    }

    public async Task<ShareKeysResponse> ShareAsync(string client, ShareKeysRequest request, CancellationToken cancellationToken)
    {
        int index = _indices[client];
        lock (_lock)
        {
            SharedKeys.Add((index, request.Clone()));
            _server.ReceiveShareKeys(SecAggWire.FromRequest(index, request));
            _shared.Add(index);
            if (_shared.IsSupersetOf(_edges))
            {
                IReadOnlyDictionary<int, ForwardedSharesMessage> forwarded = _server.CloseShareKeys();
                foreach (Sybil sybil in _sybils.Values)
                {
                    sybil.Session.ReceiveForwardedShares(forwarded[sybil.Index]);
                }
                _forwarded.TrySetResult(forwarded);
            }
        }
        return SecAggWire.ToResponse((await _forwarded.Task.WaitAsync(cancellationToken))[index]);
    }

    public async Task<UploadMaskedInputResponse> UploadAsync(string client, uint[] masked, CancellationToken cancellationToken)
    {
        int index = _indices[client];
        lock (_lock)
        {
            Uploads.Add((index, (uint[])masked.Clone()));
            _server.ReceiveMaskedInput(new MaskedInputMessage(index, masked));
            _uploaded.Add(index);
            if (_uploaded.IsSupersetOf(_edges))
            {
                foreach (Sybil sybil in _sybils.Values)
                {
                    _server.ReceiveMaskedInput(sybil.Session.MaskInput(new uint[_template.Secagg.VectorLength]));
                }
                IReadOnlyDictionary<int, UnmaskRequestMessage> requests = _server.CloseMaskedInput();
                var responses = new Dictionary<int, UploadMaskedInputResponse>();
                foreach ((int id, UnmaskRequestMessage request) in requests)
                {
                    UploadMaskedInputResponse response = SecAggWire.ToResponse((ulong)(4 * masked.Length), request);
                    response.AllSurvivors.AddRange(requests.Keys.Order().Select(i => (uint)i));
                    responses[id] = _sybils.ContainsKey(id) ? response : _plan.LieSurvivors?.Invoke(id, response) ?? response;
                }
                _survivors.TrySetResult(responses);
            }
        }
        return (await _survivors.Task.WaitAsync(cancellationToken))[index];
    }

    /// <summary>The consistency round: returns every signature received once each edge that uploaded signed, with the sybils' own.</summary>
    public async Task<ConfirmSurvivorsResponse> ConfirmAsync(string client, byte[] signature, CancellationToken cancellationToken)
    {
        int index = _indices[client];
        lock (_lock)
        {
            _confirmations.Add(new SurvivorSignature { Index = (uint)index, Signature = ByteString.CopyFrom(signature) });
            if (_confirmations.Count == _uploaded.Count)
            {
                IReadOnlyDictionary<int, UploadMaskedInputResponse> survivors = _survivors.Task.Result;
                foreach (Sybil sybil in _sybils.Values)
                {
                    byte[] signed = KeyAdvertisement.SignSurvivors(sybil.Identity.Certificate, Ref, survivors[sybil.Index].AllSurvivors.Select(i => (int)i));
                    _confirmations.Add(new SurvivorSignature { Index = (uint)sybil.Index, Signature = ByteString.CopyFrom(signed) });
                }
                _confirmed.TrySetResult([.. _confirmations]);
            }
        }
        var response = new ConfirmSurvivorsResponse();
        response.Signatures.AddRange(await _confirmed.Task.WaitAsync(cancellationToken));
        return response;
    }

    /// <summary>Keeps the revealed shares; once every edge that uploaded revealed, the sybils reveal theirs and the sum is unmasked.</summary>
    public void Reveal(string client, UnmaskRequest request)
    {
        int index = _indices[client];
        lock (_lock)
        {
            Reveals.Add((index, request.Clone()));
            try
            {
                _server.ReceiveUnmaskResponse(SecAggWire.FromRequest(index, request));
                if (Reveals.Count == _uploaded.Count)
                {
                    IReadOnlyDictionary<int, UploadMaskedInputResponse> survivors = _survivors.Task.Result;
                    foreach (Sybil sybil in _sybils.Values)
                    {
                        _server.ReceiveUnmaskResponse(sybil.Session.ReceiveUnmaskRequest(SecAggWire.FromResponse(sybil.Index, survivors[sybil.Index])));
                    }
                    _sum.TrySetResult(_server.Unmask());
                }
            }
            catch (SecureAggregationException ex)
            {
                _sum.TrySetException(ex);
            }
        }
    }

    public void Dispose()
    {
        _server.Dispose();
        foreach (Sybil sybil in _sybils.Values)
        {
            sybil.Session.Dispose();
            sybil.Identity.Dispose();
        }
    }

    private sealed record Sybil(EdgeIdentity Identity, ClientSession Session, int Index);
}
