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
            Sparse =
                new SparseAttentionConfig(KernelSize: 8, KernelStride: 4, InitBlocks: 1, BlockSize: 16, WindowSize: 32,
                TopK: 4, DenseLen: 48),
        };
        config.WriteJson(Path.Combine(_dir, "config.json"));
    }

    private MiniCpmModel Load(bool? sparse) =>
        MiniCpmModel.Load(_dir,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, SparseAttention = sparse });

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

    private static readonly SparseAttentionOverrides TestSettings = new()
    {
        KernelSize = 8, KernelStride = 4, InitBlocks = 1, BlockSize = 16, WindowSize = 32, TopK = 4, DenseLen = 48,
    };

    private static int[] RandomTokens(int vocab, int n)
    {
        var rng = new Random(11);
        return Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
    }

    [Test]
    public void OverridesReplaceSettingsOfTheCheckpoint()
    {
        using var asStored = Load(null);
        using var fewerBlocks =
            MiniCpmModel.Load(_dir,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, SparseOverrides = new() { TopK = 1 } });
        using var laterSwitch =
            MiniCpmModel.Load(_dir,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2,
            SparseOverrides = new() { DenseLen = 4096 } });
        using var dense = Load(false);
        Assert.That(fewerBlocks.SparseAttention, Is.EqualTo(asStored.Config.Sparse! with { TopK = 1 }));
        Assert.That(laterSwitch.SparseAttention, Is.EqualTo(asStored.Config.Sparse! with { DenseLen = 4096 }));

        var tokens = RandomTokens(asStored.Config.VocabSize, 200);
        int v = asStored.Config.VocabSize;
        var stored = Logits(asStored, tokens);
        Assert.That(MaxDiff(Logits(fewerBlocks, tokens), stored, 150 * v, 200 * v), Is.GreaterThan(1e-3),
            "top-k 1 selects fewer blocks than top-k 4");
        Assert.That(Logits(laterSwitch, tokens), Is.EqualTo(Logits(dense, tokens)),
            "below the new dense_len attention stays dense");
    }

    [Test]
    public void OverridesTurnInfLlmOnForACheckpointWithoutSparseConfig()
    {
        using var tiny =
            MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2 });
        Assert.That(tiny.SparseAttention, Is.Null, "no sparse_config: dense");
        using var turnedOn =
            MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, SparseOverrides = TestSettings });
        using var configured = Load(null);
        Assert.That(turnedOn.SparseAttention, Is.EqualTo(configured.SparseAttention));
        var tokens = RandomTokens(tiny.Config.VocabSize, 160);
        Assert.That(Logits(turnedOn, tokens), Is.EqualTo(Logits(configured, tokens)),
            "the same weights and settings as the sparse checkpoint");
    }

    [Test]
    public void BadOverridesAreRejected()
    {
        var e = Assert.Throws<MiniCpmInvalidArgumentException>(() =>
            MiniCpmModel.Load(_dir,
                new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, SparseOverrides = new() { BlockSize = 10 } })
                .Dispose());
        Assert.That(e!.Message,
            Does.Contain("SparseAttentionOverrides.BlockSize").And.Not.Contain("sparse_block_size"));
        Assert.Throws<ArgumentException>(() =>
            MiniCpmModel.Load(_dir,
                new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, SparseAttention = false,
                SparseOverrides = new() { TopK = 8 } }).Dispose());
    }

    [Test]
    public void OverridesParseFromConfigNames()
    {
        Assert.That(SparseAttentionOverrides.Parse("topk=16, dense_len=-1"),
            Is.EqualTo(new SparseAttentionOverrides { TopK = 16, DenseLen = -1 }));
        Assert.That(
            SparseAttentionOverrides.Parse(
            "kernel_size=8,kernel_stride=4,init_blocks=1,block_size=16,window_size=32,topk=4,dense_len=48"),
            Is.EqualTo(TestSettings));
        foreach (string bad in new[] { "", "topk", "topk=x", "topk=1,topk=2", "use_nope=1", "top_k=3", "topk=1.5" })
            Assert.Throws<FormatException>(() => SparseAttentionOverrides.Parse(bad), bad);
    }

    [Test]
    public void UseNopeFallsBackToDenseUnlessSparseIsRequired()
    {
        var nope = Path.Combine(Path.GetDirectoryName(_dir)!, "tiny-sparse-nope");
        Directory.CreateDirectory(nope);
        foreach (var file in Directory.GetFiles(_dir)) File.Copy(file, Path.Combine(nope, Path.GetFileName(file)),
            overwrite: true);
        var config = MiniCpmConfig.Load(Path.Combine(nope, "config.json"));
        (config with { Sparse = config.Sparse! with { UseNope = true } }).WriteJson(Path.Combine(nope, "config.json"));

        var log = new List<string>();
        using (var m =
            MiniCpmModel.Load(nope, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, Log = log.Add }))
            Assert.That(m.SparseAttention, Is.Null);
        Assert.That(log, Has.Some.Contains("use_nope"));
        var e = Assert.Throws<MiniCpmUnsupportedException>(() =>
            MiniCpmModel.Load(nope,
                new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, SparseAttention = true }));
        Assert.That(e!.Message, Does.Contain("sparse_use_nope"));
    }
}
