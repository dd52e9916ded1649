using MiniCPM4.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Api;

/// <summary>
/// MiniCpmConfig.Sparse reaches the engine: a copy of the tiny checkpoint with a reduced sparse_config
/// (kernel 8/4, block 16, window 32, top-k 4, dense_len 48) runs InfLLM v2, and the load option turns it off.
/// </summary>
[TestFixture]
public class SparseAttentionTests
{
    private string _dir = null!;

    [OneTimeSetUp]
    public void CreateCheckpoint()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"minicpm4-tests-{Environment.ProcessId}", "tiny-sparse");
        Directory.CreateDirectory(_dir);
        foreach (var file in Directory.GetFiles(TinyModelFixture.Directory))
            File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)), overwrite: true);
        var config = MiniCpmConfig.Load(Path.Combine(_dir, "config.json")) with
        {
            Sparse = new SparseAttentionConfig(KernelSize: 8, KernelStride: 4, InitBlocks: 1, BlockSize: 16, WindowSize: 32, TopK: 4, DenseLen: 48),
        };
        config.WriteJson(Path.Combine(_dir, "config.json"));
    }

    private MiniCpmModel Load(bool? sparse) =>
        MiniCpmModel.Load(_dir, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, SparseAttention = sparse });

    private static float[] Logits(MiniCpmModel model, int[] tokens)
    {
        using var s = model.CreateSession(new SessionOptions { ContextLength = 256 });
        return s.PrefillWithLogits(tokens, allPositions: true);
    }

    private static double MaxDiff(float[] a, float[] b, int from, int to)
    {
        double d = 0;
        for (int i = from; i < to; i++) d = Math.Max(d, Math.Abs(a[i] - b[i]));
        return d;
    }

    [Test]
    public void SparseConfigRunsInfLlmAndDenseOptionTurnsItOff()
    {
        using var sparse = Load(null);
        using var dense = Load(false);
        Assert.That(sparse.SparseAttention, Is.EqualTo(sparse.Config.Sparse));
        Assert.That(dense.SparseAttention, Is.Null);

        var rng = new Random(5);
        var tokens = Enumerable.Range(0, 200).Select(_ => rng.Next(sparse.Config.VocabSize)).ToArray();
        int v = sparse.Config.VocabSize;
        var a = Logits(sparse, tokens);
        var b = Logits(dense, tokens);
        // Below 6 selected blocks (96 tokens) nothing is dropped; later the selection prunes.
        Assert.That(MaxDiff(a, b, 0, 64 * v), Is.LessThan(1e-4));
        Assert.That(MaxDiff(a, b, 120 * v, 200 * v), Is.GreaterThan(1e-3), "the sparse path was not taken");

        // Below dense_len the engine runs the dense path: bit-identical.
        var shortPrompt = tokens[..40];
        Assert.That(Logits(sparse, shortPrompt), Is.EqualTo(Logits(dense, shortPrompt)));
    }

    [Test]
    public void UseNopeFallsBackToDenseUnlessSparseIsRequired()
    {
        var nope = Path.Combine(Path.GetDirectoryName(_dir)!, "tiny-sparse-nope");
        Directory.CreateDirectory(nope);
        foreach (var file in Directory.GetFiles(_dir)) File.Copy(file, Path.Combine(nope, Path.GetFileName(file)), overwrite: true);
        var config = MiniCpmConfig.Load(Path.Combine(nope, "config.json"));
        (config with { Sparse = config.Sparse! with { UseNope = true } }).WriteJson(Path.Combine(nope, "config.json"));

        var log = new List<string>();
        using (var m = MiniCpmModel.Load(nope, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, Log = log.Add }))
            Assert.That(m.SparseAttention, Is.Null);
        Assert.That(log, Has.Some.Contains("use_nope"));
        var e = Assert.Throws<MiniCpmUnsupportedException>(() =>
            MiniCpmModel.Load(nope, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, SparseAttention = true }));
        Assert.That(e!.Message, Does.Contain("sparse_use_nope"));
    }
}
