using Federated.Aggregation.Privacy;
using Federated.Coordinator.Audit;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.Security;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Services;

/// <summary>
/// The admin service behind the CLI. Budgets, the ledger, the audit trail and the client list are served
/// from the state store; run control is delegated to the <see cref="RunOrchestrator"/>, exports to the <see cref="RunExporter"/>.
/// </summary>
internal sealed class AdminGrpcService(
    CoordinatorState state, RunOrchestrator orchestrator, RunExporter exporter, ILogger<AdminGrpcService> logger)
    : AdminService.AdminServiceBase
{
    private const int MaxAbortReasonLength = 256;

    private static readonly string s_productAdjacency = PrivacyUnitNames.Name(PrivacyUnitNames.ProductAdjacency);

    /// <summary>Bytes per ExportChunk (the proto allows at most 1 MiB).</summary>
    public const int ExportChunkBytes = 1 << 20;

    public override Task<StartRunResponse> StartRun(StartRunRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        RunPlan plan = request.Plan ?? throw new RpcException(new Status(StatusCode.InvalidArgument, "plan is required"));
        AcceptedRun run = orchestrator.Start(plan, caller.Name);
        (int online, int needed) = orchestrator.Readiness(run);
        return Task.FromResult(new StartRunResponse
        {
            ClientsOnline = (uint)online,
            ClientsNeeded = (uint)needed,
            RunId = run.RunId,
            PlannedEpsilon = run.PlannedEpsilon,
            NoiseMultiplier = run.NoiseMultiplier,
            PrivacyUnit = run.Privacy.PrivacyUnit,
            Adjacency = run.Privacy.AdjacencyName,
            EpsilonReserved = run.Balance?.Reserved ?? 0,
        });
    }

    public override Task<RunStatus> GetRunStatus(GetRunStatusRequest request, ServerCallContext context) =>
        Task.FromResult(Status(request.RunId) ?? throw UnknownRun(request.RunId));

    public override async Task WatchRun(WatchRunRequest request, IServerStreamWriter<RunStatus> responseStream, ServerCallContext context)
    {
        _ = Status(request.RunId) ?? throw UnknownRun(request.RunId);
        RunStatus? sent = null;
        while (true)
        {
            // The change signal is taken before the status is read, so a change in between is never missed; the
            // orchestrator signals run changes and every stage change and report inside a round.
            Task changed = orchestrator.WaitForChangeAsync(request.RunId, context.CancellationToken);
            RunStatus status = Status(request.RunId)!;
            RunStatus comparable = status.Clone();
            comparable.UpdatedAt = null;
            if (!comparable.Equals(sent))
            {
                await responseStream.WriteAsync(status, context.CancellationToken);
                sent = comparable;
            }
            // A run this process does not drive (only in the state store) never changes here: its record is all there is.
            if (status.State is RunState.Completed or RunState.Aborted or RunState.Failed || !orchestrator.Drives(request.RunId))
            {
                return;
            }
            await changed;
        }
    }

    /// <summary>The orchestrator's view: live runs with the round in progress's stage and reports, ended ones from the state file.</summary>
    private RunStatus? Status(string runId) => orchestrator.Status(runId);

    public override async Task<AbortRunResponse> AbortRun(AbortRunRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        if (request.Reason.Length > MaxAbortReasonLength)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"reason has {request.Reason.Length} characters; at most {MaxAbortReasonLength} are allowed"));
        }
        return new AbortRunResponse { Status = await orchestrator.AbortAsync(request.RunId, request.Reason, caller.Name) };
    }

    public override async Task ExportRun(ExportRunRequest request, IServerStreamWriter<ExportChunk> responseStream, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        try
        {
            RunExporter.ValidateRunId(request.RunId);
        }
        catch (ArgumentException ex)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, ex.Message.Split(" (Parameter", 2)[0]));
        }
        // Exported to a private scratch folder, streamed, then deleted: the coordinator keeps no second copy.
        string directory = Path.Combine(Path.GetTempPath(), "federated-export-" + Guid.NewGuid().ToString("N"));
        try
        {
            RunExportSummary summary = await Task.Run(() => exporter.Export(request.RunId, directory), context.CancellationToken);
            state.Audit.Append(caller.Name, "run.export", new Dictionary<string, string>
            {
                ["run_id"] = summary.RunId,
                ["adapter_sha256"] = summary.AdapterSha256,
                ["rounds_released"] = summary.RoundsReleased.ToString(System.Globalization.CultureInfo.InvariantCulture),
            });
            byte[] buffer = new byte[ExportChunkBytes];
            ulong total = (ulong)summary.Files.Sum(file => new FileInfo(Path.Combine(directory, file)).Length);
            foreach (string file in summary.Files)
            {
                await using FileStream stream = File.OpenRead(Path.Combine(directory, file));
                using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
                long offset = 0;
                while (true)
                {
                    int read = await stream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, context.CancellationToken);
                    hash.AppendData(buffer, 0, read);
                    bool last = read < buffer.Length || stream.Position == stream.Length;
                    var chunk = new ExportChunk { FileName = file, Offset = (ulong)offset, Data = ByteString.CopyFrom(buffer, 0, read), TotalBytes = total };
                    if (last)
                    {
                        chunk.Sha256 = Convert.ToHexStringLower(hash.GetHashAndReset());
                    }
                    await responseStream.WriteAsync(chunk, context.CancellationToken);
                    offset += read;
                    if (last)
                    {
                        break;
                    }
                }
            }
        }
        finally
        {
            if (Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true);
            }
        }
    }

    private const int MaxPopulationLength = 64;
    private const int DefaultAuditLimit = 1000;
    private const int MaxAuditLimit = 10_000;

    public override Task<ListClientsResponse> ListClients(ListClientsRequest request, ServerCallContext context)
    {
        TimeSpan? window = request.SeenWithinSeconds == 0 ? null : TimeSpan.FromSeconds(request.SeenWithinSeconds);
        var response = new ListClientsResponse();
        IReadOnlyDictionary<string, ClientPrivacy> privacy = state.Clients.Privacy();
        foreach (ClientRecord client in state.Clients.List(window))
        {
            ClientPrivacy? own = privacy.GetValueOrDefault(client.ClientId);
            response.Clients.Add(new ClientInfo
            {
                ClientId = client.ClientId,
                RegisteredAt = Timestamp.FromDateTimeOffset(client.RegisteredAt),
                LastSeenAt = Timestamp.FromDateTimeOffset(client.LastSeenAt),
                ClientVersion = client.ClientVersion,
                Available = client.Available,
                RoundsParticipated = (uint)client.RoundsParticipated,
                CertificateSha256 = client.CertificateSha256,
                Epsilon = own?.Epsilon ?? 0,
                Delta = own?.Delta ?? 0,
                PrivacyUnit = PrivacyUnitNames.Client,
                Adjacency = s_productAdjacency,
                Population = client.Population ?? "",
            });
        }
        return Task.FromResult(response);
    }

    public override Task<Budget> SetBudget(SetBudgetRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        string population = Population(request.Population);
        if (!double.IsFinite(request.Epsilon) || request.Epsilon <= 0)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"epsilon {request.Epsilon} is invalid: it must be a finite number > 0"));
        }
        if (!double.IsFinite(request.Delta) || request.Delta <= 0 || request.Delta >= 1)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"delta {request.Delta} is invalid: it must be in (0, 1)"));
        }
        BudgetRecord budget = state.Budgets.Set(population, request.Epsilon, request.Delta, caller.Name);
        CoordinatorLog.BudgetSet(logger, population, request.Epsilon, request.Delta, caller.Name);
        return Task.FromResult(ToMessage(budget));
    }

    public override Task<Budget> GetBudget(GetBudgetRequest request, ServerCallContext context)
    {
        string population = Population(request.Population);
        BudgetRecord budget = state.Budgets.Get(population)
            ?? throw new RpcException(new Status(StatusCode.NotFound, $"no budget is set for population '{population}'; an officer sets one with 'budget set'"));
        return Task.FromResult(ToMessage(budget));
    }

    public override Task<GetLedgerResponse> GetLedger(GetLedgerRequest request, ServerCallContext context)
    {
        var response = new GetLedgerResponse();
        foreach (LedgerRecord entry in state.Ledger.List(request.RunId, request.Population))
        {
            response.Entries.Add(new LedgerEntry
            {
                Sequence = (ulong)entry.Sequence,
                RunId = entry.RunId,
                Round = (uint)entry.Round,
                Population = entry.Population,
                EpsilonAfter = entry.EpsilonAfter,
                EpsilonDelta = entry.EpsilonDelta,
                Delta = entry.Delta,
                Mechanism = (NoiseMechanism)entry.Mechanism,
                NoiseMultiplier = entry.NoiseMultiplier,
                ClipNorm = entry.ClipNorm,
                Participants = (uint)entry.Participants,
                ChargedAt = Timestamp.FromDateTimeOffset(entry.ChargedAt),
                PrivacyUnit = PrivacyUnitNames.Client,
                // Charges recorded before the relation was stored were priced for zero-out.
                Adjacency = entry.Adjacency ?? PrivacyUnitNames.Name(Aggregation.Privacy.Adjacency.ZeroOut),
            });
        }
        return Task.FromResult(response);
    }

    public override Task<GetAuditResponse> GetAudit(GetAuditRequest request, ServerCallContext context)
    {
        if (request.Limit > MaxAuditLimit)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"limit {request.Limit} is invalid: use 1..{MaxAuditLimit} (0 = {DefaultAuditLimit})"));
        }
        long from = request.FromSequence == 0 ? 1 : (long)Math.Min(request.FromSequence, long.MaxValue);
        int limit = request.Limit == 0 ? DefaultAuditLimit : (int)request.Limit;
        (IReadOnlyList<AuditRecord> entries, AuditHead? head) = state.Audit.Read(from, limit);
        var response = new GetAuditResponse();
        foreach (AuditRecord entry in entries)
        {
            response.Entries.Add(new AuditEntry { Sequence = (ulong)entry.Sequence, CanonicalJson = entry.CanonicalJson, Hash = entry.Hash });
        }
        if (head is not null)
        {
            response.HeadSequence = (ulong)head.Sequence;
            response.HeadHash = head.Hash;
            response.HeadSignature = ByteString.CopyFrom(head.Signature);
        }
        return Task.FromResult(response);
    }

    private static RpcException UnknownRun(string runId) =>
        new(new Status(StatusCode.NotFound, $"run '{runId}' is not known to this coordinator"));

    private static string Population(string value)
    {
        if (value.Length == 0)
        {
            return CoordinatorState.DefaultPopulation;
        }
        if (value.Length > MaxPopulationLength || !value.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"population '{value}' is invalid: use 1-{MaxPopulationLength} characters of A-Z a-z 0-9 . _ -"));
        }
        return value;
    }

    private static Budget ToMessage(BudgetRecord budget) => new()
    {
        Population = budget.Population,
        Epsilon = budget.Epsilon,
        Delta = budget.Delta,
        EpsilonSpent = budget.EpsilonSpent,
        EpsilonReserved = budget.EpsilonReserved,
        EpsilonRemaining = budget.EpsilonRemaining,
        PrivacyUnit = PrivacyUnitNames.Client,
        Adjacency = s_productAdjacency,
        SetBy = budget.SetBy,
        SetAt = Timestamp.FromDateTimeOffset(budget.SetAt),
    };
}
