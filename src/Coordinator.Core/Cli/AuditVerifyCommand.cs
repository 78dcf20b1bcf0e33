using System.ComponentModel;
using System.Data.Common;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.Coordinator.Audit;
using Federated.Coordinator.Pki;
using Federated.Coordinator.State;
using Microsoft.Data.Sqlite;
using Npgsql;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Verifies the audit chain of a coordinator's state (SQLite file or PostgreSQL database): every hash link and the signed head.</summary>
internal sealed class AuditVerifyCommand : Command<AuditVerifyCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--state <FILE|CONNECTION>")]
        [Description("The coordinator's state (serve --state): a SQLite file, or a PostgreSQL connection string or postgresql:// URI; opened read-only. Required.")]
        public string? State { get; init; }

        [CommandOption("--pki <DIR>")]
        [Description("Check the signed head against server.crt in this PKI folder (default: the certificate recorded in the state file, which a rewrite could replace).")]
        public string? Pki { get; init; }

        [CommandOption("--json")]
        [Description("Print one JSON object instead of text.")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(settings.State))
        {
            throw new UsageException("--state FILE|CONNECTION is required");
        }
        StateLocation location;
        try
        {
            location = StateLocation.Parse(settings.State);
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message.Split(" (Parameter")[0]);
        }
        if (location.Backend == StateBackend.Sqlite && !File.Exists(location.Path))
        {
            throw new UsageException($"--state '{settings.State}' does not exist");
        }
        AuditVerification result;
        string signerSource;
        IReadOnlyList<AuditRecord> records;
        AuditHead? head;
        try
        {
            using DbConnection connection = CoordinatorState.OpenReadOnly(location);
            records = AuditStore.ReadRecords(connection);
            head = AuditStore.ReadHead(connection);
        }
        catch (SqliteException ex)
        {
            throw StateFileError.Describe(settings.State, ex, "names the coordinator's state file (serve --state)");
        }
        catch (PostgresException ex)
        {
            // Reachable, but not a coordinator's state (no audit table) or not readable by this role.
            throw new InvalidOperationException($"cannot read the audit chain from {location.Display} ({location.Redact(ex.MessageText)}); check --state names the coordinator's database (serve --state)", ex);
        }
        (result, signerSource) = Verify(records, head, settings.Pki);

        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { valid = result.Valid, entries = result.Entries, problem = result.Problem, signer = signerSource }));
        }
        else if (result.Valid)
        {
            Console.WriteLine($"audit chain valid: {result.Entries} entries, head signed by {signerSource}");
        }
        else
        {
            Console.Error.WriteLine($"coordinator: audit chain INVALID: {result.Problem}");
        }
        return result.Valid ? CliRunner.Ok : CliRunner.Failed;
    }

    private static (AuditVerification Result, string Signer) Verify(IReadOnlyList<AuditRecord> records, AuditHead? head, string? pkiDirectory)
    {
        X509Certificate2? signer = null;
        try
        {
            string source;
            if (pkiDirectory is not null)
            {
                // The trustworthy check: the head must be signed by the server certificate in the operator's PKI folder.
                string path = Path.Combine(pkiDirectory, FederationPki.ServerName + ".crt");
                if (!File.Exists(path))
                {
                    throw new UsageException($"--pki '{pkiDirectory}' has no {FederationPki.ServerName}.crt");
                }
                signer = X509CertificateLoader.LoadCertificateFromFile(path);
                source = path;
            }
            else if (head is not null)
            {
                // Without --pki only the key recorded in the file is available: this detects tampering by anyone
                // who cannot re-sign, but not a rewrite that also replaced the recorded certificate.
                signer = X509Certificate2.CreateFromPem(head.SignerPem);
                source = $"the certificate recorded in the state file ({signer.Subject}); pass --pki DIR to check it against the server certificate";
            }
            else
            {
                using ECDsa none = ECDsa.Create();
                return (AuditChain.Verify(records, head, none), "nobody (empty chain)");
            }
            using ECDsa key = signer.GetECDsaPublicKey() ?? throw new UsageException("the signer certificate has no ECDSA key");
            return (AuditChain.Verify(records, head, key), source);
        }
        finally
        {
            signer?.Dispose();
        }
    }
}
