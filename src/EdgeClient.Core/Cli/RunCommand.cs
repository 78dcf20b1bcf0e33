using System.ComponentModel;
using System.Security.Cryptography;
using Federated.Aggregation.SecureAggregation;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Federated.Training.Trainer;
using Federated.Transport;
using Grpc.Core;
using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>
/// `edge-client run`: takes part in federated rounds until Ctrl+C. Connects with mutual TLS, registers, waits for
/// invitations, and hands each one to an <see cref="EdgeRoundWorker"/> (policy check, local training, DP encoding,
/// local ledger charge, SecAgg+ upload). Network errors are ridden out with backoff; the private data never leaves.
/// </summary>
internal sealed class RunCommand : AsyncCommand<RunCommand.Settings>
{
    private static readonly TimeSpan s_maximumBackoff = TimeSpan.FromMinutes(2);

    /// <summary>Retries of one call before a session gives up on a coordinator when others are listed (a blip, not an outage).</summary>
    private const int FailoverRetries = 2;

    /// <summary>TEST ONLY: see <see cref="StageHoldHook.Variable"/>.</summary>
    public const string HoldBeforeStageVariable = StageHoldHook.Variable;

    public sealed class Settings : CommandSettings
    {
        [CommandOption("--coordinator <URL>")]
        [Description("The coordinator's https address, e.g. https://coordinator.example:7443; or a leader and its standbys separated by commas (https://a:7443,https://b:7443), tried in turn: the client stays with the one that serves rounds and moves to the next when it fails.")]
        public string? Coordinator { get; init; }

        [CommandOption("--identity <FILE.pfx>")]
        [Description("This client's PKCS#12 identity from 'coordinator pki issue'; policy.json and the local ledger live beside it.")]
        public string? Identity { get; init; }

        [CommandOption("--ca <FILE>")]
        [Description("The federation CA certificate (ca.crt); the coordinator's certificate must chain to it.")]
        public string? Ca { get; init; }

        [CommandOption("--data <PATH>")]
        [Description("Private JSONL training data (never sent anywhere).")]
        public string? Data { get; init; }

        [CommandOption("--model <DIR>")]
        [Description("Local copy of the base model folder (config.json, weights, tokenizer.json).")]
        public string? Model { get; init; }

        [CommandOption("--device <D>")]
        [Description("auto, cpu or cuda (default: auto, CUDA when available).")]
        public string Device { get; init; } = "auto";

        [CommandOption("--password-file <FILE>")]
        [Description("File holding the identity's PKCS#12 password (default: none).")]
        public string? PasswordFile { get; init; }

        [CommandOption("--json")]
        [Description("One JSON object per line on stdout for each state change (connecting, registered, waiting, invited, declined, training, charged, uploading, round_done, retrying) and a final stopped or failed object.")]
        public bool Json { get; init; }

        [CommandOption("--skip-malformed")]
        [Description("Skip data lines that are not usable examples (each is reported on stderr) instead of stopping at the first, as train does.")]
        public bool SkipMalformed { get; init; }

        [CommandOption("--metrics-port <N>")]
        [Description("Serve Prometheus metrics over plain HTTP at /metrics on this port (default: none). Rounds, declines, step time, tokens/s and this machine's epsilon; never data.")]
        public int? MetricsPort { get; init; }

        [CommandOption("--metrics-address <IP>")]
        [Description("Address of the metrics endpoint (default: 127.0.0.1, this machine only).")]
        public string MetricsAddress { get; init; } = "127.0.0.1";

        public override Spectre.Console.ValidationResult Validate()
        {
            if (MetricsPort is < 1 or > 65535)
            {
                return Spectre.Console.ValidationResult.Error($"--metrics-port {MetricsPort} is not a port in 1..65535");
            }
            if (!System.Net.IPAddress.TryParse(MetricsAddress, out _))
            {
                return Spectre.Console.ValidationResult.Error($"--metrics-address '{MetricsAddress}' is not an IP address");
            }
            if (string.IsNullOrWhiteSpace(Coordinator) || string.IsNullOrWhiteSpace(Identity) || string.IsNullOrWhiteSpace(Ca)
                || string.IsNullOrWhiteSpace(Data) || string.IsNullOrWhiteSpace(Model))
            {
                return Spectre.Console.ValidationResult.Error("--coordinator, --identity, --ca, --data and --model are required");
            }
            if (!Coordinator.Contains(','))
            {
                if (!Uri.TryCreate(Coordinator, UriKind.Absolute, out Uri? uri) || uri.Scheme != Uri.UriSchemeHttps)
                {
                    return Spectre.Console.ValidationResult.Error($"--coordinator '{Coordinator}' is not an https:// address");
                }
            }
            else if (!CoordinatorAddressList.TryParse(Coordinator, out _, out string error))
            {
                return Spectre.Console.ValidationResult.Error(error);
            }
            if (!TrainingDevice.Choices.Contains(Device.ToLowerInvariant()))
            {
                return Spectre.Console.ValidationResult.Error($"--device '{Device}' is not one of {string.Join(", ", TrainingDevice.Choices)}");
            }
            return Spectre.Console.ValidationResult.Success();
        }

