using System.Formats.Asn1;
using System.Security.Cryptography.X509Certificates;

namespace Federated.Trust;

/// <summary>What a certificate holder may do: edge clients train, engineers run, officers govern privacy.</summary>
public enum FederationRole
{
    Client = 1,
    Engineer = 2,
    Officer = 3,
}

/// <summary>
/// How a role travels in a certificate: the subject's OU names it and a non-critical extension under a
/// private OID repeats it as a DER UTF8String. Both must agree; a certificate with only one, or with
/// disagreeing values, has no role and is refused.
/// </summary>
public static class FederationRoleExtension
{
    /// <summary>
    /// A UUID-derived OID (ITU-T X.667, arc 2.25), which needs no registration and cannot collide with
    /// another organisation's. Non-critical so that standard TLS stacks (openssl, grpcurl) accept it.
    /// </summary>
    public const string Oid = "2.25.262809771298179563991121897104525455886";

    public static string Name(FederationRole role) => role switch
    {
        FederationRole.Client => "client",
        FederationRole.Engineer => "engineer",
        FederationRole.Officer => "officer",
        _ => throw new ArgumentOutOfRangeException(nameof(role), role, "role must be client, engineer or officer"),
    };

    public static bool TryParse(string? text, out FederationRole role)
    {
        switch (text)
        {
            case "client":
                role = FederationRole.Client;
                return true;
            case "engineer":
                role = FederationRole.Engineer;
                return true;
            case "officer":
                role = FederationRole.Officer;
                return true;
            default:
                role = default;
                return false;
        }
    }

    public static X509Extension Create(FederationRole role)
    {
        var writer = new AsnWriter(AsnEncodingRules.DER);
        writer.WriteCharacterString(UniversalTagNumber.UTF8String, Name(role));
        return new X509Extension(Oid, writer.Encode(), critical: false);
    }

    /// <summary>Reads the role from the extension and the subject OU; null when absent, malformed or inconsistent.</summary>
    public static FederationRole? Read(X509Certificate2 certificate)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        X509Extension? extension = certificate.Extensions[Oid];
        if (extension is null)
        {
            return null;
        }
        string text;
        try
        {
            var reader = new AsnReader(extension.RawData, AsnEncodingRules.DER);
            text = reader.ReadCharacterString(UniversalTagNumber.UTF8String);
            reader.ThrowIfNotEmpty();
        }
        catch (AsnContentException)
        {
            return null;
        }
        if (!TryParse(text, out FederationRole role))
        {
            return null;
        }
        string? organizationalUnit = null;
        foreach (X500RelativeDistinguishedName rdn in certificate.SubjectName.EnumerateRelativeDistinguishedNames())
        {
            if (rdn.GetSingleElementType().Value == "2.5.4.11")
            {
                if (organizationalUnit is not null)
                {
                    return null; // two OUs: ambiguous
                }
                organizationalUnit = rdn.GetSingleElementValue();
            }
        }
        return organizationalUnit == text ? role : null;
    }
}
