using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

/// <summary>Proves the native TorchSharp stack loads and trains on this machine (CPU, or CUDA when present).</summary>
[Collection(TorchCollection.Name)]
public sealed class TorchSharpSmokeTests
{
    [Fact]
    public void AdamWStep_SmallMlp_LowersLoss()
    {
        torch.manual_seed(1234);
        Device device = torch.cuda.is_available() ? CUDA : CPU;
        using var scope = torch.NewDisposeScope();

        var model = nn.Sequential(
            ("fc1", nn.Linear(8, 32)),
            ("act", nn.Tanh()),
            ("fc2", nn.Linear(32, 1))).to(device);
        Tensor x = torch.randn(64, 8, device: device);
        Tensor y = (x.sum(1, keepdim: true) * 0.5).sin();
        var optimizer = torch.optim.AdamW(model.parameters(), lr: 0.01);

        float first = 0f, last = 0f;
        for (int step = 0; step < 50; step++)
        {
            using var stepScope = torch.NewDisposeScope();
            optimizer.zero_grad();
            Tensor loss = nn.functional.mse_loss(model.forward(x), y);
            loss.backward();
            optimizer.step();
            float value = loss.item<float>();
            if (step == 0)
            {
                first = value;
            }
            last = value;
        }

        Assert.True(float.IsFinite(first) && float.IsFinite(last));
        Assert.True(last < first * 0.5f, $"loss should at least halve in 50 AdamW steps: first {first}, last {last}");
    }
}
