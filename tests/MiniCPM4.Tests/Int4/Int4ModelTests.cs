using System.Text.Json;
using MiniCPM4.Checkpoints;
using MiniCPM4.Tests.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Int4;

/// <summary>
/// Whole-model int4 through the managed API on the tiny random checkpoint (hidden 128, q 128, kv 64, FFN 384: every
/// linear fits the Marlin layout): quantize-on-load, the Marlin checkpoint <c>WriteInt4Checkpoint</c> writes and its
/// AutoGPTQ variant give bit-identical logits; int4 logits stay close to the dense model's (and a wrong scale
/// permutation does not); int4 works with sessions, sampling, sparse attention and speculative decoding; malformed int4
/// data fails naming the tensor.
/// </summary>
[TestFixture, NonParallelizable]
public class Int4ModelTests
{
    private string _root = null!;
    private string _dense = null!;
    private string _marlin = null!;
    private string _gptq = null!;

    private static readonly string[] Texts =
    [
        "Once upon a time there was a little fox who lived at the edge of a great forest.",
        "The committee will meet on Tuesday to discuss the budget for the coming year.",
        "In 1887 the railway reached the valley, and with it came new families and new trades.",
    ];

    [OneTimeSetUp]
    public void WriteCheckpoints()
    {
        _root = Path.Combine(Path.GetTempPath(), $"minicpm4-tests-{Environment.ProcessId}", "int4-"
            + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_root);
        _dense = TinyModelFixture.Directory;
        _marlin = Path.Combine(_root, "marlin");
        _gptq = Path.Combine(_root, "gptq");
        CheckpointWriter.WriteInt4Checkpoint(_dense, _marlin, new Int4WriteOptions { Threads = 2 });
        CheckpointWriter.WriteInt4Checkpoint(_dense, _gptq,
            new Int4WriteOptions { Format = Int4CheckpointFormat.Gptq, Threads = 2 });
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    internal static MiniCpmModel Load(string dir, WeightQuantization quantization = WeightQuantization.None,
        string? draft = null,
        bool clip = false, bool? sparse = null, CpuPrecision precision = CpuPrecision.Default) =>
        MiniCpmModel.Load(dir, new MiniCpmLoadOptions
        {
            Device = ComputeDevice.Cpu, Threads = 2, Quantization = quantization, QuantizationClipSearch = clip,
                DraftDirectory = draft,
            SparseAttention = sparse, CpuPrecision = precision,
        });

    private static float[] Logits(MiniCpmModel model, int[] ids)
    {
        using var s = model.CreateSession(new SessionOptions { ContextLength = 256 });
        return s.PrefillWithLogits(ids, allPositions: true);
    }

    private static float[] AllLogits(MiniCpmModel model) =>
        Texts.SelectMany(t => Logits(model, model.EncodePrompt(t))).ToArray();

    private static void AssertBitwiseEqual(float[] a, float[] b, string what)
    {
        Assert.That(b, Has.Length.EqualTo(a.Length), what);
        int diff =
            Enumerable.Range(0, a.Length).Count(i =>
            BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i]));
        Assert.That(diff, Is.Zero, $"{what}: {diff} of {a.Length} logits differ");
    }

    /// <summary>Relative L2 error of <paramref name="b"/> against <paramref name="a"/>, and the fraction of positions
    /// whose argmax agrees.</summary>
    internal static (double RelativeError, double Top1) Compare(float[] a, float[] b, int vocab)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++)
        {
            num += (a[i] - (double)b[i]) * (a[i] - (double)b[i]);
            den += (double)a[i] * a[i];
        }
        int rows = a.Length / vocab, same = 0;
        for (int r = 0; r < rows; r++)
            if (ArgMax(a.AsSpan(r * vocab, vocab)) == ArgMax(b.AsSpan(r * vocab, vocab))) same++;
        return (Math.Sqrt(num / den), (double)same / rows);
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    [Test]
    public void QuantizeOnLoad_MarlinCheckpoint_And_GptqCheckpoint_GiveBitIdenticalLogits()
    {
        using var dense = Load(_dense);
        using var onLoad = Load(_dense, WeightQuantization.Int4);
        using var marlin = Load(_marlin);
        using var gptq = Load(_gptq);
        using var marlinAgain = Load(_marlin, WeightQuantization.Int4); // Int4 on an int4 checkpoint changes nothing

        Assert.That(dense.Quantization, Is.EqualTo(WeightQuantization.None));
        Assert.That(dense.Int4LinearCount, Is.Zero);
        foreach (var m in new[] { onLoad, marlin, gptq, marlinAgain })
        {
            Assert.That(m.Quantization, Is.EqualTo(WeightQuantization.Int4));
            Assert.That(m.Int4LinearCount, Is.EqualTo(14),
                "7 linears x 2 layers, fused qkv/gate_up counted per projection");
            Assert.That(m.WeightBytes, Is.EqualTo(onLoad.WeightBytes));
        }
        // The loader's arena plan is exact for every format: one allocation holds every tensor, with no byte spare.
        foreach (var m in new[] { dense, onLoad, marlin, gptq, marlinAgain })
        {
            var arena = m.WeightArenaUse;
            Assert.That(arena.Separate, Is.Zero, "tensors outside the weight arena");
            Assert.That(arena.Used, Is.EqualTo(arena.Reserved), "weight arena bytes used vs reserved");
            Assert.That(arena.Reserved, Is.GreaterThanOrEqualTo(m.WeightBytes).And.LessThan(m.WeightBytes + 256 * 200));
        }
        Assert.That(onLoad.WeightBytes, Is.LessThan(dense.WeightBytes));

        var expected = AllLogits(onLoad);
        AssertBitwiseEqual(expected, AllLogits(marlin),
            "Marlin checkpoint (fused qkv_proj / gate_up_proj) vs quantize-on-load");
        AssertBitwiseEqual(expected, AllLogits(gptq), "AutoGPTQ checkpoint (repacked at load) vs quantize-on-load");
        AssertBitwiseEqual(expected, AllLogits(marlinAgain), "Int4 option on a Marlin checkpoint");
        Assert.That(AllLogits(dense), Is.Not.EqualTo(expected), "int4 must differ from the dense model");
    }

    /// <summary>
    /// The bound int4 logits must meet against the bf16 model. Round-to-nearest int4 with the per-group absmax scale
    /// moves
    /// each weight by up to s/2 = absmax/15: an RMS error of 1/15 of a uniform weight's spread (~7% of its RMS), and 14
    /// quantized linears in series compound that. On these random models (flat logits, nothing trained to be robust) it
    /// measures 0.21-0.29 relative logit error with 52-60% top-1 agreement (printed by the tests); the bound leaves
    /// headroom above that and sits far below what a broken layout gives (unpermuted scales: 1.3, garbled codes: ~1).
    /// The exactness check is separate: the int4 model equals the dense model of its dequantized weights to 1e-4.
    /// </summary>
    private const double MaxRelativeError = 0.45;
    private const double MinTop1 = 0.4;

    [Test]
    public void Int4Logits_AreCloseToTheDenseModel()
    {
        using var dense = Load(_dense);
        using var int4 = Load(_dense, WeightQuantization.Int4);
        var (err, top1) = Compare(AllLogits(dense), AllLogits(int4), dense.Config.VocabSize);
        TestContext.Out.WriteLine($"tiny model: int4 vs bf16 relative logit error {err:F4}, top-1 agreement {top1:P1}");
        Assert.That(err, Is.LessThan(MaxRelativeError));
        Assert.That(err, Is.GreaterThan(1e-4), "int4 cannot be exact");
        Assert.That(top1, Is.GreaterThanOrEqualTo(MinTop1));
    }

    [Test]
    public void HandPackedReference_MatchesTheEngine_AndAWrongScalePermutationIsCaught()
    {
        // A dense model whose rows have different magnitudes (so scales differ between columns), then int4 checkpoints
        // packed by the C# reference: with Marlin's scale permutation (must equal the engine's quantize-on-load bit for
        // bit) and without it (must break the error bound). The exact CPU path: the claims below are about the weights.
        string graded = Path.Combine(_root, "graded");
        WriteGraded(_dense, graded);
        string right = Path.Combine(_root, "graded-ref"), wrong = Path.Combine(_root, "graded-wrong-perm");
        WriteReferenceMarlin(graded, right, permuteScales: true);
        WriteReferenceMarlin(graded, wrong, permuteScales: false);

        string dequantized = Path.Combine(_root, "graded-dequantized");
        WriteDequantized(graded, dequantized);

        const CpuPrecision Exact = CpuPrecision.Exact;
        using var dense = Load(graded, precision: Exact);
        using var onLoad = Load(graded, WeightQuantization.Int4, precision: Exact);
        using var reference = Load(right, precision: Exact);
        using var broken = Load(wrong, precision: Exact);
        using var exact = Load(dequantized, precision: Exact);
        var d = AllLogits(dense);
        var q = AllLogits(onLoad);
        AssertBitwiseEqual(q, AllLogits(reference), "C# reference packing vs the engine's quantize-on-load");
        int vocab = dense.Config.VocabSize;

        // The int4 model is the dense model of its dequantized weights (q - 8) * s, up to fp32 summation order.
        var x = AllLogits(exact);
        var b = AllLogits(broken);
        var (exactErr, exactTop1) = Compare(x, q, vocab);
        var (brokenExactErr, _) = Compare(x, b, vocab);
        var (err, top1) = Compare(d, q, vocab);
        var (badErr, badTop1) = Compare(d, b, vocab);
        TestContext.Out.WriteLine(
            $"graded model: int4 vs dequantized-dense error {exactErr:E2} (top-1 {exactTop1:P1}); unpermuted scales " +
            $"vs " +
                                  $"dequantized-dense {brokenExactErr:F4}");
        TestContext.Out.WriteLine(
            $"graded model: int4 vs bf16 error {err:F4} (top-1 {top1:P1}); unpermuted scales vs bf16: error " +
            $"{badErr:F4} (top-1 {badTop1:P1})");
        Assert.That(exactErr, Is.LessThan(1e-4));
        Assert.That(exactTop1, Is.EqualTo(1.0));
        Assert.That(brokenExactErr, Is.GreaterThan(1e-2), "a wrong scale layout is not the dequantized model");
        Assert.That(err, Is.LessThan(MaxRelativeError));
        Assert.That(top1, Is.GreaterThanOrEqualTo(MinTop1));
        Assert.That(badErr, Is.GreaterThan(MaxRelativeError), "the closeness bound must catch a wrong scale layout");
    }

    /// <summary>A dense F32 checkpoint holding the reference dequantization (q - 8) * s of every linear of <paramref
    /// name="source"/>.</summary>
    private static void WriteDequantized(string source, string dir)
    {
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(source).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
        using var ck = Checkpoint.Open(source);
        var tensors = ck.Tensors.Select(t =>
        {
            var data = t.GetBytes().ToArray();
            var dtype = t.DType;
            if (ck.Linears.FirstOrDefault(l => l.Weight == t) is { } l)
            {
                int n = (int)l.OutFeatures, k = (int)l.InFeatures;
                var (q, s) = Int4Reference.Quantize(Int4Reference.FromBf16(data), n, k);
                var w = new float[n * k];
                for (int row = 0; row < n; row++)
                    for (int col = 0; col < k; col++) w[row * k + col] = (q[col, row] - 8) * (float)s[col / 128, row];
                data = w.SelectMany(BitConverter.GetBytes).ToArray();
                dtype = TensorDType.F32;
            }
            return (t.Name, dtype, t.Shape, (ReadOnlyMemory<byte>)data);
        }).ToList();
        CheckpointWriter.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors);
    }

    /// <summary>The tiny model with the rows of every linear scaled by 0.25 .. 2 by (row % 8): unequal scales within
    /// each 8x8 block.</summary>
    private static void WriteGraded(string source, string dir)
    {
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(source).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
        using var ck = Checkpoint.Open(source);
        var linearNames = ck.Linears.Select(l => l.Weight!.Name).ToHashSet();
        var tensors = ck.Tensors.Select(t =>
        {
            var data = t.GetBytes().ToArray();
            if (linearNames.Contains(t.Name))
            {
                var w = Int4Reference.FromBf16(data);
                long k = t.Shape[1];
                for (int i = 0; i < w.Length; i++) w[i] *= 0.25f + 0.25f * (i / k % 8);
                data = Int4Reference.Bf16Bytes(w);
            }
            return (t.Name, t.DType, t.Shape, (ReadOnlyMemory<byte>)data);
        }).ToList();
        CheckpointWriter.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors);
    }

    /// <summary>A per-projection Marlin checkpoint packed by <see cref="Int4Reference"/>.</summary>
    private static void WriteReferenceMarlin(string source, string dir, bool permuteScales)
    {
        Directory.CreateDirectory(dir);
        foreach (
            var f in Directory.GetFiles(source).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)
            && Path.GetFileName(f) != "config.json"))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
        using var ck = Checkpoint.Open(source);
        (ck.Config with { Quantization = QuantizationConfig.Supported }).WriteJson(Path.Combine(dir, "config.json"));
        var tensors = new List<(string, TensorDType, long[], ReadOnlyMemory<byte>)>();
        foreach (var t in ck.OtherTensors) tensors.Add((t.Name, t.DType, t.Shape, t.GetBytes().ToArray()));
        foreach (var l in ck.Linears)
        {
            int n = (int)l.OutFeatures, k = (int)l.InFeatures;
            var (q, s) = Int4Reference.Quantize(Int4Reference.FromBf16(l.Weight!.GetBytes()), n, k);
            tensors.Add(
                (l.Name + ".qweight", TensorDType.I32, [k / 16, 2 * n],
                Int4Reference.Bytes(Int4Reference.PackMarlin(q))));
            tensors.Add((l.Name + ".scales", TensorDType.F16, [k / 128, n],
                Int4Reference.Bytes(permuteScales ? Int4Reference.PermuteScales(s) : Int4Reference.Flat(s))));
        }
        CheckpointWriter.WriteSafetensors(Path.Combine(dir, Checkpoint.GptqFileName), tensors);
    }

    [Test]
    public void ClipSearch_OnLoadEqualsTheWrittenCheckpoint_AndDiffersFromRoundToNearest()
    {
        string clipped = Path.Combine(_root, "marlin-clip");
        CheckpointWriter.WriteInt4Checkpoint(_dense, clipped, new Int4WriteOptions { ClipSearch = true, Threads = 2 });
        using var onLoad = Load(_dense, WeightQuantization.Int4, clip: true);
        using var written = Load(clipped);
        using var rtn = Load(_marlin);
        using var dense = Load(_dense);
        var c = AllLogits(onLoad);
        AssertBitwiseEqual(c, AllLogits(written), "clip search: on load vs written");
        Assert.That(c, Is.Not.EqualTo(AllLogits(rtn)));
        var (err, _) = Compare(AllLogits(dense), c, dense.Config.VocabSize);
        Assert.That(err, Is.LessThan(MaxRelativeError));
    }

    [Test]
    public void Sessions_DecodeMatchesPrefill_AndSeededSamplingIsReproducible()
    {
        using var model = Load(_marlin);
        int v = model.Config.VocabSize;
        var ids = model.EncodePrompt(Texts[0]);
        var prefill = Logits(model, ids);
        using var s = model.CreateSession(new SessionOptions { ContextLength = 128 });
        for (int i = 0; i < ids.Length; i++)
        {
            var row = s.Decode(ids[i]);
            float max = prefill.AsSpan(i * v, v).ToArray().Max(Math.Abs);
            for (int j = 0; j < v; j++)
                Assert.That(row[j], Is.EqualTo(prefill[i * v + j]).Within(1e-4 * Math.Max(1, max)),
                    $"position {i}, token {j}");
        }
        s.Rewind(3);
        Assert.That(s.Decode(ids[3]), Is.EqualTo(prefill.AsSpan(3 * v, v).ToArray()).Within(1e-3f));

        var options =
            new GenerationOptions { MaxTokens = 24, Temperature = 0.9f, TopP = 0.95f, Seed = 11, StopTokenIds = [] };
        Assert.That(Generate(model, options).Result, Is.EqualTo(Generate(model, options).Result));
    }

    private static async Task<List<int>> Generate(MiniCpmModel model, GenerationOptions options)
    {
        using var s = model.CreateSession(new SessionOptions { ContextLength = 256 });
        var ids = new List<int>();
        await foreach (var t in s.GenerateAsync(Texts[1], options))
            if (t.Id >= 0) ids.Add(t.Id);
        return ids;
    }

    [Test]
    public void SparseAttention_WorksWithInt4()
    {
        string sparseDense = Path.Combine(_root, "sparse"), sparseMarlin = Path.Combine(_root, "sparse-marlin");
        Directory.CreateDirectory(sparseDense);
        foreach (var file in Directory.GetFiles(_dense)) File.Copy(file,
            Path.Combine(sparseDense, Path.GetFileName(file)), overwrite: true);
        (MiniCpmConfig.Load(Path.Combine(sparseDense, "config.json")) with
        {
            Sparse =
                new SparseAttentionConfig(KernelSize: 8, KernelStride: 4, InitBlocks: 1, BlockSize: 16, WindowSize: 32,
                TopK: 4, DenseLen: 48),
        }).WriteJson(Path.Combine(sparseDense, "config.json"));
        CheckpointWriter.WriteInt4Checkpoint(sparseDense, sparseMarlin, new Int4WriteOptions { Threads = 2 });

        using var marlin = Load(sparseMarlin);
        using var onLoad = Load(sparseDense, WeightQuantization.Int4);
        using var denseAttention = Load(sparseMarlin, sparse: false);
        Assert.That(marlin.SparseAttention, Is.Not.Null, "quantize keeps sparse_config");
        var rng = new Random(5);
        var tokens = Enumerable.Range(0, 200).Select(_ => rng.Next(marlin.Config.VocabSize)).ToArray();
        var a = Logits(marlin, tokens);
        AssertBitwiseEqual(a, Logits(onLoad, tokens), "sparse int4: checkpoint vs on load");
        var b = Logits(denseAttention, tokens);
        int v = marlin.Config.VocabSize;
        double late = 0;
        for (int i = 120 * v; i < 200 * v; i++) late = Math.Max(late, Math.Abs(a[i] - b[i]));
        Assert.That(late, Is.GreaterThan(1e-3), "the sparse path was taken");
    }

    // ---- speculative decoding -----------------------------------------------------------------------------------

    private static async Task<List<int>> GenerateIds(MiniCpmModel model, GenerationOptions options)
    {
        using var s = model.CreateSession(new SessionOptions { ContextLength = 256 });
        var ids = new List<int>();
        await foreach (var t in s.GenerateAsync("Once upon a time", options))
            if (t.Id >= 0) ids.Add(t.Id);
        return ids;
    }

    [Test]
    public async Task Speculative_Int4TargetAndInt4Draft_GreedyEqualsPlainGreedy()
    {
        var target = MiniCpmConfig.Load(Path.Combine(_dense, "config.json"));
        string draft = Path.Combine(_root, "draft"), marlinDraft = Path.Combine(_root, "draft-marlin");
        CheckpointWriter.CreateRandomDraft(draft, target, seed: 9, TensorDType.BF16);
        WriteMarlinDraft(draft, marlinDraft);

        using var plain = Load(_dense, WeightQuantization.Int4);
        using var spec = Load(_dense, WeightQuantization.Int4, draft: draft);        // both quantized on load
        // CPM.cu-style Marlin target and draft
        using var specMarlin = Load(_marlin, draft: marlinDraft);
        using var specDenseDraft = Load(_marlin, draft: draft);                      // int4 target, dense draft
        Assert.That(spec.Draft!.Int4LinearCount, Is.EqualTo(8), "fc + 7 layer linears");
        Assert.That(specMarlin.Draft!.Int4LinearCount, Is.EqualTo(8));
        Assert.That(specDenseDraft.Draft!.Int4LinearCount, Is.Zero);
        Assert.That(specMarlin.Draft.WeightBytes, Is.EqualTo(spec.Draft.WeightBytes));
        Assert.That(spec.Draft.WeightBytes, Is.LessThan(specDenseDraft.Draft.WeightBytes));

        var greedy = new GenerationOptions { MaxTokens = 40, StopTokenIds = [], RepetitionPenalty = 1.3f };
        var expected = await GenerateIds(plain, greedy);
        Assert.That(expected, Has.Count.EqualTo(40));
        foreach (
            var (m, name) in new[] { (spec, "int4 on load"), (specMarlin, "Marlin checkpoints"),
            (specDenseDraft, "dense draft") })
        {
            using var s = m.CreateSession(new SessionOptions { ContextLength = 256 });
            var ids = new List<int>();
            await foreach (var t in s.GenerateAsync("Once upon a time", greedy))
                if (t.Id >= 0) ids.Add(t.Id);
            Assert.That(ids, Is.EqualTo(expected), name);
            Assert.That(s.Statistics.SpeculativeSteps, Is.GreaterThan(0), name);
        }

        var sampled =
            new GenerationOptions { MaxTokens = 30, Temperature = 0.9f, TopP = 0.95f, Seed = 17, StopTokenIds = [] };
        Assert.That(
            await GenerateIds(specMarlin,
            sampled with { Speculative = new SpeculativeOptions(NumIterations: 3, TopKPerIteration: 4, TreeSize: 16) }),
            Is.EqualTo(await GenerateIds(plain, sampled)));
    }

    [Test]
    public void BadQuantizedDrafts_FailNamingTheProblem()
    {
        var target = MiniCpmConfig.Load(Path.Combine(_dense, "config.json"));
        string draft = Path.Combine(_root, "draft-for-errors"),
            marlinDraft = Path.Combine(_root, "draft-for-errors-marlin");
        CheckpointWriter.CreateRandomDraft(draft, target, seed: 4, TensorDType.BF16);
        WriteMarlinDraft(draft, marlinDraft);
        void SetQuantization(string dir, string json)
        {
            var cfg =
                System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            cfg["quantization_config"] = System.Text.Json.Nodes.JsonNode.Parse(json);
            File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        }
        CheckpointException Fails(string dir, params string[] fragments)
        {
            int live = SafetensorsFile.LiveCount;
            var e = Assert.Throws<CheckpointException>(() => Load(_marlin, draft: dir).Dispose())!;
            foreach (var f in fragments) Assert.That(e.Message, Does.Contain(f));
            Assert.That(SafetensorsFile.LiveCount, Is.EqualTo(live));
            return e;
        }

        SetQuantization(marlinDraft, """{"bits": 4, "group_size": 64}""");
        Fails(marlinDraft, "quantization_config.group_size is 64; only 128 is supported",
            Path.Combine(marlinDraft, "config.json"));
        SetQuantization(marlinDraft, """{"bits": 4, "group_size": 128}""");

        // A dense draft that claims to be quantized, and an int4 draft that does not say so.
        string claims = Path.Combine(_root, "draft-claims");
        Directory.CreateDirectory(claims);
        foreach (var f in Directory.GetFiles(draft)) File.Copy(f, Path.Combine(claims, Path.GetFileName(f)),
            overwrite: true);
        SetQuantization(claims, """{"group_size": 128}""");
        Fails(claims, "quantization_config but no linear layer has int4 tensors");
        string silent = Path.Combine(_root, "draft-silent");
        Directory.CreateDirectory(silent);
        foreach (var f in Directory.GetFiles(marlinDraft)) File.Copy(f, Path.Combine(silent, Path.GetFileName(f)),
            overwrite: true);
        File.Copy(Path.Combine(draft, "config.json"), Path.Combine(silent, "config.json"), overwrite: true);
        Fails(silent, "is an int4 tensor but config.json has no quantization_config");

        // fc in AutoGPTQ's shape ([2H/8, H]) is not CPM.cu's fc: named with both shapes.
        string badFc = CopyWithEdit(marlinDraft, "draft-bad-fc", "fc.scales", _ => { });
        var tensors = new List<(string, TensorDType, long[], ReadOnlyMemory<byte>)>();
        string weights = Path.Combine(badFc, Checkpoint.GptqFileName);
        using (var file = SafetensorsFile.Open(weights))
            foreach (var t in file.Tensors.Values)
                tensors.Add(t.Name == "fc.qweight"
                    ? (t.Name, TensorDType.I32, [32, 128], new byte[32 * 128 * 4])
                    : (t.Name, t.DType, t.Shape, file.GetBytes(t).ToArray()));
        CheckpointWriter.WriteSafetensors(weights, tensors);
        Fails(badFc, "tensor 'fc.qweight' has shape [32, 128]", "implies [8, 512]");
    }

    /// <summary>CPM.cu's quantized draft layout: fc.qweight / fc.scales = concat_N(marlin(fc1), marlin(fc2)), fused
    /// qkv_proj and gate_up_proj.</summary>
    private static unsafe void WriteMarlinDraft(string source, string dir)
    {
        Directory.CreateDirectory(dir);
        var settings = new Int4Settings(false, 2);
        var cfg =
            System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        cfg["quantization_config"] = new System.Text.Json.Nodes.JsonObject { ["bits"] = 4, ["group_size"] = 128 };
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        using var file = SafetensorsFile.Open(Path.Combine(source, "model.safetensors"));
        CheckpointTensor T(string name) => new(file, file.Tensors[name]);
        MarlinTensors Q(string name)
        {
            var t = T(name);
            return Int4Weights.Quantize(name, t.FilePath, t.DType, t.Pointer, t.ByteLength, t.Shape[0], t.Shape[1],
                settings);
        }
        var tensors = new List<(string, TensorDType, long[], ReadOnlyMemory<byte>)>();
        void Add(string module, MarlinTensors m)
        {
            tensors.Add((module + ".qweight", TensorDType.I32, m.QWeightShape, m.QWeight.ToArray()));
            tensors.Add((module + ".scales", TensorDType.F16, m.ScalesShape, m.Scales.ToArray()));
            m.Dispose();
        }
        var fc = T("fc.weight");
        Add("fc", Int4Weights.QuantizeDraftFc(fc, fc.Shape[0], settings));
        foreach (var name in file.Tensors.Keys.Where(n => !n.StartsWith("fc.weight") && !n.Contains("_proj")))
            tensors.Add((name, file.Tensors[name].DType, file.Tensors[name].Shape, T(name).GetBytes().ToArray()));
        var qkv = new[] { "q", "k", "v" }.Select(p => Q($"layers.0.self_attn.{p}_proj.weight")).ToList();
        Add("layers.0.self_attn.qkv_proj", Int4Weights.ConcatN(qkv));
        qkv.ForEach(m => m.Dispose());
        Add("layers.0.self_attn.o_proj", Q("layers.0.self_attn.o_proj.weight"));
        var gateUp = new[] { "gate", "up" }.Select(p => Q($"layers.0.mlp.{p}_proj.weight")).ToList();
        Add("layers.0.mlp.gate_up_proj", Int4Weights.ConcatN(gateUp));
        gateUp.ForEach(m => m.Dispose());
        Add("layers.0.mlp.down_proj", Q("layers.0.mlp.down_proj.weight"));
        CheckpointWriter.WriteSafetensors(Path.Combine(dir, Checkpoint.GptqFileName), tensors);
    }

    // ---- bad int4 data at load --------------------------------------------------------------------------------------

    /// <summary>A copy of <paramref name="source"/> whose weights file has one tensor's bytes edited.</summary>
    private string CopyWithEdit(string source, string name, string tensor, Action<byte[]> edit)
    {
        string dir = Path.Combine(_root, name);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(source)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)),
            overwrite: true);
        string weights = Directory.GetFiles(dir, "*.safetensors").Single();
        List<(string, TensorDType, long[], ReadOnlyMemory<byte>)> tensors;
        using (var file = SafetensorsFile.Open(weights))
        {
            tensors = file.Tensors.Values.OrderBy(t => t.DataOffset).Select(t =>
            {
                var data = file.GetBytes(t).ToArray();
                if (t.Name == tensor) edit(data);
                return (t.Name, t.DType, t.Shape, (ReadOnlyMemory<byte>)data);
            }).ToList();
        }
        CheckpointWriter.WriteSafetensors(weights, tensors);
        return dir;
    }

    private static void AssertLoadFails<T>(string dir, params string[] fragments) where T : Exception
    {
        int live = SafetensorsFile.LiveCount;
        var e = Assert.Throws<T>(() => Load(dir).Dispose())!;
        foreach (var f in fragments) Assert.That(e.Message, Does.Contain(f), e.Message);
        Assert.That(SafetensorsFile.LiveCount, Is.EqualTo(live), "nothing stays mapped after a failed load");
    }

    [Test]
    public void NaNScales_FailNamingTheTensor()
    {
        string dir =
            CopyWithEdit(_marlin, "nan-scales", "model.layers.1.mlp.gate_up_proj.scales", b =>
            { b[10] = 0x00; b[11] = 0x7e; });
        // The engine splits the fused tensor and names the projection; the loader adds the checkpoint's layer.
        AssertLoadFails<CheckpointException>(dir, Path.Combine(dir, Checkpoint.GptqFileName),
            "int4 layer 'model.layers.1.mlp.gate_up_proj'",
            "model.layers.1.mlp.gate_proj.scales", "scale 5 is not a finite number");
        dir = CopyWithEdit(_gptq, "inf-scales", "model.layers.0.self_attn.o_proj.scales", b =>
            { b[0] = 0x00; b[1] = 0x7c; });
        AssertLoadFails<CheckpointException>(dir, "model.layers.0.self_attn.o_proj", "not a finite number");
    }

    [Test]
    public void ActOrderGIdx_Fails()
    {
        string dir = CopyWithEdit(_gptq, "act-order", "model.layers.0.mlp.down_proj.g_idx", b =>
        {
            // swap g_idx[5] (group 0) and g_idx[300] (group 2)
            var five = b[20..24];
            b.AsSpan(1200, 4).CopyTo(b.AsSpan(20, 4));
            five.CopyTo(b.AsSpan(1200, 4));
        });
        AssertLoadFails<CheckpointException>(dir, "cannot repack the AutoGPTQ tensors 'model.layers.0.mlp.down_proj'",
            "g_idx[5] != k/128",
            "act-order");
    }

    [Test]
    public void QZerosOtherThanSeven_Fail()
    {
        string dir = CopyWithEdit(_gptq, "asym-zeros", "model.layers.1.self_attn.k_proj.qzeros", b => b[2] = 0x78);
        AssertLoadFails<CheckpointException>(dir, "model.layers.1.self_attn.k_proj", "qzeros must encode zero point 8");
    }

    [Test]
    public void QuantizingALayerThatCannotBeInt4_FailsNamingIt()
    {
        string dir = Path.Combine(_root, "ffn192");
        var config =
            Int4Fixtures.Config(intermediate: 192, quantized: false) with { VocabSize = 32002,
            TorchDtype = "bfloat16" };
        Directory.CreateDirectory(dir);
        config.WriteJson(Path.Combine(dir, "config.json"));
        foreach (var f in new[] { "tokenizer.model", "tokenizer_config.json" })
            File.Copy(Path.Combine(_dense, f), Path.Combine(dir, f), overwrite: true);
        int seed = 0;
        CheckpointWriter.WriteSafetensors(Path.Combine(dir, "model.safetensors"),
            Checkpoint.RequiredTensors(config).Select(r =>
            (r.Name, TensorDType.BF16, r.Shape, (ReadOnlyMemory<byte>)Int4Reference.Bf16Bytes(
                Int4Reference.RandomWeights((int)r.Shape[0], r.Shape.Length > 1 ? (int)r.Shape[1] : 1, seed++)))));
        using (var ok = Load(dir)) Assert.That(ok.Int4LinearCount, Is.Zero, "the dense model loads");
        int live = SafetensorsFile.LiveCount;
        var e = Assert.Throws<MiniCpmUnsupportedException>(() => Load(dir, WeightQuantization.Int4).Dispose())!;
        Assert.That(e.Message,
            Does.Contain("cannot quantize to int4: linear 'model.layers.0.mlp.down_proj' [128, 192] cannot be int4"));
        Assert.That(SafetensorsFile.LiveCount, Is.EqualTo(live));
        var w = Assert.Throws<MiniCpmUnsupportedException>(() =>
            CheckpointWriter.WriteInt4Checkpoint(dir, Path.Combine(_root, "ffn192-int4")))!;
        Assert.That(w.Message, Does.Contain("'model.layers.0.mlp.down_proj'"));
    }

    [Test]
    public void NonFiniteDenseWeight_FailsWhenQuantized()
    {
        string dir =
            CopyWithEdit(_dense, "nan-weight", "model.layers.0.self_attn.v_proj.weight", b =>
            { b[2] = 0xc0; b[3] = 0x7f; });
        var e = Assert.Throws<CheckpointException>(() => Load(dir, WeightQuantization.Int4).Dispose())!;
        Assert.That(e.Message,
            Does.Contain("cannot quantize to int4 'model.layers.0.self_attn.v_proj.weight'").And.Contain(
            "w[0][1] is not a finite number"));
    }

    // ---- the writer
    // ---------------------------------------------------------------------------------------------------

    [Test]
    public void MarlinCheckpoint_HasCpmCuLayoutConfigAndFiles()
    {
        Assert.That(File.Exists(Path.Combine(_marlin, "model.safetensors")), Is.False);
        foreach (var f in new[] { "tokenizer.model", "tokenizer_config.json", "generation_config.json" })
            Assert.That(File.ReadAllBytes(Path.Combine(_marlin, f)),
                Is.EqualTo(File.ReadAllBytes(Path.Combine(_dense, f))), f);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(_marlin, "config.json")));
        var q = doc.RootElement.GetProperty("quantization_config");
        Assert.That(q.GetProperty("quant_method").GetString(), Is.EqualTo("gptq"));
        Assert.That(q.GetProperty("bits").GetInt32(), Is.EqualTo(4));
        Assert.That(q.GetProperty("group_size").GetInt32(), Is.EqualTo(128));
        Assert.That(q.GetProperty("desc_act").GetBoolean(), Is.False);
        Assert.That(q.GetProperty("sym").GetBoolean(), Is.True);
        Assert.That(q.GetProperty("static_groups").GetBoolean(), Is.True);
        Assert.That(q.GetProperty("checkpoint_format").GetString(), Is.EqualTo("gptq"));
        Assert.That(q.GetProperty("lm_head").GetBoolean(), Is.False);
        Assert.That(doc.RootElement.GetProperty("hidden_size").GetInt32(), Is.EqualTo(128),
            "the other fields are kept");

        using var file = SafetensorsFile.Open(Path.Combine(_marlin, Checkpoint.GptqFileName));
        var t = file.Tensors;
        Assert.That(t.Keys.Where(k => k.Contains("layers.0.")).Order(), Is.EqualTo(new[]
        {
            "input_layernorm.weight", "mlp.down_proj.qweight", "mlp.down_proj.scales", "mlp.gate_up_proj.qweight",
                "mlp.gate_up_proj.scales",
            "post_attention_layernorm.weight", "self_attn.o_proj.qweight", "self_attn.o_proj.scales",
                "self_attn.qkv_proj.qweight",
            "self_attn.qkv_proj.scales",
        }.Select(n => "model.layers.0." + n)));
        Assert.That(t["model.layers.0.self_attn.qkv_proj.qweight"].Shape, Is.EqualTo(new long[] { 8, 2 * 256 }));
        Assert.That(t["model.layers.0.self_attn.qkv_proj.qweight"].DType, Is.EqualTo(TensorDType.I32));
        Assert.That(t["model.layers.0.mlp.gate_up_proj.scales"].Shape, Is.EqualTo(new long[] { 1, 768 }));
        Assert.That(t["model.layers.0.mlp.gate_up_proj.scales"].DType, Is.EqualTo(TensorDType.F16));
        Assert.That(t["model.layers.0.mlp.down_proj.qweight"].Shape, Is.EqualTo(new long[] { 24, 256 }));
        Assert.That(t["model.embed_tokens.weight"].DType, Is.EqualTo(TensorDType.BF16),
            "the embedding keeps its dtype");
        Assert.That(t.ContainsKey("lm_head.weight"), Is.False, "tied");
    }

    [Test]
    public void GptqCheckpoint_HasAutoGptqTensors_AndConvertsToTheSameMarlinFile()
    {
        using (var file = SafetensorsFile.Open(Path.Combine(_gptq, "model.safetensors")))
        {
            var t = file.Tensors;
            Assert.That(t["model.layers.1.mlp.down_proj.qweight"].Shape, Is.EqualTo(new long[] { 48, 128 }));
            Assert.That(t["model.layers.1.mlp.down_proj.qzeros"].Shape, Is.EqualTo(new long[] { 3, 16 }));
            Assert.That(Int4Reference.Ints(file.GetBytes(t["model.layers.1.mlp.down_proj.qzeros"])).Distinct(),
                Is.EqualTo(new[] { 0x77777777 }));
            Assert.That(Int4Reference.Ints(file.GetBytes(t["model.layers.1.mlp.down_proj.g_idx"])),
                Is.EqualTo(Int4Reference.GIdx(384)));
            Assert.That(t.Keys.Any(k => k.Contains("qkv_proj")), Is.False);
        }
        // AutoGPTQ -> Marlin through the writer (repack) gives the file dense -> Marlin gives.
        string converted = Path.Combine(_root, "gptq-to-marlin");
        var result = CheckpointWriter.WriteInt4Checkpoint(_gptq, converted);
        Assert.That(result.QuantizedLinears, Is.Zero);
        Assert.That(result.RepackedLinears, Is.EqualTo(14));
        Assert.That(File.ReadAllBytes(Path.Combine(converted, Checkpoint.GptqFileName)),
            Is.EqualTo(File.ReadAllBytes(Path.Combine(_marlin, Checkpoint.GptqFileName))));
    }

    [Test]
    public void Writer_RefusesItsSourceNonEmptyOutputsAndMarlinToGptq()
    {
        Assert.Throws<IOException>(() => CheckpointWriter.WriteInt4Checkpoint(_dense, _dense + "/"));
        var e = Assert.Throws<IOException>(() => CheckpointWriter.WriteInt4Checkpoint(_dense, _gptq))!;
        Assert.That(e.Message, Does.Contain("not empty"));
        var u = Assert.Throws<MiniCpmUnsupportedException>(() =>
            CheckpointWriter.WriteInt4Checkpoint(_marlin, Path.Combine(_root, "back"),
                new Int4WriteOptions { Format = Int4CheckpointFormat.Gptq }))!;
        Assert.That(u.Message, Does.Contain("Marlin"));

        // Overwrite replaces the weights (and drops stale ones).
        string again = Path.Combine(_root, "again");
        Directory.CreateDirectory(again);
        File.WriteAllText(Path.Combine(again, "model.safetensors"), "stale");
        var r = CheckpointWriter.WriteInt4Checkpoint(_dense, again, new Int4WriteOptions { Overwrite = true });
        Assert.That(File.Exists(Path.Combine(again, "model.safetensors")), Is.False);
        Assert.That(r.BytesAfter, Is.LessThan(r.BytesBefore));
        Assert.That(r.QuantizedLinears, Is.EqualTo(14));
    }
}
