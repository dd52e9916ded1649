using MiniCPM4.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Api;

/// <summary>
/// MiniCPM4's long-context LongRoPE option (<see cref="LongContext"/>, <see cref="MiniCpmLoadOptions.LongContext"/>)
/// and the context-budget arithmetic <c>minicpm4 info</c> prints.
/// </summary>
[TestFixture]
public class LongContextTests
{
    private string _dir = null!;

    /// <summary>A one-layer model with MiniCPM4's head_dim 128 (one head), trained context 64, and the tiny fixture's
    /// tokenizer.</summary>
    [OneTimeSetUp]
    public void CreateCheckpoint()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"minicpm4-tests-{Environment.ProcessId}", "head128");
        Directory.CreateDirectory(_dir);
        foreach (var file in Directory.GetFiles(TinyModelFixture.Directory).Where(f => !f.EndsWith(".safetensors")))
            File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)), overwrite: true);
        var config = MiniCpmConfig.Load(Path.Combine(_dir, "config.json")) with
        {
            HiddenSize = 128, NumHiddenLayers = 1, NumAttentionHeads = 1, NumKeyValueHeads = 1, HeadDim = 128,
            IntermediateSize = 128, MaxPositionEmbeddings = 64, RopeScaling = null, TieWordEmbeddings = true,
            TorchDtype = "float32",
        };
        config.WriteJson(Path.Combine(_dir, "config.json"));
        var rng = new Random(7);
        var tensors = new List<(string Name, TensorDType DType, long[] Shape, ReadOnlyMemory<byte> Data)>();
        foreach (var (name, shape, _) in Checkpoint.RequiredTensors(config))
        {
            long n = shape.Aggregate(1L, (a, b) => a * b);
            var values = new float[n];
            bool norm = name.EndsWith("norm.weight", StringComparison.Ordinal);
            for (long i = 0; i < n; i++) values[i] = norm ? 1f + 0.1f * (float)(rng.NextDouble() - 0.5)
                : 0.3f * (float)(rng.NextDouble() - 0.5);
            var bytes = new byte[n * 4];
            Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
            tensors.Add((name, TensorDType.F32, shape, bytes));
        }
        CheckpointWriter.WriteSafetensors(Path.Combine(_dir, "model.safetensors"), tensors);
    }

    private MiniCpmModel Load(int? longContext) =>
        MiniCpmModel.Load(_dir,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, LongContext = longContext });

    [Test]
    public void ExtendSetsThePublishedFactorsAndKeepsTheTrainedContext()
    {
        var c8b = CheckpointWriter.GetPresetConfig(ModelPreset.MiniCpm4_8B);
        var extended = LongContext.Extend(c8b, 131072);
        Assert.That(extended.MaxPositionEmbeddings, Is.EqualTo(131072));
        Assert.That(extended.RopeScaling!.OriginalMaxPositionEmbeddings, Is.EqualTo(32768));
        Assert.That(extended.RopeScaling.ShortFactor, Has.Length.EqualTo(64));
        Assert.That(extended.RopeScaling.ShortFactor, Is.EqualTo(extended.RopeScaling.LongFactor));
        Assert.That(extended.RopeScaling.ShortFactor[0], Is.EqualTo((float)0.9977997200264581));
        Assert.That(extended.RopeScaling.ShortFactor[63], Is.EqualTo((float)124.09569231686116));
        Assert.That(extended.RopeScaling.ShortFactor, Is.Ordered, "the published list grows with the wavelength");
        Assert.That(LongContext.TrainedContext(extended), Is.EqualTo(32768),
            "extending twice keeps the trained context");

        Assert.Throws<ArgumentOutOfRangeException>(() => LongContext.Extend(c8b, 32768));
        var e = Assert.Throws<MiniCpmUnsupportedException>(() =>
            LongContext.Extend(CheckpointWriter.GetPresetConfig(ModelPreset.MiniCpm4_0_5B), 65536))!;
        Assert.That(e.Message, Does.Contain("head_dim 128").And.Contain("head_dim 64"));
    }

    [Test]
    public void LongContextReachesTheEngine()
    {
        using var plain = Load(null);
        using var extended = Load(256);
        Assert.That(extended.Config.MaxPositionEmbeddings, Is.EqualTo(256));
        Assert.That(extended.Config.RopeScaling!.OriginalMaxPositionEmbeddings, Is.EqualTo(64));

        // Beyond the trained 64 positions only the extended model has room.
        Assert.Catch<Exception>(() => plain.CreateSession(new SessionOptions { ContextLength = 200 }).Dispose());
        int[] longPrompt = Enumerable.Range(0, 150).Select(i => 100 + i * 7 % 500).ToArray();
        using (var s = extended.CreateSession(new SessionOptions { ContextLength = 200 }))
        {
            var logits = s.PrefillWithLogits(longPrompt, allPositions: false);
            Assert.That(logits.All(float.IsFinite), Is.True);
        }

        // The rotary frequencies (and HF's attention factor) change, so even a short prompt's logits move.
        int[] prompt = [5, 300, 17, 4000, 9, 21];
        using var a = plain.CreateSession(new SessionOptions { ContextLength = 32 });
        using var b = extended.CreateSession(new SessionOptions { ContextLength = 32 });
        float[] la = a.PrefillWithLogits(prompt, allPositions: false),
            lb = b.PrefillWithLogits(prompt, allPositions: false);
        double diff = la.Zip(lb, (x, y) => Math.Abs(x - y)).Max();
        Assert.That(diff, Is.GreaterThan(1e-4));
    }

    [Test]
    public void ContextBudgetArithmetic()
    {
        var c = CheckpointWriter.GetPresetConfig(ModelPreset.MiniCpm4_8B);
        // K and V, 32 layers, 2 KV heads of 128, bf16.
        Assert.That(ContextBudget.KvBytesPerToken(c, 2), Is.EqualTo(2L * 32 * 256 * 2));
        Assert.That(ContextBudget.KvBytesPerToken(c, 4), Is.EqualTo(2L * 32 * 256 * 4));
        long weights = 16_000_000_000L;
        long budget = 24_000_000_000L;
        Assert.That(ContextBudget.LongestContext(c, weights, budget),
            Is.EqualTo((budget - weights - ContextBudget.ReserveBytes) / (2L * 32 * 256 * 2)));
        Assert.That(ContextBudget.LongestContext(c, 4_500_000_000L, 80_000_000_000L),
            Is.GreaterThanOrEqualTo(128 * 1024),
            "the 8B int4 model takes a 128k cache on an 80 GB GPU");
        Assert.That(ContextBudget.LongestContext(c, 30_000_000_000L, budget), Is.Zero,
            "weights larger than the budget");
        // Issue #5: the 8B int4 model (every projection at 4 bits + an fp16 scale per 128 weights; embedding and
        // untied LM head bf16) with a 32k context in 8 GB.
        long h = c.HiddenSize, q = (long)c.NumAttentionHeads * c.HeadDim, kv = (long)c.NumKeyValueHeads * c.HeadDim,
            ffn = c.IntermediateSize;
        long projections = c.NumHiddenLayers * (2 * h * q + 2 * h * kv + 3 * h * ffn);
        long int4Weights = projections / 2 + projections / 128 * 2 + 2 * (long)c.VocabSize * h * 2;
        Assert.That(int4Weights, Is.InRange(5_000_000_000L, 5_300_000_000L));
        Assert.That(ContextBudget.LongestContext(c, int4Weights, 8_000_000_000L), Is.GreaterThanOrEqualTo(32 * 1024),
            "the 8B int4 model takes a 32k cache in 8 GB");
        // InfLLM v2's pooled keys: fp32, one per 16 tokens plus one per 64, for each layer's K.
        var sparse = c with { Sparse = new SparseAttentionConfig() };
        Assert.That(ContextBudget.KvBytesPerToken(sparse, 2) - ContextBudget.KvBytesPerToken(c, 2),
            Is.EqualTo((long)Math.Ceiling(32 * 256 * 4.0 * (1.0 / 16 + 1.0 / 64))));
    }
}
