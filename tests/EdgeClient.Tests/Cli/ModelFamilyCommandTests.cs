using System.Text.Json.Nodes;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.SafeTensors;
using Federated.Training.Tokenization;

namespace Federated.EdgeClient.Tests.Cli;

[Collection(LocalTrainingCollection.Name)]
public sealed class ModelFamilyCommandTests
{
    private static readonly string[] s_lines =
    [
        """{"text": "the cat sat on the mat"}""",
        """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}""",
    ];

    [Fact]
    public void TrainThenGenerate_Phi3_WritesPeftsFusedNamesAndLoadsThemBack()
    {
        using var folder = Phi3Folder();
        string data = folder.WriteLines("train.jsonl", s_lines);
        string adapter = folder.File("adapter");

        var train = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", adapter,
            "--steps", "2", "--rank", "2", "--device", "cpu", "--max-length", "32", "--json");
        var generate = EdgeClientProcess.Run("generate", "--model", folder.Model, "--adapter", adapter, "--prompt", "hi",
            "--chat", "--max-new-tokens", "3", "--device", "cpu", "--json");

        Assert.True(train.ExitCode == 0, train.StdErr);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName)))!;
        Assert.Equal(["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
            config["target_modules"]!.AsArray().Select(t => t!.GetValue<string>()));
        using (var reader = new SafeTensorsReader(Path.Combine(adapter, PeftAdapter.WeightsFileName)))
        {
            Assert.Contains("base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight", reader.Names);
            Assert.Contains("base_model.model.model.layers.1.mlp.gate_up_proj.lora_B.weight", reader.Names);
            Assert.Equal(2 * 2 * 4, reader.Names.Count());
        }
        Assert.True(generate.ExitCode == 0, generate.StdErr);
    }

    [Fact]
    public void Train_TargetsThePhi3FamilyLacks_ExitsWithUsageErrorNamingIt()
    {
        using var folder = Phi3Folder();
        string data = folder.WriteLines("train.jsonl", s_lines);

        var result = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", folder.File("out"),
            "--targets", "q_proj,v_proj", "--steps", "1");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--targets: a phi3 model has none of q_proj,v_proj", result.StdErr);
        Assert.Contains("qkv_proj,o_proj,gate_up_proj,down_proj", result.StdErr);
    }

    private static TinyModelFolder Phi3Folder()
    {
        var folder = new TinyModelFolder(writeModel: false);
        int vocab = ByteLevelTokenizerWriter.Write(folder.Model);
        TinyLlamaFactory.Write(folder.Model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab) with { ModelType = "phi3", PartialRotaryFactor = 0.5 }, seed: 3);
        return folder;
    }
}
