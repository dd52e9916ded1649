using MiniCPM4.Checkpoints;

namespace MiniCPM4.Tests;

/// <summary>A tiny random checkpoint written once per test run (create-model's Tiny preset).</summary>
internal static class TinyModelFixture
{
    private static readonly Lazy<string> Dir = new(() =>
    {
        var dir = Path.Combine(Path.GetTempPath(), $"minicpm4-tests-{Environment.ProcessId}", "tiny");
        CheckpointWriter.CreateRandomModel(dir, ModelPreset.Tiny, seed: 3, dtype: TensorDType.BF16);
        return dir;
    });

    public static string Directory => Dir.Value;

    public static MiniCpmModel Load() =>
        MiniCpmModel.Load(Directory, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2 });
}
