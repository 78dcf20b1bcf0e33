using Federated.Training.Model;
using Federated.Training.Tokenization;

namespace Federated.EdgeClient.Tests.Cli;

/// <summary>A temporary folder holding a tiny random Llama with the product's byte-level tokenizer, plus helpers.</summary>
internal sealed class TinyModelFolder : IDisposable
{
    public TinyModelFolder(bool writeModel = true)
    {
        Root = Path.Combine(Path.GetTempPath(), "fed-cli-" + Guid.NewGuid().ToString("N"));
        Model = Path.Combine(Root, "model");
        Directory.CreateDirectory(Model);
        if (writeModel)
        {
            int vocab = ByteLevelTokenizerWriter.Write(Model);
            TinyLlamaFactory.Write(Model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 11);
        }
    }

    public string Root { get; }

    public string Model { get; }

    public string File(string name) => Path.Combine(Root, name);

    public string WriteLines(string name, params string[] lines)
    {
        string path = File(name);
        System.IO.File.WriteAllLines(path, lines);
        return path;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless; never fail a test over cleanup.
        }
    }
}
