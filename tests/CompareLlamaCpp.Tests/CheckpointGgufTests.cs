using System.Buffers.Binary;
using System.Text.Json.Nodes;
using MiniCPM4.Checkpoints;
using MiniCPM4.CompareLlamaCpp;
using NUnit.Framework;

namespace CompareLlamaCpp.Tests;

/// <summary>The tiny preset (fp32) converted to GGUF: keys, tensors, and through llama.cpp itself, logits.</summary>
[NonParallelizable]
public class CheckpointGgufTests() : TinyCheckpointFixture(TensorDType.F32, seed: 5)
{
    private string _f32 = "";

    [OneTimeSetUp]
    public void ConvertToF32Gguf()  // after the base class has written the checkpoint
    {
        _f32 = Path.Combine(WorkDir, "tiny-F32.gguf");
        CheckpointToGguf.Convert(CheckpointDir, _f32, GgmlType.F32);
    }

    [Test]
    public void HyperparametersAndMuPScalesAreWrittenWithLlamaCppsKeyTypes()
    {
        var r = GgufReader.Read(_f32);
        var c = CheckpointWriter.GetPresetConfig(ModelPreset.Tiny, TensorDType.F32);
        Assert.That(r.Metadata["general.architecture"].Value, Is.EqualTo("minicpm"));
        Assert.That(r.Metadata["general.file_type"], Is.EqualTo((GgufValueType.U32, (object)0u)));
        Assert.That(r.Metadata["minicpm.block_count"],
            Is.EqualTo((GgufValueType.U32, (object)(uint)c.NumHiddenLayers)));
        Assert.That(r.Metadata["minicpm.embedding_length"].Value, Is.EqualTo((uint)c.HiddenSize));
        Assert.That(r.Metadata["minicpm.feed_forward_length"].Value, Is.EqualTo((uint)c.IntermediateSize));
        Assert.That(r.Metadata["minicpm.attention.head_count"].Value, Is.EqualTo((uint)c.NumAttentionHeads));
        Assert.That(r.Metadata["minicpm.attention.head_count_kv"].Value, Is.EqualTo((uint)c.NumKeyValueHeads));
        Assert.That(r.Metadata["minicpm.rope.dimension_count"].Value, Is.EqualTo((uint)c.HeadDim));
        Assert.That(r.Metadata["minicpm.attention.layer_norm_rms_epsilon"],
            Is.EqualTo((GgufValueType.F32, (object)c.RmsNormEps)));
        Assert.That(r.Metadata["minicpm.rope.freq_base"].Value, Is.EqualTo(c.RopeTheta));
        Assert.That(r.Metadata["minicpm.embedding_scale"], Is.EqualTo((GgufValueType.F32, (object)12f)));
        Assert.That((float)r.Metadata["minicpm.residual_scale"].Value, Is.EqualTo(1.4f / MathF.Sqrt(2)).Within(1e-7f));
        Assert.That(r.Metadata["minicpm.logit_scale"].Value, Is.EqualTo(2f),
            "hidden 128 / dim_model_base 64: llama.cpp divides the logits by it");
        Assert.That(r.Metadata.ContainsKey("minicpm.rope.scaling.type"), Is.False, "the tiny preset has no LongRoPE");
    }

    [Test]
    public void VocabularyHasEveryIdWithSentencePieceTypesAndControlAddedTokens()
    {
        var r = GgufReader.Read(_f32);
        var tokens = (object[])r.Metadata["tokenizer.ggml.tokens"].Value;
        var types = (object[])r.Metadata["tokenizer.ggml.token_type"].Value;
        var scores = (object[])r.Metadata["tokenizer.ggml.scores"].Value;
        Assert.That(r.Metadata["tokenizer.ggml.model"].Value, Is.EqualTo("llama"));
        Assert.That(tokens, Has.Length.EqualTo(32002));
        Assert.That(types, Has.Length.EqualTo(32002));
        Assert.That(scores, Has.Length.EqualTo(32002));
        Assert.That(tokens[0], Is.EqualTo("<unk>"));
        Assert.That(types[0], Is.EqualTo(2), "unknown");
        Assert.That(types[1], Is.EqualTo(3), "<s> is a control token");
        Assert.That(tokens[32000], Is.EqualTo("<|im_start|>"));
        Assert.That(tokens[32001], Is.EqualTo("<|im_end|>"));
        Assert.That(types[32000], Is.EqualTo(3));
        Assert.That(types.Count(t => (int)t == 6), Is.EqualTo(256), "byte-fallback pieces");
        Assert.That(r.Metadata["tokenizer.ggml.bos_token_id"].Value, Is.EqualTo(1u));
    }

