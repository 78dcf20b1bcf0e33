using Federated.Training.Tokenization;

namespace Federated.Training.Tests.Data;

/// <summary>A temporary folder for one test, deleted on dispose, with helpers for tokenizer and JSONL files.</summary>
internal sealed class ScratchFolder : IDisposable
{
    public ScratchFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "fed-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string WriteLines(string name, params string[] lines)
    {
        string path = File(name);
        System.IO.File.WriteAllLines(path, lines);
        return path;
    }

    /// <summary>Writes the product's byte-level tokenizer here and loads it.</summary>
    public HuggingFaceTokenizer ByteTokenizer()
    {
        ByteLevelTokenizerWriter.Write(Path);
        return HuggingFaceTokenizer.Load(Path);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless; never fail a test over cleanup.
        }
    }
}
