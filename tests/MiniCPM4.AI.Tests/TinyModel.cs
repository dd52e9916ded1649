using MiniCPM4.Checkpoints;

namespace MiniCPM4.AI.Tests;

/// <summary>A tiny random checkpoint written once per test run; random weights give gibberish, which is fine
/// here.</summary>
internal static class TinyModel
{
    private static readonly Lazy<string> Dir = new(() =>
    {
        var dir = Path.Combine(Path.GetTempPath(), $"minicpm4-ai-tests-{Environment.ProcessId}", "tiny");
        CheckpointWriter.CreateRandomModel(dir, ModelPreset.Tiny, seed: 3, dtype: TensorDType.BF16);
        return dir;
    });

    public static string Directory => Dir.Value;

    public static MiniCpmModel Load() =>
        MiniCpmModel.Load(Directory, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2 });
}
