using System.Data.Common;
using System.Globalization;

namespace Federated.Coordinator.State;

/// <summary>
/// A connection the stores query through (and, as a <see cref="UnitOfWork"/>, the transaction they write in), with
/// the helpers they share. Only System.Data.Common types and SQL that SQLite and PostgreSQL both accept (named
/// <c>@parameters</c>, RETURNING, ON CONFLICT), so a second backend needs no change in the stores.
/// </summary>
internal class StateSession
{
    private readonly DbConnection _connection;
    private readonly DbTransaction? _transaction;

    internal StateSession(DbConnection connection, DbTransaction? transaction, DateTimeOffset now)
    {
        _connection = connection;
        _transaction = transaction;
        Now = now;
    }

    /// <summary>The time this session's writes are stamped with (one instant per transaction).</summary>
    public DateTimeOffset Now { get; }

    /// <summary>Runs a statement; returns the rows it changed.</summary>
    public int Execute(string sql, params (string Name, object? Value)[] parameters)
    {
        using DbCommand command = Command(sql, parameters);
        return command.ExecuteNonQuery();
    }

    /// <summary>The first column of the first row, or default when there is none (or it is NULL).</summary>
    public T? Scalar<T>(string sql, params (string Name, object? Value)[] parameters)
    {
        using DbCommand command = Command(sql, parameters);
        object? result = command.ExecuteScalar();
        return result is null or DBNull ? default : (T)Convert.ChangeType(result, typeof(T), CultureInfo.InvariantCulture);
    }

    /// <summary>Every row, each mapped by <paramref name="read"/>.</summary>
    public List<T> Query<T>(string sql, Func<DbDataReader, T> read, params (string Name, object? Value)[] parameters)
    {
        using DbCommand command = Command(sql, parameters);
        using DbDataReader reader = command.ExecuteReader();
        var rows = new List<T>();
        while (reader.Read())
        {
            rows.Add(read(reader));
        }
        return rows;
    }

    private DbCommand Command(string sql, (string Name, object? Value)[] parameters)
    {
        DbCommand command = _connection.CreateCommand();
        command.Transaction = _transaction;
        command.CommandText = sql;
        foreach ((string name, object? value) in parameters)
        {
            DbParameter parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value ?? DBNull.Value;
            command.Parameters.Add(parameter);
        }
        return command;
    }
}

/// <summary>How the stores write and read values whose column types differ between backends (times as ISO-8601 text, integers of any width).</summary>
internal static class StateValues
{
    public static string Format(DateTimeOffset time) => time.UtcDateTime.ToString("O", CultureInfo.InvariantCulture);

    public static DateTimeOffset ParseTime(string text) =>
        DateTimeOffset.Parse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);

    public static int Int(this DbDataReader reader, int ordinal) => Convert.ToInt32(reader.GetValue(ordinal), CultureInfo.InvariantCulture);

    public static long Long(this DbDataReader reader, int ordinal) => Convert.ToInt64(reader.GetValue(ordinal), CultureInfo.InvariantCulture);

    public static double Real(this DbDataReader reader, int ordinal) => Convert.ToDouble(reader.GetValue(ordinal), CultureInfo.InvariantCulture);

    public static string Text(this DbDataReader reader, int ordinal) => reader.GetString(ordinal);

    public static string? OptionalText(this DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

    public static byte[] Blob(this DbDataReader reader, int ordinal) => (byte[])reader.GetValue(ordinal);

    public static DateTimeOffset Time(this DbDataReader reader, int ordinal) => ParseTime(reader.GetString(ordinal));

    public static DateTimeOffset? OptionalTime(this DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : ParseTime(reader.GetString(ordinal));
}
