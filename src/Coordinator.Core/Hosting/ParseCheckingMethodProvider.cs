using System.Reflection;
using Google.Protobuf;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using Microsoft.AspNetCore.Routing;

namespace Federated.Coordinator;

/// <summary>
/// Binds each generated gRPC service the way grpc-dotnet's default provider does (its static BindService, the
/// overriding methods as open delegates), but with request deserializers that answer bytes which are not a valid
/// protobuf message with INVALID_ARGUMENT. grpc-dotnet deserializes a unary request before any interceptor runs,
/// and an exception there otherwise reaches the caller as UNKNOWN ("Exception was thrown by handler").
/// </summary>
internal sealed class ParseCheckingMethodProvider<TService> : IServiceMethodProvider<TService>
    where TService : class
{
    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<TService> context)
    {
        ArgumentNullException.ThrowIfNull(context);
        for (Type? type = typeof(TService); type is not null; type = type.BaseType)
        {
            if (type.GetCustomAttribute<BindServiceMethodAttribute>(inherit: false) is not { } attribute)
            {
                continue;
            }
            MethodInfo bind = attribute.BindType.GetMethod(
                attribute.BindMethodName, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static, [typeof(ServiceBinderBase), type])
                ?? throw new InvalidOperationException($"{attribute.BindType}.{attribute.BindMethodName}(ServiceBinderBase, {type}) was not found");
            // Generated BindService methods accept a null implementation when only the method definitions are wanted.
            bind.Invoke(null, [new Binder(context, type), null]);
            return;
        }
    }

    /// <summary>The request marshaller of <paramref name="method"/> with its parse errors mapped to INVALID_ARGUMENT.</summary>
    internal static Method<TRequest, TResponse> Checked<TRequest, TResponse>(Method<TRequest, TResponse> method)
        where TRequest : class
        where TResponse : class
    {
        Func<DeserializationContext, TRequest> parse = method.RequestMarshaller.ContextualDeserializer;
        var request = new Marshaller<TRequest>(method.RequestMarshaller.ContextualSerializer, context =>
        {
            try
            {
                return parse(context);
            }
            catch (InvalidProtocolBufferException ex)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"the request is not a valid {typeof(TRequest).Name} message: {ex.Message}"));
            }
        });
        return new Method<TRequest, TResponse>(method.Type, method.ServiceName, method.Name, request, method.ResponseMarshaller);
    }

    private sealed class Binder(ServiceMethodProviderContext<TService> context, Type declaringType) : ServiceBinderBase
    {
        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse>? handler)
        {
            (MethodInfo target, List<object> metadata) = Find(method.Name, [typeof(TRequest), typeof(ServerCallContext)]);
            context.AddUnaryMethod(Checked(method), metadata, target.CreateDelegate<UnaryServerMethod<TService, TRequest, TResponse>>());
        }

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse>? handler)
        {
            (MethodInfo target, List<object> metadata) = Find(method.Name, [typeof(IAsyncStreamReader<TRequest>), typeof(ServerCallContext)]);
            context.AddClientStreamingMethod(Checked(method), metadata, target.CreateDelegate<ClientStreamingServerMethod<TService, TRequest, TResponse>>());
        }

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse>? handler)
        {
            (MethodInfo target, List<object> metadata) = Find(method.Name, [typeof(TRequest), typeof(IServerStreamWriter<TResponse>), typeof(ServerCallContext)]);
            context.AddServerStreamingMethod(Checked(method), metadata, target.CreateDelegate<ServerStreamingServerMethod<TService, TRequest, TResponse>>());
        }

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse>? handler)
        {
            (MethodInfo target, List<object> metadata) = Find(method.Name, [typeof(IAsyncStreamReader<TRequest>), typeof(IServerStreamWriter<TResponse>), typeof(ServerCallContext)]);
            context.AddDuplexStreamingMethod(Checked(method), metadata, target.CreateDelegate<DuplexStreamingServerMethod<TService, TRequest, TResponse>>());
        }

        // As grpc-dotnet's ProviderServiceBinder: the public instance method that overrides the generated base's
        // virtual (a method that merely hides it is skipped), and the type's and method's attributes as metadata.
        private (MethodInfo Method, List<object> Metadata) Find(string name, Type[] parameters)
        {
            for (Type? type = typeof(TService); type is not null; type = type.BaseType)
            {
                MethodInfo? candidate = type.GetMethod(name, BindingFlags.Public | BindingFlags.Instance, binder: null, parameters, modifiers: null);
                if (candidate is null)
                {
                    break;
                }
                if (candidate.IsVirtual && candidate.GetBaseDefinition().DeclaringType == declaringType)
                {
                    var metadata = new List<object>();
                    metadata.AddRange(typeof(TService).GetCustomAttributes(inherit: true));
                    metadata.AddRange(candidate.GetCustomAttributes(inherit: true));
                    metadata.Add(new HttpMethodMetadata(["POST"], acceptCorsPreflight: true));
                    return (candidate, metadata);
                }
            }
            throw new InvalidOperationException($"could not find '{name}' on {typeof(TService)}");
        }
    }
}
