using NUnit.Framework;

namespace MiniCPM4.Tests.Demo;

/// <summary>
/// The bundled demo model (models/demo) quantized to int4 while loading: its perplexity on held-out English stays
/// within 5% of the bf16 model's (issue #9), and its EAGLE draft, quantized too, still gives plain greedy's text.
/// The held-out text (TestData/heldout-english.txt, about 800 tokens) was written for this test, so it is not in
/// the Brown corpus the model was trained on.
/// </summary>
[TestFixture]
public class DemoInt4Tests
{
    private string _dir = null!;
    private string _text = null!;

    [OneTimeSetUp]
    public void Locate()
    {
        _dir = DemoModelDirectory.Find();
        _text = File.ReadAllText(
            Path.Combine(TestContext.CurrentContext.TestDirectory, "TestData", "heldout-english.txt"));
    }

    private MiniCpmModel Load(WeightQuantization quantization, bool draft = false,
        CpuPrecision precision = CpuPrecision.Default) =>
        MiniCpmModel.Load(_dir, new MiniCpmLoadOptions
    {
        Device = ComputeDevice.Cpu,
        Threads = 2,
        CpuPrecision = precision,
        Quantization = quantization,
        DraftDirectory = draft ? Path.Combine(_dir, "draft") : null,
        FrSpecPath = draft ? Directory.GetFiles(Path.Combine(_dir, "draft"), "freq_*.pt").Single() : null,
    });

    /// <summary>exp of the mean negative log-likelihood of every token after the first, from one prefill with all
    /// logits.</summary>
    private static (double Perplexity, int Tokens) Perplexity(MiniCpmModel model, string text) =>
        Perplexity(model, text, out _);

    private static (double Perplexity, int Tokens) Perplexity(MiniCpmModel model, string text, out float[] logits)
    {
        int[] ids = model.EncodePrompt(text);
        int v = model.Config.VocabSize;
        using var s = model.CreateSession(new SessionOptions { ContextLength = ids.Length });
        logits = s.PrefillWithLogits(ids, allPositions: true);
        double nll = 0;
        for (int i = 0; i + 1 < ids.Length; i++)
        {
            var row = logits.AsSpan(i * v, v);
            double max = double.NegativeInfinity;
            foreach (float x in row) max = Math.Max(max, x);
            double sum = 0;
            foreach (float x in row) sum += Math.Exp(x - max);
            nll -= row[ids[i + 1]] - max - Math.Log(sum);
        }
        return (Math.Exp(nll / (ids.Length - 1)), ids.Length - 1);
    }

    [Test]
    public void Int4PerplexityIsWithinFivePercentOfBf16()
    {
        using var bf16 = Load(WeightQuantization.None);
        using var int4 = Load(WeightQuantization.Int4);
        Assert.That(int4.Int4LinearCount, Is.EqualTo(7 * int4.Config.NumHiddenLayers), "every linear layer is int4");
        Assert.That(bf16.Int4LinearCount, Is.Zero);
        var (dense, tokens) = Perplexity(bf16, _text);
        var (quantized, _) = Perplexity(int4, _text);
        TestContext.Out.WriteLine(
            $"demo model, {tokens} held-out tokens: perplexity bf16 {dense:F3}, int4 {quantized:F3} " +
                                  $"({100 * (quantized / dense - 1):+0.00;-0.00}%); weights {bf16.WeightBytes} -> " +
                                      $"{int4.WeightBytes} bytes");
        Assert.That(tokens, Is.GreaterThan(500), "a held-out text of a few hundred tokens or more");
        Assert.That(dense, Is.GreaterThan(1.5).And.LessThan(bf16.Config.VocabSize / 4.0),
            "the bf16 model predicts the text");
        Assert.That(quantized, Is.Not.EqualTo(dense), "int4 is not the bf16 model");
        Assert.That(Math.Abs(quantized / dense - 1), Is.LessThanOrEqualTo(0.05));
    }

    /// <summary>
    /// The CPU's fast arithmetic (int4 linears on int8 activations; bf16 prefill on bf16 activations where the CPU has
    /// AVX512-BF16) against the exact fp32-activation path, on the same weights: perplexity within 1%, and every
    /// logit within 5% of the largest |logit| at any position.
    /// </summary>
    [TestCase(WeightQuantization.Int4)]
    [TestCase(WeightQuantization.None)]
    public void FastCpuPrecisionPerplexityIsWithinOnePercentOfExact(WeightQuantization quantization)
    {
        using var exact = Load(quantization, precision: CpuPrecision.Exact);
        using var fast = Load(quantization, precision: CpuPrecision.Fast);
        var (reference, tokens) = Perplexity(exact, _text, out float[] a);
        var (measured, _) = Perplexity(fast, _text, out float[] b);
        double maxAbs = 0, maxDiff = 0;
        for (int i = 0; i < a.Length; i++)
        {
            maxAbs = Math.Max(maxAbs, Math.Abs(a[i]));
            maxDiff = Math.Max(maxDiff, Math.Abs(a[i] - b[i]));
        }
        TestContext.Out.WriteLine(
            $"demo model {quantization}, {tokens} held-out tokens: perplexity exact {reference:F4}, " +
                                  $"fast {measured:F4} ({100 * (measured / reference - 1):+0.000;-0.000}%); " +
                                  $"max |logit difference| {maxDiff:G3} of max |logit| {maxAbs:G3}");
        Assert.That(Math.Abs(measured / reference - 1), Is.LessThanOrEqualTo(0.01));
        Assert.That(maxDiff, Is.LessThanOrEqualTo(0.05 * maxAbs));
        if (quantization == WeightQuantization.Int4)
            Assert.That(maxDiff, Is.GreaterThan(0), "the int8 path is not selected");
    }

    [Test]
    public async Task Int4DraftGivesPlainGreedyText()
    {
        using var plain = Load(WeightQuantization.Int4);
        using var spec = Load(WeightQuantization.Int4, draft: true);
        Assert.That(spec.Draft!.Int4LinearCount, Is.EqualTo(1 + 7 * spec.Draft.Layers),
            "fc and the draft's layers are int4");
        // A fixed tree: the acceptance is the draft's, whatever adaptive speculation would choose on this machine.
        var options =
            new GenerationOptions { MaxTokens = 48, StopTokenIds = [],
            Speculative = new SpeculativeOptions(TreeSize: 12) };
        async Task<(List<int>, SessionStatistics)> Run(MiniCpmModel m)
        {
            using var s = m.CreateSession(new SessionOptions { ContextLength = 256 });
            var ids = new List<int>();
            await foreach (var t in s.GenerateAsync("The history of the town", options))
                if (t.Id >= 0) ids.Add(t.Id);
            return (ids, s.Statistics);
        }
        var (expected, _) = await Run(plain);
        var (actual, stats) = await Run(spec);
        Assert.That(actual, Is.EqualTo(expected));
        TestContext.Out.WriteLine($"int4 target + int4 draft: mean accepted tokens {stats.MeanAcceptedTokens:F2}");
        Assert.That(stats.MeanAcceptedTokens, Is.GreaterThan(1.2),
            "the quantized draft still predicts the quantized target");
    }
}
