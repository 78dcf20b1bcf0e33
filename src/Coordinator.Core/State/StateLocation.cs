using System.Globalization;
using Npgsql;

namespace Federated.Coordinator.State;

/// <summary>Which backend holds the coordinator's state.</summary>
public enum StateBackend
{
    Sqlite,
    Postgres,
}

/// <summary>
/// Where the coordinator's state lives, parsed from <c>--state</c> / <c>Coordinator:State</c>: a SQLite file path, or a
/// PostgreSQL connection string (keywords with <c>Host=</c>, or a <c>postgresql://</c> URI). <see cref="ToString"/> and
/// <see cref="Display"/> never contain the password; only <see cref="ConnectionString"/> does, for Npgsql.
/// </summary>
public sealed class StateLocation
{
    private StateLocation(StateBackend backend, string? path, string? connectionString, string display, string? host, int port)
    {
        Backend = backend;
        Path = path;
        ConnectionString = connectionString;
        Display = display;
        Host = host;
        Port = port;
    }

    public StateBackend Backend { get; }

    /// <summary>The SQLite file's full path; null on PostgreSQL.</summary>
    public string? Path { get; }

    /// <summary>The Npgsql connection string, password included; null on SQLite. Never log it: log <see cref="Display"/>.</summary>
    internal string? ConnectionString { get; }

    /// <summary>What logs and errors name: the file path, or postgresql://user@host:port/database without the password.</summary>
    public string Display { get; }

    /// <summary>The PostgreSQL host (first of a list); null on SQLite.</summary>
    public string? Host { get; }

    /// <summary>The PostgreSQL port; 0 on SQLite.</summary>
    public int Port { get; }

    /// <summary>The folder beside a SQLite file where its adapters' files live; null on PostgreSQL (adapters are rows).</summary>
    internal string? AdapterDirectory =>
        Path is null ? null : System.IO.Path.Combine(System.IO.Path.GetDirectoryName(Path)!, "adapters");

