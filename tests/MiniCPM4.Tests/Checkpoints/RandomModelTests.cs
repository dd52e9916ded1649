using System.Buffers.Binary;
using System.Text.Json;
using MiniCPM4.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Checkpoints;

public class RandomModelTests : TempDirTest
{
    private string Sub(string name) => Path.Combine(Dir, name);

    /// <summary>Reads a safetensors file with an independent, minimal parser: name → raw bytes.</summary>
    private static Dictionary<string, byte[]> ReadIndependently(string path)
    {
        var bytes = File.ReadAllBytes(path);
        int n = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(bytes));
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, n));
        var result = new Dictionary<string, byte[]>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") continue;
            var offs = p.Value.GetProperty("data_offsets");
            int begin = offs[0].GetInt32(), end = offs[1].GetInt32();
            result[p.Name] = bytes.AsSpan(8 + n + begin, end - begin).ToArray();
        }
        return result;
    }

    [Test]
    public void Tiny_RoundTrips_AndIsWellFormed()
    {
        var progress = new List<double>();
        CheckpointWriter.CreateRandomModel(Sub("a"), ModelPreset.Tiny, seed: 42, progress: new SyncProgress(progress));
        Assert.That(progress[^1], Is.EqualTo(1.0));
        Assert.That(progress, Is.Ordered);

        foreach (
            var f in new[] { "config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json",
            "model.safetensors" })
            Assert.That(File.Exists(Path.Combine(Sub("a"), f)), f);
        Assert.That(File.Exists(Path.Combine(Sub("a"), Checkpoint.IndexFileName)), Is.False);
        Assert.That(new FileInfo(Path.Combine(Sub("a"), "model.safetensors")).Length, Is.LessThan(12_000_000));
        Assert.That(
            File.ReadAllBytes(Path.Combine(Sub("a"), "tokenizer.model")).AsSpan().SequenceEqual(
            CheckpointWriter.GetTokenizerModelBytes()), Is.True);
        Assert.That(CheckpointWriter.GetTokenizerModelBytes().Length, Is.GreaterThan(100_000));

        var log = new List<string>();
        using var ck = Checkpoint.Open(Sub("a"), log.Add);
        Assert.That(log, Is.Empty);
        var c = ck.Config;
        Assert.Multiple(() =>
        {
            Assert.That(c.VocabSize, Is.EqualTo(32002));
            Assert.That(c.HiddenSize, Is.EqualTo(128));
            Assert.That(c.NumHiddenLayers, Is.EqualTo(2));
            Assert.That(c.NumAttentionHeads, Is.EqualTo(4));
            Assert.That(c.NumKeyValueHeads, Is.EqualTo(2));
            Assert.That(c.HeadDim, Is.EqualTo(32));
            Assert.That(c.IntermediateSize, Is.EqualTo(384));
            Assert.That(c.MaxPositionEmbeddings, Is.EqualTo(2048));
            Assert.That(c.TieWordEmbeddings, Is.True);
            Assert.That(c.BosTokenId, Is.EqualTo(1));
            Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 2, 32001 }));
            Assert.That(c.TorchDtype, Is.EqualTo("bfloat16"));
            Assert.That(ck.Generation.EosTokenIds, Is.EqualTo(new[] { 2, 32001 }));
        });

        var raw = ReadIndependently(Path.Combine(Sub("a"), "model.safetensors"));
        Assert.That(raw.Keys, Is.EquivalentTo(ck.Tensors.Select(t => t.Name)));
        foreach (var t in ck.Tensors)
        {
            Assert.That(t.DType, Is.EqualTo(TensorDType.BF16));
            Assert.That(t.GetBytes().SequenceEqual(raw[t.Name]), Is.True, t.Name);
        }

        // Value ranges (see CheckpointWriter.RandomRange): layer norms in [0.8, 1.2]; the final norm of a tied
        // model raised by 6·hidden/dim_model_base = 12; embeddings with std 2/(12·sqrt(128)); input projections
        // std 1/sqrt(fan_in), output projections 3/sqrt(fan_in); no NaN.
        Stats(ck, "model.layers.0.input_layernorm.weight", out double min, out double max, out _);
        Assert.That(min, Is.GreaterThanOrEqualTo(0.79).And.LessThan(0.85));
        Assert.That(max, Is.LessThanOrEqualTo(1.21).And.GreaterThan(1.15));
        Stats(ck, "model.norm.weight", out min, out max, out _);
        Assert.That(min, Is.GreaterThanOrEqualTo(0.79 * 12).And.LessThan(0.85 * 12));
        Assert.That(max, Is.LessThanOrEqualTo(1.21 * 12).And.GreaterThan(1.15 * 12));
        Stats(ck, "model.embed_tokens.weight", out _, out _, out double embStd);
        Assert.That(embStd, Is.EqualTo(2.0 / (12 * Math.Sqrt(128))).Within(0.001));
        Stats(ck, "model.layers.1.self_attn.q_proj.weight", out _, out _, out double qStd);
        Assert.That(qStd, Is.EqualTo(1.0 / Math.Sqrt(128)).Within(0.003));
        Stats(ck, "model.layers.1.mlp.down_proj.weight", out _, out _, out double downStd);
        Assert.That(downStd, Is.EqualTo(3.0 / Math.Sqrt(384)).Within(0.004));

        using var tok = JsonDocument.Parse(File.ReadAllText(Path.Combine(Sub("a"), "tokenizer_config.json")));
        var root = tok.RootElement;
        Assert.That(root.GetProperty("added_tokens_decoder").GetProperty("32001").GetProperty("content").GetString(),
            Is.EqualTo("<|im_end|>"));
        Assert.That(root.GetProperty("added_tokens_decoder").GetProperty("32000").GetProperty("special").GetBoolean(),
            Is.True);
        Assert.That(root.GetProperty("add_bos_token").GetBoolean(), Is.True);
        Assert.That(root.GetProperty("bos_token").GetString(), Is.EqualTo("<s>"));
        Assert.That(root.GetProperty("eos_token").GetString(), Is.EqualTo("<|im_end|>"));
        Assert.That(root.GetProperty("chat_template").GetString(), Does.Contain("<|im_start|>assistant"));
    }

    private static void Stats(Checkpoint ck, string name, out double min, out double max, out double std)
    {
        Assert.That(ck.TryGetTensor(name, out var t), Is.True);
        var b = t.GetBytes();
        int n = b.Length / 2;
        double sum = 0, sq = 0;
        min = double.MaxValue;
        max = double.MinValue;
        for (int i = 0; i < n; i++)
        {
            double v = CheckpointWriter.Bf16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(b[(2 * i)..]));
            Assert.That(double.IsFinite(v), Is.True);
            sum += v;
            sq += v * v;
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        }
        double mean = sum / n;
        std = Math.Sqrt(sq / n - mean * mean);
    }

    [Test]
    public void SameSeed_IsByteIdentical_DifferentSeed_Differs()
    {
        CheckpointWriter.CreateRandomModel(Sub("a"), ModelPreset.Tiny, seed: 7);
        CheckpointWriter.CreateRandomModel(Sub("b"), ModelPreset.Tiny, seed: 7);
        CheckpointWriter.CreateRandomModel(Sub("c"), ModelPreset.Tiny, seed: 8);
        foreach (var f in Directory.GetFiles(Sub("a")).Select(Path.GetFileName))
            Assert.That(Same("a", "b", f!), Is.True, f);
        Assert.That(Same("a", "c", "model.safetensors"), Is.False);
        Assert.That(Same("a", "c", "config.json"), Is.True);
    }

    private bool Same(string dirA, string dirB, string file) =>
        File.ReadAllBytes(Path.Combine(Sub(dirA), file)).AsSpan().SequenceEqual(
            File.ReadAllBytes(Path.Combine(Sub(dirB), file)));

    [Test]
    public void Sharded_MatchesSingleFile_AndLoadsThroughIndex()
    {
        CheckpointWriter.CreateRandomModel(Sub("single"), ModelPreset.Tiny, 3, TensorDType.F16, null, long.MaxValue);
        CheckpointWriter.CreateRandomModel(Sub("sharded"), ModelPreset.Tiny, 3, TensorDType.F16, null, 500_000);
        var shards = Directory.GetFiles(Sub("sharded"), "*.safetensors").Select(Path.GetFileName).Order().ToArray();
        Assert.That(shards,
            Is.EqualTo(
            new[] { "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors" }));

        using var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(Sub("sharded"), Checkpoint.IndexFileName)));
        using var a = Checkpoint.Open(Sub("single"));
        using var b = Checkpoint.Open(Sub("sharded"));
        Assert.That(index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64(),
            Is.EqualTo(b.TotalBytes));
        Assert.That(b.WeightFiles, Has.Count.EqualTo(3));
        Assert.That(b.TotalBytes, Is.EqualTo(a.TotalBytes));
        for (int i = 0; i < a.Tensors.Count; i++)
        {
            Assert.That(b.Tensors[i].Name, Is.EqualTo(a.Tensors[i].Name));
            Assert.That(b.Tensors[i].DType, Is.EqualTo(TensorDType.F16));
            Assert.That(b.Tensors[i].GetBytes().SequenceEqual(a.Tensors[i].GetBytes()), Is.True, a.Tensors[i].Name);
        }

        // Re-creating as a single file removes the stale shards and index.
        CheckpointWriter.CreateRandomModel(Sub("sharded"), ModelPreset.Tiny, 3, TensorDType.F16);
        Assert.That(Directory.GetFiles(Sub("sharded"), "*.safetensors").Select(Path.GetFileName),
            Is.EqualTo(new[] { "model.safetensors" }));
        Assert.That(File.Exists(Path.Combine(Sub("sharded"), Checkpoint.IndexFileName)), Is.False);
    }

    [Test]
    public void PresetConfigs_HaveTheDocumentedShapes()
    {
        var half = CheckpointWriter.GetPresetConfig(ModelPreset.MiniCpm4_0_5B);
        Assert.That(
            (half.VocabSize, half.HiddenSize, half.NumHiddenLayers, half.NumAttentionHeads, half.NumKeyValueHeads,
            half.HeadDim, half.IntermediateSize, half.TieWordEmbeddings),
            Is.EqualTo((73448, 1024, 24, 16, 2, 64, 4096, true)));
        Assert.That((half.ScaleEmb, half.ScaleDepth, half.DimModelBase), Is.EqualTo((12f, 1.4f, 256f)));
        var big = CheckpointWriter.GetPresetConfig(ModelPreset.MiniCpm4_8B);
        Assert.That(
            (big.VocabSize, big.HiddenSize, big.NumHiddenLayers, big.NumAttentionHeads, big.NumKeyValueHeads,
            big.HeadDim, big.IntermediateSize, big.TieWordEmbeddings),
            Is.EqualTo((73448, 4096, 32, 32, 2, 128, 16384, false)));
        Assert.That(big.RopeScaling!.LongFactor, Has.Length.EqualTo(64).And.All.EqualTo(1f));
        Assert.That(big.RopeScaling.OriginalMaxPositionEmbeddings, Is.EqualTo(32768));
        long bytes8b = Checkpoint.RequiredTensors(big).Sum(r => r.Shape.Aggregate(2L, (x, y) => x * y));
        Assert.That(bytes8b / 1e9, Is.EqualTo(16.4).Within(0.3));
        // The configs survive a write/parse round trip (they are valid by the loader's rules).
        string path = Path.Combine(Dir, "config.json");
        big.WriteJson(path);
        Assert.That(MiniCpmConfig.Load(path).RopeScaling!.ShortFactor, Has.Length.EqualTo(64));
    }

    [TestCase(1.0f, (ushort)0x3F80)]
    [TestCase(-2.0f, (ushort)0xC000)]
    [TestCase(1.00390625f, (ushort)0x3F80)] // exactly halfway between 0x3F80 and 0x3F81: ties to even
    [TestCase(1.01171875f, (ushort)0x3F82)] // halfway between 0x3F81 and 0x3F82: ties to even
    [TestCase(1.0039064f, (ushort)0x3F81)]  // just above halfway: rounds up
    public void Bf16_RoundsToNearestEven(float f, ushort expected)
    {
        Assert.That(CheckpointWriter.FloatToBf16(f), Is.EqualTo(expected));
    }

    private sealed class SyncProgress(List<double> values) : IProgress<double>
    {
        public void Report(double value) => values.Add(value);
    }
}
