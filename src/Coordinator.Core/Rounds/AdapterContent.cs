using Federated.Coordinator.State;
using Federated.Coordinator.Storage;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// Where stored adapters' bytes live, by the name the adapter store gives them (SHA256.adapter, SHA256.adapter.enc):
/// files beside a SQLite state (<see cref="AdapterFiles"/>), rows of adapter_blobs in a PostgreSQL one
/// (<see cref="AdapterRows"/>), so that every coordinator sharing the database serves the same adapters.
/// </summary>
internal interface IAdapterContent
{
    /// <summary>Where the bytes are, for errors: a folder or a table.</summary>
    string Where { get; }

    bool Exists(string name);

    /// <summary>Stores the bytes durably (flushed, or committed) before returning; a half-written blob is never visible.</summary>
    void Write(string name, ReadOnlySpan<byte> content);

    /// <summary>The bytes for reading; null when there are none under that name.</summary>
    Stream? OpenRead(string name);

    /// <summary>Up to <paramref name="count"/> first bytes (an encrypted blob's header); null when there is no such blob.</summary>
    byte[]? ReadPrefix(string name, int count);

    void Delete(string name);

    /// <summary>Every stored name ending with <paramref name="suffix"/>.</summary>
    IReadOnlyList<string> Names(string suffix);
}

/// <summary>Adapters as files in one folder: written to a temporary file, flushed and renamed into place, the folder flushed too.</summary>
internal sealed class AdapterFiles : IAdapterContent
{
    private readonly string _directory;

    public AdapterFiles(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        _directory = directory;
        Directory.CreateDirectory(directory);
    }

    public string Where => _directory;

    public bool Exists(string name) => File.Exists(PathOf(name));

    public void Write(string name, ReadOnlySpan<byte> content)
    {
        string path = PathOf(name);
        string temporary = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
        using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
        {
            stream.Write(content);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        DurableDirectory.Flush(_directory);
    }

    public Stream? OpenRead(string name)
    {
        string path = PathOf(name);
        return File.Exists(path) ? new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read) : null;
    }

    public byte[]? ReadPrefix(string name, int count)
    {
        using Stream? stream = OpenRead(name);
        if (stream is null)
        {
            return null;
        }
        byte[] prefix = new byte[count];
        int read = stream.ReadAtLeast(prefix, count, throwOnEndOfStream: false);
        return prefix[..read];
    }

    public void Delete(string name) => File.Delete(PathOf(name));

    public IReadOnlyList<string> Names(string suffix) =>
        [.. Directory.GetFiles(_directory, "*" + suffix).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal)];

    private string PathOf(string name) => Path.Combine(_directory, name);
}

/// <summary>
/// Adapters as rows of adapter_blobs in the state database (PostgreSQL: adapters are megabytes, and every coordinator
/// sharing the database must serve them). Each write commits on its own, before the unit of work that records the
/// adapter, exactly as a file is flushed before its row is written.
/// </summary>
internal sealed class AdapterRows(StateDatabase database) : IAdapterContent
{
    public string Where => $"table adapter_blobs of {database.Name}";

    public bool Exists(string name) =>
        database.Read(session => session.Scalar<long>("SELECT COUNT(*) FROM adapter_blobs WHERE name = @n", ("@n", name)) > 0);

    public void Write(string name, ReadOnlySpan<byte> content)
    {
        byte[] bytes = content.ToArray();
        database.Write(work => work.Execute(
            "INSERT INTO adapter_blobs (name, content) VALUES (@n, @c) ON CONFLICT (name) DO UPDATE SET content = @c", ("@n", name), ("@c", bytes)));
    }

    public Stream? OpenRead(string name)
    {
        List<byte[]> rows = database.Read(session => session.Query("SELECT content FROM adapter_blobs WHERE name = @n", r => r.Blob(0), ("@n", name)));
        return rows.Count == 0 ? null : new MemoryStream(rows[0], writable: false);
    }

    public byte[]? ReadPrefix(string name, int count)
    {
        List<byte[]> rows = database.Read(session => session.Query(
            "SELECT substr(content, 1, @count) FROM adapter_blobs WHERE name = @n", r => r.Blob(0), ("@n", name), ("@count", count)));
        return rows.Count == 0 ? null : rows[0];
    }

    public void Delete(string name) => database.Write(work => work.Execute("DELETE FROM adapter_blobs WHERE name = @n", ("@n", name)));

    public IReadOnlyList<string> Names(string suffix) =>
        database.Read(session => session.Query("SELECT name FROM adapter_blobs ORDER BY name", r => r.Text(0)))
            .Where(n => n.EndsWith(suffix, StringComparison.Ordinal)).ToList();
}
