using MiniCPM4.Checkpoints;
using NUnit.Framework;

namespace CompareLlamaCpp.Tests;

/// <summary>A random tiny-preset checkpoint in a temporary directory for the fixture's tests, deleted
/// afterwards.</summary>
public abstract class TinyCheckpointFixture(TensorDType dtype, ulong seed)
{
    /// <summary>The temporary directory (the checkpoint and any files a test writes).</summary>
    protected string WorkDir { get; private set; } = "";
    protected string CheckpointDir { get; private set; } = "";

    [OneTimeSetUp]
    public void CreateTinyCheckpoint()
    {
        WorkDir = Path.Combine(Path.GetTempPath(), $"compare-llamacpp-tests-{Guid.NewGuid():N}");
        CheckpointDir = Path.Combine(WorkDir, $"tiny-{dtype}");
        CheckpointWriter.CreateRandomModel(CheckpointDir, ModelPreset.Tiny, seed, dtype);
    }

    [OneTimeTearDown]
    public void DeleteWorkDir()
    {
        if (Directory.Exists(WorkDir)) Directory.Delete(WorkDir, recursive: true);
    }
}
