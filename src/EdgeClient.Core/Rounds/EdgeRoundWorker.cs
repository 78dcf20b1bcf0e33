using System.Security.Cryptography;
using Federated.Aggregation.Privacy;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Provenance;
using Federated.Training.Trainer;
using Federated.Wire;

namespace Federated.EdgeClient.Rounds;

/// <summary>How one invitation ended on this machine.</summary>
public sealed record RoundWorkResult(string RunId, uint Round, bool Participated, string? DeclinedRule, string Message, double FirstLoss, double LastLoss, ulong UploadedBytes);

/// <summary>
/// One edge client's part of a federated round: verify the signed manifest and the CA-signed CRL it carries (the
/// coordinator's certificate and the adapter signer are checked against the newest CRL seen), hold it against the local policy
/// (declining with the rule that refused), download and verify the global adapter, train lora_B locally on the
/// private batches, clip, rotate, scale, round and add Skellam noise to the delta (seeded from the manifest; no noise
/// under the central Gaussian mechanism, where the coordinator noises the sum and the local policy may refuse that),
/// charge the local ledger, then mask and upload through SecAgg+. Only the masked vector leaves the machine.
/// The base model stays loaded across rounds; several workers can share a process (tests, simulation).
/// </summary>
public sealed class EdgeRoundWorker(
    CoordinatorConnection connection,
    string identityName,
    LlamaForCausalLM model,
    IReadOnlyList<TokenBatch> batches,
    LocalPolicyGate gate)
{
    private const double ScaleRelativeTolerance = 1e-9;
    private const int MaxDetailLength = 256;

    private SecAggParticipant? _participant;

    /// <summary>Reports each state change of a round (never data or update values).</summary>
    public Action<EdgeEvent>? Report { get; init; }

    /// <summary>Each local training step, in order on the training thread (the metrics' step time and throughput).</summary>
    public Action<TrainingProgress>? Progress { get; init; }

    /// <summary>
    /// This holder's records, one example each (not packed), and the tokenizer's pad id: what DP-SGD samples from when a
    /// manifest says privacy_unit record or both. Without them such a round is declined (record_parameters).
    /// </summary>
    public RecordLevelData? Records { get; init; }

    /// <summary>Runs before each SecAgg+ stage message (see <see cref="SecAggParticipant.BeforeStage"/>); for fault-injection tests.</summary>
    public Func<RoundStage, CancellationToken, Task>? BeforeStage { get; init; }

    private SecAggParticipant Participant => _participant ??= new SecAggParticipant(connection, identityName) { BeforeStage = BeforeStage };

    public async Task<RoundWorkResult> HandleAsync(RoundRef invitation, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(invitation);
        RoundManifest manifest = await Participant.FetchManifestAsync(invitation, cancellationToken);
        RoundRef round = manifest.Round;
        // The CRL counts only under the CA's signature and never goes back; it is taken before anything else in the manifest.
        if (connection.Revocation.Accept(manifest.CrlDer.Span) is { } crl)
        {
            return await DeclineAsync(round, DeclineReason.InvalidManifest, crl.Rule, crl.Message, cancellationToken);
        }
        if (connection.CoordinatorRefusal() is { } coordinatorRefused)
        {
            // The coordinator's own certificate is revoked (or expired since the handshake): nothing more is sent to it, not even a decline.
            Report?.Invoke(new EdgeEvent(EdgeEvent.Declined, $"round {round.Round} of {round.RunId}: refused ({coordinatorRefused.Rule}): {coordinatorRefused.Message}")
            {
                RunId = round.RunId,
                Round = round.Round,
                Rule = coordinatorRefused.Rule,
            });
            return new RoundWorkResult(round.RunId, round.Round, false, coordinatorRefused.Rule, coordinatorRefused.Message, double.NaN, double.NaN, 0);
        }
        // Before anything is downloaded or trained: a round this machine already paid for (or an earlier one) is a replay.
        if (gate.CheckReplay(round.RunId, round.Round) is { } replay)
        {
            return await DeclineAsync(round, DeclineReason.ReplayedRound, replay.Rule!, replay.Message, cancellationToken, replay.LastChargedRound);
        }
        if (manifest.Dp is null || manifest.GlobalAdapter is null || manifest.LocalSteps is 0 or > 100_000
            || !(manifest.LearningRate is > 0 and < 1) || !(manifest.Dp.ClipNorm > 0) || !(manifest.Dp.NoiseMultiplier > 0)
            || manifest.Dp.RotationSeed.Length != 32)
        {
            return await DeclineAsync(round, DeclineReason.Policy, "manifest", "the manifest lacks DP parameters, the adapter or valid training settings", cancellationToken);
        }
        if (manifest.Dp.Mechanism is not (NoiseMechanism.DistributedSkellam or NoiseMechanism.CentralGaussian))
        {
            return await DeclineAsync(round, DeclineReason.Policy, "allowed_mechanisms", $"mechanism {manifest.Dp.Mechanism} is not implemented by this client", cancellationToken);
        }
        if (manifest.Dp.PrivacyUnit is not (PrivacyUnit.Unspecified or PrivacyUnit.Client or PrivacyUnit.Record or PrivacyUnit.Both))
        {
            return await DeclineAsync(round, DeclineReason.InvalidManifest, "manifest", $"privacy_unit {manifest.Dp.PrivacyUnit} is not known to this client", cancellationToken);
        }
        bool clientLevel = PrivacyUnitWire.HasClientLevel(manifest.Dp.PrivacyUnit);
        if (!clientLevel && manifest.Dp.Mechanism != NoiseMechanism.CentralGaussian)
        {
            // A record-only round's encoding adds no noise of this client's own: only the central encoding has none.
            return await DeclineAsync(round, DeclineReason.InvalidManifest, "manifest", "a record-only round must use the central encoding (no client noise share)", cancellationToken);
        }
        // Priced BEFORE training with this machine's own record count; the gate declines what it cannot price.
        RecordLevelRound? recordWork = PrivacyUnitWire.HasRecordLevel(manifest.Dp.PrivacyUnit)
            ? new RecordLevelRound(manifest.Dp.RecordNoiseMultiplier, manifest.Dp.RecordMaxGradNorm, (int)Math.Min(manifest.Dp.RecordExpectedBatch, int.MaxValue),
                (int)manifest.LocalSteps, Records?.Examples.Count ?? 0)
            : null;
        // Central DP: this client clips and rounds but adds no noise; the coordinator noises the sum. The policy decides whether that is acceptable.
        bool central = manifest.Dp.Mechanism == NoiseMechanism.CentralGaussian;

        byte[] content;
        try
        {
            content = await AdapterDownload.DownloadAsync(connection, manifest.GlobalAdapter, cancellationToken);
        }
        catch (AdapterSignatureException ex)
        {
            // Nothing is loaded or trained on an adapter this federation's coordinator did not sign byte for byte.
            return await DeclineAsync(round, DeclineReason.InvalidManifest, "adapter_signature", $"the global adapter was refused: {ex.Message}", cancellationToken);
        }
        catch (AdapterSignerRevokedException ex)
        {
            // Checked before anything is loaded: a revoked signer's adapter is as good as unsigned.
            return await DeclineAsync(round, DeclineReason.InvalidManifest, EdgeRevocationList.RevokedRule, $"the global adapter was refused: {ex.Message}", cancellationToken);
        }
        catch (InvalidDataException ex)
        {
            return await DeclineAsync(round, DeclineReason.InvalidManifest, "adapter_integrity", $"the global adapter was refused: {ex.Message}", cancellationToken);
        }
        GlobalAdapterContent? global = GlobalAdapterBlob.Read(content);
        // Locals of an async method live as long as it does; what the upload does not need is let go as soon as possible.
        content = [];
        LoraSettings settings = global.Settings;
        int d = checked((int)global.Tensors.OnlyB().ElementCount);
        // The scale is sized for the most clients the round may sum (the run's cap under Poisson sampling).
        uint maxClients = manifest.Dp.MaxClients == 0 ? manifest.Secagg.Participants : manifest.Dp.MaxClients;
        if (maxClients < manifest.Secagg.Participants || maxClients > 1_000_000)
        {
            return await DeclineAsync(round, DeclineReason.Policy, "manifest", $"max_clients {manifest.Dp.MaxClients} is below the round's {manifest.Secagg.Participants} participants or above 1000000", cancellationToken);
        }
        // The round's plan, recomputed here from the manifest: what the coordinator priced, and the encoding to use.
        PrivacyPlan privacy;
        try
        {
            privacy = PrivacyPlan.Create(ManifestPrivacy.Parameters(manifest, d));
        }
        catch (Exception ex) when (ex is ArgumentException or OverflowException)
        {
            return await DeclineAsync(round, DeclineReason.InvalidManifest, "manifest", $"the manifest's DP or SecAgg parameters are unusable: {ex.Message}", cancellationToken);
        }
        // The coordinator's scale and padded length must be what these parameters give, or the decode would be wrong.
        DSkellamPlan plan = privacy.Quantizer;
        if (Math.Abs(plan.Scale - manifest.Dp.Scale) > ScaleRelativeTolerance * plan.Scale || (ulong)plan.PaddedDimension != manifest.Secagg.VectorLength)
        {
            return await DeclineAsync(round, DeclineReason.Policy, "manifest", $"the manifest's scale {manifest.Dp.Scale} or vector length {manifest.Secagg.VectorLength} does not match the DP parameters (expected {plan.Scale}, {plan.PaddedDimension})", cancellationToken);
        }

        // The ledger prices the round with the same plan the coordinator charges: Skellam RDP for distributed noise, the
        // discrete Gaussian's for central noise, both at replace-one; sampling rate 1: the sample is public.
        var terms = new RoundTerms(round.RunId, round.Round, central ? NoiseMechanismKind.CentralGaussian : NoiseMechanismKind.DistributedSkellam, manifest.Dp.NoiseMultiplier,
            SamplingRate: 1.0, settings.Targets, settings.Rank, CertificateSha256(), (int)manifest.Secagg.Participants, (int)manifest.Secagg.Threshold, privacy.Parameters)
        {
            // The graph threshold is checked on its neighbourhood, the local minimum on the threshold the round was priced with.
            Neighbours = (int)manifest.Secagg.Neighbours,
            MinSurvivors = privacy.Parameters.Threshold,
            ClientLevel = clientLevel,
            Record = recordWork,
        };
        PolicyDecision decision = gate.Check(terms);
        if (!decision.Accepted)
        {
            DeclineReason reason = decision.Rule == LocalPolicyGate.ReplayedRoundRule ? DeclineReason.ReplayedRound
                : LocalPolicyGate.BudgetRules.Contains(decision.Rule!) ? DeclineReason.Budget : DeclineReason.Policy;
            return await DeclineAsync(round, reason, decision.Rule!, decision.Message, cancellationToken, decision.LastChargedRound);
        }

        if (model.Lora is not null)
        {
            model.RemoveLora();
        }
        PeftAdapter.Apply(settings, global.Tensors, model);
        global = null;
        Report?.Invoke(new EdgeEvent(EdgeEvent.Training, $"round {round.Round} of {round.RunId}: training {manifest.LocalSteps} steps")
        {
            RunId = round.RunId,
            Round = round.Round,
            Step = 0,
            Steps = (int)manifest.LocalSteps,
        });
        (float[]? delta, double firstLoss, double lastLoss) = await Task.Run(() => Train(manifest, recordWork, cancellationToken), cancellationToken);
        if (delta.Length != d)
        {
            throw new InvalidOperationException($"the trained delta has {delta.Length} values; the global lora_B has {d}");
        }

        double normBeforeClipping = double.NaN;
        ParticipationOutcome outcome = await Participant.ParticipateAsync(manifest, (m, _) =>
        {
            // The ledger is charged durably before anything derived from the data leaves the machine.
            PolicyDecision charge = gate.ChargeBeforeUpload(terms);
            if (!charge.Accepted)
            {
                throw new InvalidOperationException($"local policy refused the upload ({charge.Rule}): {charge.Message}");
            }
            Report?.Invoke(new EdgeEvent(EdgeEvent.Charged, $"round {round.Round} of {round.RunId}: charged the local ledger ({charge.Message})")
            {
                RunId = round.RunId,
                Round = round.Round,
                RunEpsilon = charge.RunEpsilon,
                LifetimeEpsilon = charge.LifetimeEpsilon,
                WorstCaseRunEpsilon = charge.WorstCaseRunEpsilon,
                Delta = charge.Delta,
            });
            Report?.Invoke(new EdgeEvent(EdgeEvent.Uploading, $"round {round.Round} of {round.RunId}: masking and uploading")
            {
                RunId = round.RunId,
                Round = round.Round,
            });
            DSkellamEncoding encoded = new DSkellamEncoder(plan, m.Dp.RotationSeed.Span).Encode(delta!);
            // The encoding is all the upload needs: the delta is not held while it runs.
            delta = null;
            normBeforeClipping = encoded.NormBeforeClipping;
            return Task.FromResult(encoded.Values);
        }, cancellationToken,
            // This holder's own record epsilon for the run, after the charge above: shown in the coordinator's run status, never charged there.
            recordWork is null ? null : () => gate.RecordEpsilonOf(round.RunId) is { Epsilon: > 0 } reported ? reported : null);
        if (outcome.RejectedPeers.Count > 0)
        {
            // A hostile (or broken) peer: its shares failed authentication here, so it was a dropout for this client.
            Report?.Invoke(new EdgeEvent("peers_rejected", $"round {round.Round} of {round.RunId}: rejected the share ciphertexts of participant(s) {string.Join(", ", outcome.RejectedPeers.Select(i => manifest.Participants.FirstOrDefault(p => p.Index == i)?.ClientId ?? i.ToString(System.Globalization.CultureInfo.InvariantCulture)))}; they were dropouts for this client")
            {
                RunId = round.RunId,
                Round = round.Round,
            });
        }
        // The norm stays in this machine's own log: it tells the data holder whether the clip norm bites.
        Report?.Invoke(new EdgeEvent(EdgeEvent.RoundDone, $"round {round.Round} of {round.RunId}: uploaded {outcome.UploadedBytes} masked bytes, loss {firstLoss:F4} -> {lastLoss:F4}, update norm {normBeforeClipping:F3} (clip {manifest.Dp.ClipNorm})")
        {
            RunId = round.RunId,
            Round = round.Round,
            UploadedBytes = outcome.UploadedBytes,
            FirstLoss = firstLoss,
            LastLoss = lastLoss,
        });
        return new RoundWorkResult(round.RunId, round.Round, true, null, decision.Message, firstLoss, lastLoss, outcome.UploadedBytes);
    }

    /// <summary>Local training from the applied global adapter; only the flat lora_B delta and the losses outlive it (not the before and after adapters).</summary>
    private (float[] Delta, double FirstLoss, double LastLoss) Train(RoundManifest manifest, RecordLevelRound? recordWork, CancellationToken cancellationToken)
    {
        int steps = checked((int)manifest.LocalSteps);
        // At most about ten lines per round in this machine's own log: step i/n and its loss (never sent anywhere).
        var progress = new StepLines(p =>
        {
            Progress?.Invoke(p);
            if (TrainingProgressLines.Shows(p.Step, p.TotalSteps))
            {
                Report?.Invoke(new EdgeEvent(EdgeEvent.Training, $"round {manifest.Round.Round} of {manifest.Round.RunId}: training step {p.Step}/{p.TotalSteps}, loss {p.Loss:F4}")
                {
                    RunId = manifest.Round.RunId,
                    Round = manifest.Round.Round,
                    Step = p.Step,
                    Steps = p.TotalSteps,
                    Loss = p.Loss,
                });
            }
        });
        var options = new TrainerOptions
        {
            Steps = steps,
            LearningRate = manifest.LearningRate,
            Seed = BitConverter.ToInt64(RandomNumberGenerator.GetBytes(8)) & long.MaxValue,
        };
        // Record or both: DP-SGD, the same path as edge-client train --privacy-unit record; the gate already charged its plan.
        TrainingResult trained = recordWork is null
            ? new LoraTrainer().Train(model, batches, options, progress, cancellationToken)
            : new LoraTrainer().TrainPrivate(model, Records!.Examples, Records.PadId, options, new DpSgdOptions
            {
                ExpectedBatchSize = recordWork.ExpectedBatch,
                NoiseMultiplier = recordWork.NoiseMultiplier,
                MaxGradNorm = recordWork.MaxGradNorm,
                Delta = manifest.Dp.Delta,
            }, progress, cancellationToken);
        if (trained.RecordEpsilon is { } recordEpsilon)
        {
            Report?.Invoke(new EdgeEvent(EdgeEvent.Training, $"round {manifest.Round.Round} of {manifest.Round.RunId}: DP-SGD record epsilon of this round alone {recordEpsilon:F4} at delta {manifest.Dp.Delta:G3}")
            {
                RunId = manifest.Round.RunId,
                Round = manifest.Round.Round,
            });
        }
        return (trained.FlatDelta(), trained.FirstLoss, trained.LastLoss);
    }

    private async Task<RoundWorkResult> DeclineAsync(RoundRef round, DeclineReason reason, string rule, string message, CancellationToken cancellationToken,
        long? lastChargedRound = null)
    {
        // The coordinator takes at most 256 characters of detail.
        string detail = $"{rule}: {message}";
        await Participant.DeclineAsync(round, reason, rule, detail.Length > MaxDetailLength ? detail[..MaxDetailLength] : detail, cancellationToken,
            (ulong)(lastChargedRound ?? 0));
        Report?.Invoke(new EdgeEvent(EdgeEvent.Declined, $"round {round.Round} of {round.RunId}: declined ({rule}): {message}")
        {
            RunId = round.RunId,
            Round = round.Round,
            Rule = rule,
        });
        return new RoundWorkResult(round.RunId, round.Round, false, rule, message, double.NaN, double.NaN, 0);
    }

    private string CertificateSha256() =>
        connection.ServerCertificate is { } certificate ? Convert.ToHexStringLower(SHA256.HashData(certificate.RawData)) : "";
}

/// <summary>Which training steps get a progress line: every tenth of the round and the last, so a round prints at most 11 whatever its length.</summary>
public static class TrainingProgressLines
{
    public const int LinesPerRound = 10;

    public static bool Shows(int step, int totalSteps)
    {
        int every = Math.Max(1, totalSteps / LinesPerRound);
        return step % every == 0 || step == totalSteps;
    }
}

/// <summary>A holder's records for DP-SGD: one tokenized example per record and the pad id batches are padded with.</summary>
public sealed record RecordLevelData(IReadOnlyList<TokenizedExample> Examples, int PadId);

/// <summary>Reports each step on the training thread, in order (Progress&lt;T&gt; would post them to the thread pool).</summary>
internal sealed class StepLines(Action<TrainingProgress> report) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => report(value);
}
