using Federated.Coordinator.Pki;
using Federated.Coordinator.Security;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Services;

/// <summary>
/// The renewal intermediate the coordinator signs renewals with: present only when `pki init --renewal-intermediate`
/// put intermediate.key in its PKI folder. It can sign client identities only (path length 0, clientAuth alone);
/// the root key never serves here. Without it renewal is refused and identities are issued offline by `pki issue`.
/// </summary>
internal sealed class CertificateRenewer(FederationPki? pki, TimeSpan lifetime) : IDisposable
{
    private readonly Lock _lock = new();

    public TimeSpan Lifetime => lifetime;

    public bool Enabled => pki is not null;

    /// <summary>The intermediate's certificate (null when renewal is disabled), checked against the CRL before each renewal.</summary>
    public System.Security.Cryptography.X509Certificates.X509Certificate2? Issuer => pki?.CaCertificate;

    public System.Security.Cryptography.X509Certificates.X509Certificate2 Renew(
        System.Security.Cryptography.X509Certificates.X509Certificate2 current, ReadOnlySpan<byte> csr)
    {
        FederationPki ca = pki ?? throw new InvalidOperationException("renewal is disabled");
        // One signature at a time: the intermediate's key object is shared.
        lock (_lock)
        {
            return ca.Renew(current, csr, lifetime);
        }
    }

    public void Dispose() => pki?.Dispose();
}

/// <summary>Certificate renewal: a new short-lived certificate for the caller's own subject and role over a key it proves it holds.</summary>
internal sealed class IdentityGrpcService(CertificateRenewer renewer, CoordinatorState state, Federated.Trust.FederationTrust trust, ILogger<IdentityGrpcService> logger)
    : IdentityService.IdentityServiceBase
{
    public override Task<RenewResponse> Renew(RenewRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        if (!renewer.Enabled)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                "certificate renewal needs a renewal intermediate, and this coordinator has none (intermediate.key in its PKI folder, made by 'pki init --renewal-intermediate'); ask the operator for a new identity from 'coordinator pki issue'"));
        }
        // A certificate from a revoked intermediate would be refused everywhere; say so instead of issuing it.
        if (trust.IsRevoked(renewer.Issuer!, out string revoked))
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"certificate renewal is disabled: the renewal intermediate is revoked ({revoked}); ask the operator for a new identity from 'coordinator pki issue'"));
        }
        var current = context.GetHttpContext().Connection.ClientCertificate
            ?? throw new RpcException(new Status(StatusCode.Unauthenticated, "no client certificate"));
        System.Security.Cryptography.X509Certificates.X509Certificate2 renewed;
        try
        {
            renewed = renewer.Renew(current, request.Csr.Span);
        }
        catch (ArgumentException ex)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, ex.Message.Split(" (Parameter")[0]));
        }
        using (renewed)
        {
            string serial = renewed.SerialNumber;
            state.Audit.Append(caller.Name, "certificate.renew", new Dictionary<string, string>
            {
                ["serial"] = serial,
                ["not_after"] = renewed.NotAfter.ToUniversalTime().ToString("O", System.Globalization.CultureInfo.InvariantCulture),
                ["previous_sha256"] = caller.CertificateSha256,
            });
            CoordinatorLog.CertificateRenewed(logger, caller.Name, serial, renewed.NotAfter.ToUniversalTime());
            return Task.FromResult(new RenewResponse
            {
                Certificate = ByteString.CopyFrom(renewed.RawData),
                NotAfter = Timestamp.FromDateTime(renewed.NotAfter.ToUniversalTime()),
            });
        }
    }
}
