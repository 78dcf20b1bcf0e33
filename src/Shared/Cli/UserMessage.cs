using System.Text.RegularExpressions;
using Grpc.Core;

namespace Federated.Cli;

/// <summary>
/// An exception's message in the user's terms: the first cause only, without .NET type names, gRPC status wrappers,
/// "(Parameter 'x')" suffixes or stack frames. The whole exception is printed only under --verbose.
/// </summary>
public static partial class UserMessage
{
    /// <summary>One line saying what went wrong, from <paramref name="exception"/>.</summary>
    public static string Of(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        // An RpcException's Message embeds its DebugException (a type name and a chain); the detail is what the peer said,
        // and a call that never reached the coordinator says why through its cause.
        return exception switch
        {
            RpcException { StatusCode: StatusCode.Unavailable, Status.DebugException: not null } unreachable =>
                $"the coordinator is unreachable ({Cause(unreachable)}); check --coordinator and that it is running",
            RpcException rpc => Plain(Detail(rpc)),
            _ => Plain(exception.Message),
        };
    }

    /// <summary><paramref name="text"/> without type names, wrappers and inner-exception chains, on one line.</summary>
    public static string Plain(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string line = text.ReplaceLineEndings(" ");
        int inner = line.IndexOf(" ---> ", StringComparison.Ordinal);
        if (inner > 0)
        {
            line = line[..inner];
        }
        int stack = line.IndexOf("   at ", StringComparison.Ordinal);
        if (stack > 0)
        {
            line = line[..stack];
        }
        line = line.Replace("Error starting gRPC call.", "", StringComparison.Ordinal);
        line = TypeName().Replace(line, "");
        line = ParameterSuffix().Replace(line, "");
        line = Spaces().Replace(line, " ").Trim();
        return line.Length == 0 ? "unexpected failure (run again with --verbose for details)" : line;
    }

    /// <summary>
    /// Why a call could not reach its server: gRPC's own detail ("Error connecting to subchannel.") does not say, the
    /// innermost cause of its debug exception ("Connection refused", "Name or service not known") does.
    /// </summary>
    public static string Cause(RpcException rpc)
    {
        ArgumentNullException.ThrowIfNull(rpc);
        Exception? cause = rpc.Status.DebugException;
        while (cause?.InnerException is not null)
        {
            cause = cause.InnerException;
        }
        return Plain(string.IsNullOrWhiteSpace(cause?.Message) ? Detail(rpc) : cause.Message);
    }

    private static string Detail(RpcException rpc)
    {
        string detail = rpc.Status.Detail;
        return string.IsNullOrWhiteSpace(detail) ? $"the call failed ({rpc.StatusCode})" : detail;
    }

    // "System.Net.Http.HttpRequestException: " or "AuthenticationException: " at a word boundary.
    [GeneratedRegex(@"\b(?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Z][A-Za-z0-9_]*Exception:\s*")]
    private static partial Regex TypeName();

    [GeneratedRegex(@"\s*\(Parameter '[^']*'\)")]
    private static partial Regex ParameterSuffix();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spaces();
}
