using System.Net.Http;
using System.Security.Authentication;
using Federated.Cli;
using Grpc.Core;

namespace Federated.Shared.Tests;

/// <summary>Failures reach the user as one line in their terms: no .NET type names, wrappers or chains.</summary>
public sealed class UserMessageTests
{
    [Fact]
    public void Of_RpcExceptionWithDebugException_DetailOnlyWithoutTypeNames()
    {
        var inner = new HttpRequestException("Connection refused (127.0.0.1:7444)", new System.Net.Sockets.SocketException(111));
        var rpc = new RpcException(new Status(StatusCode.Unavailable, "Error starting gRPC call. HttpRequestException: Connection refused (127.0.0.1:7444) SocketException: Connection refused", inner));

        string message = UserMessage.Of(rpc);

        Assert.StartsWith("the coordinator is unreachable (", message, StringComparison.Ordinal);
        Assert.EndsWith("); check --coordinator and that it is running", message, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", message, StringComparison.Ordinal);
        Assert.DoesNotContain("StatusCode", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Cause_SubchannelErrorWithSocketCause_TheInnermostCause()
    {
        var debug = new HttpRequestException("Connection refused (127.0.0.1:1)", new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.ConnectionRefused));
        var rpc = new RpcException(new Status(StatusCode.Unavailable, "Error connecting to subchannel.", debug));

        Assert.Equal(new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.ConnectionRefused).Message, UserMessage.Cause(rpc));
    }

    [Fact]
    public void Cause_NoDebugException_TheDetail()
    {
        Assert.Equal("deadline passed", UserMessage.Cause(new RpcException(new Status(StatusCode.DeadlineExceeded, "deadline passed"))));
    }

    [Fact]
    public void Of_RpcExceptionFromThePeer_ItsDetail()
    {
        Assert.Equal("role 'engineer' may not call SetBudget", UserMessage.Of(new RpcException(new Status(StatusCode.PermissionDenied, "role 'engineer' may not call SetBudget"))));
    }

    [Fact]
    public void Plain_ChainWithQualifiedTypeNamesAndStack_FirstCauseOnOneLine()
    {
        string text = "The SSL connection could not be established. System.Security.Authentication.AuthenticationException: "
            + "The remote certificate was rejected\n ---> System.IO.IOException: inner\n   at Federated.Something.Run()";

        Assert.Equal("The SSL connection could not be established. The remote certificate was rejected", UserMessage.Plain(text));
    }

    [Fact]
    public void Of_ArgumentExceptionWithParameterSuffix_SuffixRemoved()
    {
        var ex = new ArgumentOutOfRangeException("port", 70000, "port must be in 0..65535");

        string message = UserMessage.Of(ex);

        Assert.StartsWith("port must be in 0..65535", message, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Of_AuthenticationException_KeepsItsOwnWords()
    {
        Assert.Equal("the certificate was refused", UserMessage.Of(new AuthenticationException("the certificate was refused")));
    }
}