    [Test]
    public void TensorsHaveLlamaCppNamesGgmlDimsAndTiedOutput()
    {
        var r = GgufReader.Read(_f32);
        var byName = r.Tensors.ToDictionary(t => t.Name);
        Assert.That(r.Tensors, Has.Count.EqualTo(1 + 9 * 2 + 1),
            "token_embd, 9 per layer, output_norm; no output (tied)");
        Assert.That(byName["token_embd.weight"].Dims, Is.EqualTo(new long[] { 128, 32002 }));
        Assert.That(byName["blk.1.attn_k.weight"].Dims, Is.EqualTo(new long[] { 128, 64 }));
        Assert.That(byName["blk.0.ffn_down.weight"].Dims, Is.EqualTo(new long[] { 384, 128 }));
        Assert.That(byName["blk.0.attn_norm.weight"].Dims, Is.EqualTo(new long[] { 128 }));
        Assert.That(byName.ContainsKey("output.weight"), Is.False);
        Assert.That(r.Tensors.All(t => t.Offset % 32 == 0 && t.Type == (uint)GgmlType.F32));
    }

    [Test]
    public void QRowsInTheFileArePermutedAndVRowsAreNot()
    {
        var r = GgufReader.Read(_f32);
        using var checkpoint = Checkpoint.Open(CheckpointDir);
        checkpoint.TryGetTensor("model.layers.0.self_attn.q_proj.weight", out var q);
        checkpoint.TryGetTensor("model.layers.0.self_attn.v_proj.weight", out var v);
        byte[] file = File.ReadAllBytes(_f32);
        float FileValue(string name, long row, long col)
        {
            var t = r.Tensors.Single(x => x.Name == name);
            return BinaryPrimitives.ReadSingleLittleEndian(
                file.AsSpan((int)(r.DataStart + t.Offset + (row * t.Dims[0] + col) * 4)));
        }
        float Source(CheckpointTensor t, long row, long col) =>
            BinaryPrimitives.ReadSingleLittleEndian(t.GetBytes()[(int)((row * t.Shape[1] + col) * 4)..]);
        // Head dimension 32: output row 1 of a head is its second half's first row (16); row 2 is row 1; head 1 starts
        // at 32.
        Assert.That(FileValue("blk.0.attn_q.weight", 1, 5), Is.EqualTo(Source(q, 16, 5)));
        Assert.That(FileValue("blk.0.attn_q.weight", 2, 5), Is.EqualTo(Source(q, 1, 5)));
        Assert.That(FileValue("blk.0.attn_q.weight", 35, 7), Is.EqualTo(Source(q, 32 + 16 + 1, 7)));
        Assert.That(FileValue("blk.0.attn_v.weight", 1, 5), Is.EqualTo(Source(v, 1, 5)));
    }

    [Test]
    public void LlamaCppLogitsMatchOursOnTheF32Gguf()
    {
        var result = CrossCheck.Run(CheckpointDir, _f32, CrossCheck.DefaultText, decodeSteps: 4, threads: 2);
        TestContext.Out.WriteLine(
            $"max |ours - llama.cpp| {result.MaxAbsDifference:E2} over {result.Positions} positions (max |logit| " +
            $"{result.MaxAbsLogit:G4})");
        Assert.That(result.TokenizersAgree, Is.True, result.TokenizerReport);
        Assert.That(result.Positions, Is.GreaterThanOrEqualTo(30));
        Assert.That(result.MaxAbsLogit, Is.GreaterThan(0.5), "the logits are not trivially zero");
        Assert.That(result.MaxAbsDifference, Is.LessThan(LogitTolerance.Default));
    }

    [Test]
    public void TheCrossCheckDetectsUnpermutedQkRows()
    {
        string unpermuted = Path.Combine(WorkDir, "tiny-F32-unpermuted.gguf");
        CheckpointToGguf.Convert(CheckpointDir, unpermuted, GgmlType.F32, permuteQK: false);
        var result = CrossCheck.Run(CheckpointDir, unpermuted, CrossCheck.DefaultText, decodeSteps: 0, threads: 2);
        TestContext.Out.WriteLine($"unpermuted: max |ours - llama.cpp| {result.MaxAbsDifference:E2}");
        Assert.That(result.MaxAbsDifference, Is.GreaterThan(100 * LogitTolerance.Default));
    }