    /// <summary>Parses a state location.</summary>
    /// <exception cref="ArgumentException">Empty, or a PostgreSQL URI or connection string that cannot be parsed (the message never holds the password).</exception>
    public static StateLocation Parse(string value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            throw new ArgumentException("the state location is empty: pass --state FILE or --state 'Host=...;Database=...' (or a postgresql:// URI)", nameof(value));
        }
        string trimmed = value.Trim();
        if (trimmed.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase) || trimmed.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase))
        {
            return FromBuilder(FromUri(trimmed));
        }
        if (LooksLikeKeywords(trimmed))
        {
            NpgsqlConnectionStringBuilder builder;
            try
            {
                builder = new NpgsqlConnectionStringBuilder(trimmed);
            }
            catch (ArgumentException ex)
            {
                // Npgsql's message names the keyword, never the values.
                throw new ArgumentException($"the PostgreSQL connection string in --state cannot be parsed: {ex.Message.Split(" (Parameter")[0]}", nameof(value));
            }
            return FromBuilder(builder);
        }
        string full = System.IO.Path.GetFullPath(value);
        return new StateLocation(StateBackend.Sqlite, full, null, full, null, 0);
    }

    /// <summary>Replaces the password of any PostgreSQL connection string or URI in <paramref name="text"/> (an error message) with ***.</summary>
    public string Redact(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (ConnectionString is null)
        {
            return text;
        }
        string? password = new NpgsqlConnectionStringBuilder(ConnectionString).Password;
        return string.IsNullOrEmpty(password) ? text : text.Replace(password, "***", StringComparison.Ordinal);
    }

    public override string ToString() => Display;

    // A keyword connection string: "Host=..." (or Server=) among ';'-separated pairs. A file path with '=' and ';' in it
    // is still a path when it has no host keyword.
    private static bool LooksLikeKeywords(string value) =>
        value.Split(';').Any(pair =>
        {
            int equals = pair.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                return false;
            }
            string key = pair[..equals].Trim();
            return key.Equals("Host", StringComparison.OrdinalIgnoreCase) || key.Equals("Server", StringComparison.OrdinalIgnoreCase);
        });

    private static NpgsqlConnectionStringBuilder FromUri(string uri)
    {
        // libpq's URI form: postgresql://[user[:password]@][host][:port][/database][?param=value&...]
        int schemeEnd = uri.IndexOf("://", StringComparison.Ordinal) + 3;
        string rest = uri[schemeEnd..];
        string query = "";
        int question = rest.IndexOf('?', StringComparison.Ordinal);
        if (question >= 0)
        {
            query = rest[(question + 1)..];
            rest = rest[..question];
        }
        string database = "";
        int slash = rest.IndexOf('/', StringComparison.Ordinal);
        if (slash >= 0)
        {
            database = Uri.UnescapeDataString(rest[(slash + 1)..]);
            rest = rest[..slash];
        }
        string? user = null, password = null;
        int at = rest.LastIndexOf('@');
        if (at >= 0)
        {
            string userInfo = rest[..at];
            rest = rest[(at + 1)..];
            int colon = userInfo.IndexOf(':', StringComparison.Ordinal);
            user = Uri.UnescapeDataString(colon >= 0 ? userInfo[..colon] : userInfo);
            password = colon >= 0 ? Uri.UnescapeDataString(userInfo[(colon + 1)..]) : null;
        }
        var builder = new NpgsqlConnectionStringBuilder();
        (string host, int? port) = HostAndPort(rest);
        if (host.Length == 0)
        {
            throw new ArgumentException("the postgresql:// URI in --state names no host (postgresql://user@HOST:PORT/DATABASE)", nameof(uri));
        }
        builder.Host = host;
        if (port is { } p)
        {
            builder.Port = p;
        }
        if (database.Length > 0)
        {
            builder.Database = database;
        }
        if (!string.IsNullOrEmpty(user))
        {
            builder.Username = user;
        }
        if (password is not null)
        {
            builder.Password = password;
        }
        foreach (string pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int equals = pair.IndexOf('=', StringComparison.Ordinal);
            string key = Uri.UnescapeDataString(equals >= 0 ? pair[..equals] : pair);
            string value = Uri.UnescapeDataString(equals >= 0 ? pair[(equals + 1)..] : "");
            // libpq's parameter names where they differ from Npgsql's keywords.
            string keyword = key.ToLowerInvariant() switch
            {
                "sslmode" => "SSL Mode",
                "sslrootcert" => "Root Certificate",
                "sslcert" => "SSL Certificate",
                "sslkey" => "SSL Key",
                "connect_timeout" => "Timeout",
                "application_name" => "Application Name",
                "target_session_attrs" => "Target Session Attributes",
                "user" => "Username",
                "dbname" => "Database",
                _ => key,
            };
            try
            {
                builder[keyword] = keyword == "SSL Mode" ? SslMode(value) : value;
            }
            catch (ArgumentException)
            {
                throw new ArgumentException($"the postgresql:// URI in --state has an unknown or invalid parameter '{key}'", nameof(uri));
            }
        }
        return builder;
    }

    // libpq spells SSL modes in lowercase with dashes (verify-full); Npgsql's enum names are VerifyFull.
    private static string SslMode(string value) => value.ToLowerInvariant() switch
    {
        "disable" => "Disable",
        "allow" => "Allow",
        "prefer" => "Prefer",
        "require" => "Require",
        "verify-ca" => "VerifyCA",
        "verify-full" => "VerifyFull",
        _ => value,
    };

    private static (string Host, int? Port) HostAndPort(string authority)
    {
        if (authority.StartsWith('['))
        {
            // An IPv6 literal: [::1]:5432
            int close = authority.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                throw new ArgumentException("the postgresql:// URI in --state has an unclosed [IPv6] host", nameof(authority));
            }
            string host = authority[1..close];
            string after = authority[(close + 1)..];
            return (host, after.StartsWith(':') ? ParsePort(after[1..]) : null);
        }
        int colon = authority.LastIndexOf(':');
        return colon >= 0 && !authority.Contains(',', StringComparison.Ordinal)
            ? (Uri.UnescapeDataString(authority[..colon]), ParsePort(authority[(colon + 1)..]))
            : (Uri.UnescapeDataString(authority), null);
    }

    private static int ParsePort(string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int port) && port is > 0 and <= 65535
            ? port
            : throw new ArgumentException($"the postgresql:// URI in --state has port '{text}'; a port is 1..65535", nameof(text));

    private static StateLocation FromBuilder(NpgsqlConnectionStringBuilder builder)
    {
        if (string.IsNullOrWhiteSpace(builder.Host))
        {
            throw new ArgumentException("the PostgreSQL connection string in --state names no Host", nameof(builder));
        }
        if (string.IsNullOrWhiteSpace(builder.Database))
        {
            throw new ArgumentException("the PostgreSQL connection string in --state names no Database (Host=...;Database=...)", nameof(builder));
        }
        string host = builder.Host.Split(',')[0].Trim();
        int port = builder.Port;
        string user = string.IsNullOrEmpty(builder.Username) ? "" : Uri.EscapeDataString(builder.Username) + "@";
        string hostPart = host.Contains(':', StringComparison.Ordinal) ? $"[{host}]" : host;
        string display = string.Create(CultureInfo.InvariantCulture, $"postgresql://{user}{hostPart}:{port}/{Uri.EscapeDataString(builder.Database)}");
        return new StateLocation(StateBackend.Postgres, null, builder.ConnectionString, display, host, port);
    }
}
