using System.Text.Json;
using NUnit.Framework;

namespace MiniCPM4.Tests.Demo;

/// <summary>
/// The bundled demo model (models/demo, trained by tools/train): the engine's logits and greedy text agree with the
/// PyTorch reference the training tool exported (reference.json), and its EAGLE draft + FR-Spec list give the
/// same greedy text with a real acceptance length.
/// </summary>
[TestFixture]
public class DemoModelTests
{
    private string _dir = null!;
    private JsonDocument _reference = null!;

    [OneTimeSetUp]
    public void Locate()
    {
        _dir = DemoModelDirectory.Find();
        _reference = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "reference.json")));
    }

    [OneTimeTearDown]
    public void Dispose() => _reference?.Dispose();

    private IEnumerable<JsonElement> Prompts => _reference.RootElement.GetProperty("prompts").EnumerateArray();

    private static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    // The PyTorch comparisons run the exact CPU arithmetic (fp32 activations); the default, Fast, rounds a bf16
    // model's activations to bf16 and is checked against PyTorch within its own bound below.
    private MiniCpmModel Load(bool draft, CpuPrecision precision = CpuPrecision.Default) => MiniCpmModel.Load(_dir,
        new MiniCpmLoadOptions
        {
            Device = ComputeDevice.Cpu,
            Threads = 2,
            CpuPrecision = precision,
            DraftDirectory = draft ? Path.Combine(_dir, "draft") : null,
            FrSpecPath = draft ? Directory.GetFiles(Path.Combine(_dir, "draft"), "freq_*.pt").Single() : null,
        });

    // Every prompt's logits against PyTorch's: the first 64 of the last row within `logitTolerance` (absolute plus
    // relative), its log-sum-exp within `lseTolerance`, and every position's argmax.
    private void ExpectLogitsMatchPyTorch(CpuPrecision precision, double logitTolerance, double lseTolerance)
    {
        using var model = Load(draft: false, precision);
        int v = model.Config.VocabSize;
        foreach (var p in Prompts)
        {
            int[] ids = Ints(p.GetProperty("token_ids"));
            Assert.That(model.EncodePrompt(p.GetProperty("text").GetString()!), Is.EqualTo(ids),
                "tokenizer disagrees with SentencePiece");
            using var s = model.CreateSession(new SessionOptions { ContextLength = 512 });
            float[] all = s.PrefillWithLogits(ids, allPositions: true);
            var last = all.AsSpan((ids.Length - 1) * v, v);
            float[] expected =
                p.GetProperty("last_logits_first64").EnumerateArray().Select(x => x.GetSingle()).ToArray();
            for (int i = 0; i < expected.Length; i++)
            {
                double tolerance = logitTolerance + logitTolerance * Math.Abs(expected[i]);
                Assert.That(last[i], Is.EqualTo(expected[i]).Within(tolerance), $"logit {i}");
            }
            double max = double.NegativeInfinity, sum = 0;
            foreach (float x in last) max = Math.Max(max, x);
            foreach (float x in last) sum += Math.Exp(x - max);
            Assert.That(max + Math.Log(sum),
                Is.EqualTo(p.GetProperty("last_logsumexp").GetDouble()).Within(lseTolerance));
            // Every position's argmax: the whole sequence, not only the last row.
            int[] argmax = Ints(p.GetProperty("argmax_per_position"));
            int mismatches = 0;
            for (int t = 0; t < ids.Length; t++)
            {
                var row = all.AsSpan(t * v, v);
                int best = 0;
                for (int i = 1; i < v; i++) if (row[i] > row[best]) best = i;
                if (best != argmax[t]) mismatches++;
            }
            Assert.That(mismatches, Is.Zero, "argmax per position differs from PyTorch");
        }
    }

    [Test]
    public void EngineLogitsMatchPyTorch() => ExpectLogitsMatchPyTorch(CpuPrecision.Exact, 2e-3, 2e-3);

    // Fast (the default) on a bf16 model: activations rounded to bf16 before every linear (as llama.cpp's BF16 path
    // does). Each product moves by at most 2^-9 of itself; on the demo model the logits stay within 2e-2 of
    // PyTorch's and the log-sum-exp within 1e-2 (exact: 2e-3 each), and every position's argmax still agrees.
    [Test]
    public void FastPrecisionLogitsStayCloseToPyTorch() => ExpectLogitsMatchPyTorch(CpuPrecision.Fast, 2e-2, 1e-2);

    [Test]
    public async Task GreedyContinuationMatchesPyTorch()
    {
        using var model = Load(draft: false, CpuPrecision.Exact);
        foreach (var p in Prompts)
        {
            int[] ids = Ints(p.GetProperty("token_ids"));
            int[] expected = Ints(p.GetProperty("greedy_continuation"));
            using var s = model.CreateSession(new SessionOptions { ContextLength = 512 });
            s.SetPrompt(ids);
            var got = new List<int>();
            await foreach (
                var t in s.GenerateAsync(new GenerationOptions { MaxTokens = expected.Length, StopTokenIds = [] }))
                if (t.Id >= 0) got.Add(t.Id);
            Assert.That(got, Is.EqualTo(expected), p.GetProperty("text").GetString());
        }
    }

    [Test]
    public async Task SpeculativeGreedyEqualsPlainGreedyWithARealAcceptanceLength()
    {
        using var plain = Load(draft: false);
        using var spec = Load(draft: true);
        Assert.That(spec.Draft!.VocabularySize, Is.LessThan(spec.Config.VocabSize),
            "the FR-Spec list restricts the draft head");
        long steps = 0, emitted = 0;
        foreach (
            string prompt in new[] { "The committee said that the new plan", "She looked at him and",
            "In the morning, the city" })
        {
            var options = new GenerationOptions { MaxTokens = 64, StopTokenIds = [] };
            using var ps = plain.CreateSession();
            var a = await ps.GenerateTextAsync(prompt, options);
            using var s = spec.CreateSession();
            var b = await s.GenerateTextAsync(prompt,
                options with { Speculative =
                new SpeculativeOptions(NumIterations: 4, TopKPerIteration: 4, TreeSize: 16) });
            Assert.That(b.TokenIds, Is.EqualTo(a.TokenIds), prompt);
            steps += s.Statistics.SpeculativeSteps;
            emitted += s.Statistics.SpeculativeTokens;
        }
        double mean = (double)emitted / steps;
        TestContext.Out.WriteLine($"mean accepted tokens per round: {mean:F3} over {steps} rounds");
        Assert.That(mean, Is.GreaterThanOrEqualTo(1.5));
    }
}