    [Test]
    public void LongRopeFactorsReachLlamaCpp()
    {
        // Short factors away from 1 (the context stays within original_max_position_embeddings, so both engines use
        // them): the GGUF with the factors matches, the GGUF of the same weights without them does not.
        string withFactors =
            CopyWithRopeScaling("tiny-longrope", Enumerable.Range(0, 16).Select(i => 1f + 0.05f * i).ToArray());
        string withoutFactors = CopyWithRopeScaling("tiny-ones", Enumerable.Repeat(1f, 16).ToArray());
        string matching = Path.Combine(WorkDir, "tiny-longrope.gguf"),
            mismatched = Path.Combine(WorkDir, "tiny-ones.gguf");
        CheckpointToGguf.Convert(withFactors, matching, GgmlType.F32);
        CheckpointToGguf.Convert(withoutFactors, mismatched, GgmlType.F32);

        var r = GgufReader.Read(matching);
        Assert.That(r.Metadata["minicpm.rope.scaling.type"].Value, Is.EqualTo("longrope"));
        Assert.That(r.Metadata["minicpm.rope.scaling.original_context_length"].Value, Is.EqualTo(2048u));
        Assert.That(r.Tensors.Single(t => t.Name == "rope_factors_short.weight").Dims, Is.EqualTo(new long[] { 16 }));

        var good = CrossCheck.Run(withFactors, matching, CrossCheck.DefaultText, decodeSteps: 2, threads: 2);
        var bad = CrossCheck.Run(withFactors, mismatched, CrossCheck.DefaultText, decodeSteps: 0, threads: 2);
        TestContext.Out.WriteLine(
            $"LongRoPE: {good.MaxAbsDifference:E2} with the factors, {bad.MaxAbsDifference:E2} without");
        Assert.That(good.MaxAbsDifference, Is.LessThan(LogitTolerance.Default));
        Assert.That(bad.MaxAbsDifference, Is.GreaterThan(100 * LogitTolerance.Default));
    }

    private string CopyWithRopeScaling(string name, float[] shortFactor)
    {
        string dir = Path.Combine(WorkDir, name);
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(CheckpointDir)) File.Copy(file,
            Path.Combine(dir, Path.GetFileName(file)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        config["rope_scaling"] = new JsonObject
        {
            ["rope_type"] = "longrope",
            ["short_factor"] = new JsonArray(shortFactor.Select(f => (JsonNode)f).ToArray()),
            ["long_factor"] = new JsonArray(Enumerable.Range(0, 16).Select(i => (JsonNode)(1f + 0.2f * i)).ToArray()),
            ["original_max_position_embeddings"] = 2048,
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return dir;
    }

    [TestCase(GgmlType.Q4_0)]
    [TestCase(GgmlType.Q8_0)]
    public void LlamaCppQuantizesTheLinearsAndKeepsTheTiedEmbeddingBf16(GgmlType type)
    {
        string bf16 = Path.Combine(WorkDir, "tiny-BF16.gguf"), quantized = Path.Combine(WorkDir, $"tiny-{type}.gguf");
        if (!File.Exists(bf16)) CheckpointToGguf.Convert(CheckpointDir, bf16, GgmlType.BF16);
        LlamaCppEngine.Quantize(bf16, quantized, type, threads: 2);
        var r = GgufReader.Read(quantized);
        var byName = r.Tensors.ToDictionary(t => t.Name, t => (GgmlType)t.Type);
        Assert.That(byName["token_embd.weight"], Is.EqualTo(GgmlType.BF16));
        var linears =
            byName.Where(kv => kv.Key.StartsWith("blk.", StringComparison.Ordinal) && !kv.Key.Contains("norm")).Select(
            kv => kv.Value).ToList();
        Assert.That(linears, Has.Count.EqualTo(14));
        Assert.That(linears, Is.All.EqualTo(type));
        Assert.That(byName["output_norm.weight"], Is.EqualTo(GgmlType.F32));
        Assert.That(r.TypeSummary(), Is.EqualTo($"BF16 1, F32 5, {type} 14"));
    }
}