        /// <summary>The coordinators --coordinator names (checked by <see cref="Validate"/>).</summary>
        public IReadOnlyList<Uri> Coordinators() =>
            CoordinatorAddressList.TryParse(Coordinator, out CoordinatorAddressList list, out string error) ? list.Addresses : throw new UsageException(error);
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var output = new EdgeRunOutput(settings.Json);
        try
        {
            return await RunAsync(settings, output, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested && settings.Json)
        {
            output.Report(new EdgeEvent(EdgeEvent.Stopped, "stopped"));
            throw;
        }
        catch (Exception ex) when (settings.Json)
        {
            // The final object says why; the one stderr line still comes from the runner, with its exit code.
            output.Report(new EdgeEvent(EdgeEvent.Failed, UserMessage.Of(ex)));
            throw;
        }
    }

    private static async Task<int> RunAsync(Settings settings, EdgeRunOutput output, CancellationToken cancellationToken)
    {
        string identityPath = Path.GetFullPath(settings.Identity!);
        string home = Path.GetDirectoryName(identityPath)!;
        string policyPath = Path.Combine(home, LocalPolicy.FileName);
        if (!File.Exists(identityPath))
        {
            throw new UsageException($"--identity: file not found: {identityPath}");
        }
        if (!File.Exists(settings.Ca))
        {
            throw new UsageException($"--ca: file not found: {settings.Ca}");
        }
        if (!File.Exists(policyPath))
        {
            throw new UsageException($"no {LocalPolicy.FileName} beside the identity ({policyPath}): the data holder's policy is required to take part in rounds");
        }
        LocalPolicy policy;
        try
        {
            policy = LocalPolicy.Load(policyPath);
        }
        catch (PolicyFileException ex)
        {
            throw new UsageException(ex.Message);
        }

        LlamaConfig config = LocalModelInputs.RequireConfig(settings.Model!);
        IReadOnlyList<TokenBatch> batches;
        RecordLevelData records;
        using (HuggingFaceTokenizer tokenizer = LocalModelInputs.RequireTokenizer(settings.Model!, config))
        {
            var options = new DatasetOptions
            {
                MaxLength = LocalModelInputs.SequenceLength(null, config),
                MalformedLines = settings.SkipMalformed ? MalformedLinePolicy.Skip : MalformedLinePolicy.Stop,
            };
            JsonlDataset dataset = LocalModelInputs.RequireData(settings.Data!, tokenizer, options, cancellationToken);
            foreach (MalformedLine skipped in dataset.SkippedLines)
            {
                output.Report(new EdgeEvent(EdgeEvent.Skipped, $"skipped {skipped}"));
            }
            batches = TokenBatcher.Batches(dataset.Examples, 4, tokenizer.PadId, shuffleSeed: BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8)));
            // The same records, one example each, for rounds whose plan asks for DP-SGD (privacy_unit record or both).
            records = new RecordLevelData(dataset.Examples, tokenizer.PadId);
        }
        var device = LocalModelInputs.RequireDevice(settings.Device);
        using LlamaForCausalLM model = LocalModelInputs.RequireModel(settings.Model!, device);

