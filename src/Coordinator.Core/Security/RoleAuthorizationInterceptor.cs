using Federated.Trust;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Security;

/// <summary>
/// Enforces <see cref="RpcRoles"/> on every call before any service code runs: the caller is the validated
/// client certificate (TLS already refused others), its role must be allowed for the method, else
/// PERMISSION_DENIED with a message naming the role and the allowed roles. The identity is validated once per
/// connection; revocation and expiry are checked again on every call (by the trust's clock), since a connection
/// can outlive its certificate.
/// </summary>
internal sealed class RoleAuthorizationInterceptor(FederationTrust trust, ILogger<RoleAuthorizationInterceptor> logger) : Interceptor
{
    private static readonly object s_identityKey = new();

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Authorize(context);
        return continuation(request, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authorize(context);
        return continuation(requestStream, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authorize(context);
        return continuation(request, responseStream, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authorize(context);
        return continuation(requestStream, responseStream, context);
    }

    /// <summary>The identity the interceptor established for this call.</summary>
    public static CallerIdentity Caller(ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.GetHttpContext().Items[s_identityKey] as CallerIdentity
            ?? throw new RpcException(new Status(StatusCode.Unauthenticated, "no authenticated caller"));
    }

    private void Authorize(ServerCallContext context)
    {
        var http = context.GetHttpContext();
        CallerIdentity identity = Identify(http, context.Method);
        IReadOnlyList<FederationRole> allowed = RpcRoles.Allowed(context.Method);
        if (!allowed.Contains(identity.Role))
        {
            string roleName = FederationRoleExtension.Name(identity.Role);
            string allowedNames = allowed.Count == 0 ? "none" : string.Join(", ", allowed.Select(FederationRoleExtension.Name));
            CoordinatorLog.PermissionDenied(logger, context.Method, identity.Name, roleName, allowedNames);
            string message = identity.Role == FederationRole.Client && context.Method.StartsWith("/federated.v1.AdminService/", StringComparison.Ordinal)
                ? $"a client certificate cannot call the admin service ({context.Method}); use an engineer or officer identity"
                : $"role '{roleName}' may not call {context.Method}; allowed roles: {allowedNames}";
            throw new RpcException(new Status(StatusCode.PermissionDenied, message));
        }
        http.Items[s_identityKey] = identity;
    }

    private CallerIdentity Identify(Microsoft.AspNetCore.Http.HttpContext http, string method)
    {
        // The chain is validated once per connection (TLS did it too; this is the authoritative copy with the role).
        IDictionary<object, object?>? connectionItems = http.Features.Get<IConnectionItemsFeature>()?.Items;
        if (connectionItems is not null && connectionItems.TryGetValue(s_identityKey, out object? cached) && cached is CallerIdentity known)
        {
            // A certificate revoked, or expired, while its connection is open loses access at its next call, not at reconnect.
            if (http.Connection.ClientCertificate is not { } certificate)
            {
                CoordinatorLog.Unauthenticated(logger, method, "no client certificate");
                throw new RpcException(new Status(StatusCode.Unauthenticated, "no client certificate"));
            }
            if (trust.IsRevoked(certificate, out string refused) || trust.IsExpired(certificate, out refused))
            {
                CoordinatorLog.Unauthenticated(logger, method, refused);
                throw new RpcException(new Status(StatusCode.Unauthenticated, refused));
            }
            return known;
        }
        if (!trust.TryValidateClient(http.Connection.ClientCertificate, out FederationIdentity? certified, out string reason))
        {
            CoordinatorLog.Unauthenticated(logger, method, reason);
            throw new RpcException(new Status(StatusCode.Unauthenticated, reason));
        }
        var identity = new CallerIdentity(certified!.Name, certified.Role, certified.CertificateSha256);
        if (connectionItems is not null)
        {
            connectionItems[s_identityKey] = identity;
        }
        return identity;
    }
}
