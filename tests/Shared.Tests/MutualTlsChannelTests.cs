using System.Buffers;
using System.Security.Cryptography.X509Certificates;
using Federated.Transport;
using Federated.Trust;
using Federated.Wire;

namespace Federated.Shared.Tests;

public sealed class MutualTlsChannelTests
{
    [Fact]
    public void Constructor_PlainHttp_RefusedBeforeAnyConnection()
    {
        using var authority = new TestAuthority();
        using X509Certificate2 identity = authority.Issue("alice", FederationTrust.ClientAuthOid, FederationRole.Client);

        var ex = Assert.Throws<ArgumentException>(() => new MutualTlsChannel(new Uri("http://127.0.0.1:1"), identity, new FederationTrust(authority.Ca, TimeProvider.System)));

        Assert.Contains("must use https", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RingElementBytes_Pinned_PointsAtTheElementsLittleEndian()
    {
        uint[] values = [0x04030201, 0x08070605];
        var bytes = new RingElementBytes(values);

        using MemoryHandle pinned = bytes.Memory.Pin();
        byte[] copy = new byte[8];
        unsafe
        {
            new ReadOnlySpan<byte>(pinned.Pointer, 8).CopyTo(copy);
        }

        Assert.Equal(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }, copy);
    }
}
