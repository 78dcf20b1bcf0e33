using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Calls any RPC of a generated service with a given request over a real channel and reports the status it ended
/// with, so that role tests can run one table over every method: unary and client-streaming calls send the
/// request, server streams are read to their first message.
/// </summary>
internal static class RoleMatrix
{
    private static readonly Marshaller<byte[]> s_raw = Marshallers.Create(b => b, b => b);

    /// <summary>"/package.Service/Method", the path <see cref="Federated.Coordinator.Security.RpcRoles"/> is keyed by.</summary>
    public static string Path(MethodDescriptor method) => $"/{method.Service.FullName}/{method.Name}";

    /// <summary>The status one call of <paramref name="method"/> with <paramref name="request"/> ended with (OK on success).</summary>
    public static async Task<Status> ProbeAsync(ChannelBase channel, MethodDescriptor method, IMessage request)
    {
        ArgumentNullException.ThrowIfNull(channel);
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(request);
        CallInvoker invoker = channel.CreateCallInvoker();
        byte[] payload = request.ToByteArray();
        string service = method.Service.FullName;
        var options = new CallOptions(deadline: DateTime.UtcNow.AddSeconds(60));
        try
        {
            if (method.IsClientStreaming && method.IsServerStreaming)
            {
                using var call = invoker.AsyncDuplexStreamingCall(new Method<byte[], byte[]>(MethodType.DuplexStreaming, service, method.Name, s_raw, s_raw), null, options);
                await call.RequestStream.WriteAsync(payload);
                await call.RequestStream.CompleteAsync();
                await call.ResponseStream.MoveNext(CancellationToken.None);
            }
            else if (method.IsClientStreaming)
            {
                using var call = invoker.AsyncClientStreamingCall(new Method<byte[], byte[]>(MethodType.ClientStreaming, service, method.Name, s_raw, s_raw), null, options);
                try
                {
                    await call.RequestStream.WriteAsync(payload);
                    await call.RequestStream.CompleteAsync();
                }
                catch (Exception ex) when (ex is RpcException or InvalidOperationException or IOException)
                {
                    // Refused before the request was read; the status is in the response.
                }
                await call.ResponseAsync;
            }
            else if (method.IsServerStreaming)
            {
                // A watch may never end; its first message (or its refusal) is the answer.
                using var call = invoker.AsyncServerStreamingCall(new Method<byte[], byte[]>(MethodType.ServerStreaming, service, method.Name, s_raw, s_raw), null, options, payload);
                await call.ResponseStream.MoveNext(CancellationToken.None);
            }
            else
            {
                await invoker.AsyncUnaryCall(new Method<byte[], byte[]>(MethodType.Unary, service, method.Name, s_raw, s_raw), null, options, payload);
            }
            return Status.DefaultSuccess;
        }
        catch (RpcException ex)
        {
            return ex.Status;
        }
    }
}
