using Microsoft.Data.Sqlite;

namespace Federated.Coordinator.Cli;

/// <summary>A state file SQLite cannot use, said in one line that names the file and the flag (serve, audit verify).</summary>
internal static class StateFileError
{
    /// <summary>"cannot use the state file 'PATH' (file is not a database); check --state ..." from SQLite's "SQLite Error 26: 'file is not a database'.".</summary>
    public static InvalidOperationException Describe(string path, SqliteException ex, string check)
    {
        ArgumentNullException.ThrowIfNull(ex);
        return new InvalidOperationException($"cannot use the state file '{Path.GetFullPath(path)}' ({Problem(ex)}); check --state {check}", ex);
    }

    private static string Problem(SqliteException ex)
    {
        string message = ex.Message;
        int first = message.IndexOf('\'', StringComparison.Ordinal);
        int last = message.LastIndexOf('\'');
        return first >= 0 && last > first ? message[(first + 1)..last] : message.TrimEnd('.');
    }
}