        string? password = PasswordFile.Read(settings.PasswordFile);
        using EdgeIdentity identity = LoadIdentity(identityPath, settings.Ca!, password);
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(Path.Combine(home, LocalPrivacyLedger.FileName));
        // Beside the ledger, and for the same reason: what this machine has seen (the newest CRL) must outlive a restart.
        EdgeRevocationList revocation = OpenRevocation(Path.Combine(home, EdgeRevocationList.FileName), identity);
        var gate = new LocalPolicyGate(policy, ledger, TimeProvider.System);
        using OpenTelemetry.Metrics.MeterProvider? exporter = Telemetry.EdgeTelemetry.Start(settings.MetricsPort, settings.MetricsAddress);
        using var metrics = new Telemetry.EdgeMetrics();
        metrics.Epsilon(ledger.Spent(policy.Delta).Epsilon, ledger.WorstCaseEpsilon(policy.Delta), ledger.RecordCharges.Count == 0 ? double.NaN : ledger.RecordEpsilon(policy.Delta));
        if (settings.MetricsPort is { } metricsPort)
        {
            Console.Error.WriteLine($"edge-client: metrics at http://{settings.MetricsAddress}:{metricsPort}/metrics");
        }
        var registration = new RegisterRequest { ClientVersion = typeof(RunCommand).Assembly.GetName().Version?.ToString() ?? "0", Device = device.type.ToString().ToLowerInvariant() };
        output.Report(new EdgeEvent(EdgeEvent.Connecting, $"{identity.Name} joining {settings.Coordinator} (policy {policyPath}); Ctrl+C to stop") { Name = identity.Name });

        // Each state change also goes to the service manager (Type=notify): READY=1 once registered, STATUS= otherwise.
        void Report(EdgeEvent change)
        {
            output.Report(change);
            if (change.Event == EdgeEvent.Registered)
            {
                ServiceNotifier.Ready(change.Text);
            }
            else
            {
                ServiceNotifier.Status(change.Text);
            }
        }

        Func<RoundStage, CancellationToken, Task>? holdBeforeStage = StageHoldHook.FromEnvironment();
        IReadOnlyList<Uri> coordinators = settings.Coordinators();

