using Federated.Trust;

namespace Federated.Coordinator.Security;

/// <summary>Who is calling: the validated client certificate's subject common name, its role and its SHA-256 thumbprint.</summary>
internal sealed record CallerIdentity(string Name, FederationRole Role, string CertificateSha256);