        // One connection to one coordinator, for as long as it lasts: register, heartbeat, take part in rounds. It ends
        // only by an exception; the ones retrying cannot fix (a refused certificate or identity) come out permanent.
        async Task SessionAsync(Uri coordinator, Action served, CancellationToken ct)
        {
            // With one coordinator the messages name it as it was typed, as they always have.
            string address = coordinators.Count == 1 ? settings.Coordinator! : coordinator.OriginalString;
            string? refused = null;
            var options = new ConnectionOptions
            {
                ServerRefused = reason => refused ??= reason,
                Retrying = (detail, wait) => output.Report(new EdgeEvent(EdgeEvent.Retrying,
                    $"coordinator {address} unreachable ({detail}); retrying in {wait.TotalSeconds:0.#} s") { RetryInSeconds = wait.TotalSeconds }),
            };
            if (coordinators.Count > 1)
            {
                // A standby is never going to answer: after a short blip's worth of retries, the next coordinator is tried.
                options = options with { MaxRetries = FailoverRetries };
            }
            using var connection = new CoordinatorConnection(coordinator, identity, options, revocation: revocation);
            var worker = new EdgeRoundWorker(connection, identity.Name, model, batches, gate)
            {
                Report = Report,
                BeforeStage = holdBeforeStage,
                Progress = metrics.Step,
                Records = records,
            };
            try
            {
                await new EdgeSession(connection, registration)
                {
                    Report = change =>
                    {
                        if (change.Event == EdgeEvent.Registered)
                        {
                            // Registered: this coordinator serves rounds. Said before "registered" so a switch reads in order.
                            served();
                        }
                        Report(change);
                    },
                }.RunAsync(async (invitation, roundToken) =>
                {
                    try
                    {
                        metrics.Round(await worker.HandleAsync(invitation, roundToken));
                        metrics.Epsilon(ledger.Spent(policy.Delta).Epsilon, ledger.WorstCaseEpsilon(policy.Delta), ledger.RecordCharges.Count == 0 ? double.NaN : ledger.RecordEpsilon(policy.Delta));
                    }
                    catch (Exception ex) when ((ex is RpcException or InvalidDataException or InvalidOperationException or SecureAggregationException) && !roundToken.IsCancellationRequested)
                    {
                        metrics.RoundFailed();
                        // One round going wrong (a dropped stage, a bad manifest) must not end the client.
                        output.Report(new EdgeEvent(EdgeEvent.RoundFailed, $"round {invitation.Round} of {invitation.RunId} ended without this client: {UserMessage.Of(ex)}")
                        {
                            RunId = invitation.RunId,
                            Round = invitation.Round,
                        });
                    }
                }, ct);
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
            {
                // Ctrl+C during a call: the same clean exit as between calls.
                throw new OperationCanceledException("interrupted", ex, ct);
            }
            catch (RpcException ex) when (refused is not null && ex.StatusCode is StatusCode.Unavailable or StatusCode.Internal or StatusCode.Unknown)
            {
                // A certificate this client refuses is a permanent mistake (a wrong --ca or --coordinator, a foreign or
                // revoked coordinator): it stops the client with one line instead of being retried forever, and a list
                // of coordinators does not change that: a wrong CA is a mistake, not an outage.
                throw new PermanentConnectionException(
                    $"the coordinator at {address} presented a certificate this client refuses ({refused}); check --ca (the federation's ca.crt) and --coordinator", ex);
            }
            catch (RpcException ex) when (ex.StatusCode is StatusCode.PermissionDenied or StatusCode.Unauthenticated)
            {
                throw new PermanentConnectionException(
                    $"the coordinator refused this identity ({ex.Status.Detail}); check --identity (a client identity of this federation, not revoked or expired)", ex);
            }
        }

        if (coordinators.Count > 1)
        {
            var failover = new CoordinatorFailover(coordinators, TimeProvider.System)
            {
                Switched = (serving, from) => output.Report(new EdgeEvent(EdgeEvent.Switched,
                    $"coordinator {serving.OriginalString} serves rounds; switched from {from.OriginalString}")
                {
                    Coordinator = serving.OriginalString,
                    SwitchedFrom = from.OriginalString,
                }),
                MovingOn = (failed, why, next, wait) => output.Report(new EdgeEvent(EdgeEvent.Retrying,
                    $"coordinator {failed.OriginalString} unavailable ({why}); trying {next.OriginalString} in {wait.TotalSeconds:0.#} s")
                {
                    Coordinator = failed.OriginalString,
                    RetryInSeconds = wait.TotalSeconds,
                }),
            };
            await failover.RunAsync(SessionAsync, NotServingReason, cancellationToken);
            return CliRunner.Ok;
        }

        TimeSpan backoff = TimeSpan.FromSeconds(1);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                await SessionAsync(coordinators[0], () => { }, cancellationToken);
            }
            catch (CoordinatorRefusedException ex)
            {
                // Expired or revoked since the handshake: this connection is dropped; a new one re-checks the certificate at its handshake.
                output.Report(new EdgeEvent(EdgeEvent.Retrying, $"{ex.Rule}: {ex.Message}; reconnecting in {backoff.TotalSeconds:F0} s") { Rule = ex.Rule, RetryInSeconds = backoff.TotalSeconds });
                await Task.Delay(backoff, cancellationToken);
                backoff = TimeSpan.FromTicks(Math.Min(s_maximumBackoff.Ticks, backoff.Ticks * 2));
                continue;
            }
            catch (RpcException ex) when (ex.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Internal or StatusCode.Unknown)
            {
                output.Report(new EdgeEvent(EdgeEvent.Retrying, $"coordinator unreachable ({UserMessage.Cause(ex)}); retrying in {backoff.TotalSeconds:F0} s") { RetryInSeconds = backoff.TotalSeconds });
                await Task.Delay(backoff, cancellationToken);
                backoff = TimeSpan.FromTicks(Math.Min(s_maximumBackoff.Ticks, backoff.Ticks * 2));
                continue;
            }
        }
    }

    /// <summary>
    /// With several coordinators, why a session's failure means "try the next one": it is unreachable or failing
    /// (UNAVAILABLE, a deadline, a broken stream), it says it is not the leader (UNAVAILABLE or FAILED_PRECONDITION from
    /// a standby, whose detail names the leader), or its certificate was revoked or expired since the handshake. Null
    /// for everything else, which ends the run as it does with one coordinator.
    /// </summary>
    internal static string? NotServingReason(Exception exception) => exception switch
    {
        PermanentConnectionException => null,
        CoordinatorRefusedException refused => $"{refused.Rule}: {refused.Message}",
        RpcException { StatusCode: StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Internal or StatusCode.Unknown } rpc => UserMessage.Cause(rpc),
        RpcException { StatusCode: StatusCode.FailedPrecondition } rpc => UserMessage.Plain(rpc.Status.Detail),
        _ => null,
    };

    private static EdgeRevocationList OpenRevocation(string path, EdgeIdentity identity)
    {
        try
        {
            return EdgeRevocationList.Open(path, identity.Ca);
        }
        catch (CryptographicException ex)
        {
            throw new UsageException(ex.Message);
        }
    }

    private static EdgeIdentity LoadIdentity(string pfx, string ca, string? password)
    {
        try
        {
            return EdgeIdentity.Load(pfx, ca, password);
        }
        catch (CryptographicException ex)
        {
            throw new UsageException($"--identity: cannot read {pfx}: {ex.Message}");
        }
    }
}
