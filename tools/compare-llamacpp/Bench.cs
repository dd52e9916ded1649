using System.Globalization;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MiniCPM4.Tokenization;

namespace MiniCPM4.CompareLlamaCpp;

/// <summary>One comparison: our weights' form against a llama.cpp GGUF type.</summary>
public sealed record BenchPair(string Key, string OursLabel, bool OursInt4, GgmlType LlamaType, string LlamaLabel)
{
    public static readonly BenchPair[] All =
    [
        new("bf16", "bf16", false, GgmlType.BF16, "BF16"),
        new("int4", "int4 group 128 (W4A8 unless --cpu-precision exact: W4A16)", true, GgmlType.Q4_0, "Q4_0"),
        new("q8", "bf16", false, GgmlType.Q8_0, "Q8_0"),
    ];
}

public sealed record BenchSettings(int Threads, int Runs, int PromptTokens, int GenTokens);

/// <summary>Wall times of one run: a prefill of the prompt, then greedy decode steps.</summary>
public sealed record RunTiming(double PrefillSeconds, double DecodeSeconds, int[] Generated);

public sealed record EngineResult(string Label, string Weights, List<RunTiming> Runs, int PromptTokens, int GenTokens)
{
    public double PrefillTokensPerSecond => PromptTokens / Median(Runs.Select(r => r.PrefillSeconds));
    public double DecodeTokensPerSecond => GenTokens / Median(Runs.Select(r => r.DecodeSeconds));

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        if (sorted.Length == 0) throw new InvalidOperationException("no runs");
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2]
            : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}

public sealed record PairResult(BenchPair Pair, EngineResult Ours, EngineResult Llama, int GreedyAgreement)
{
    public double PrefillRatio => Ours.PrefillTokensPerSecond / Llama.PrefillTokensPerSecond;
    public double DecodeRatio => Ours.DecodeTokensPerSecond / Llama.DecodeTokensPerSecond;
}

/// <summary>
/// The side-by-side benchmark: the same checkpoint in our engine and, converted to GGUF, in llama.cpp; the same prompt
/// ids, thread count and greedy decoding; runs alternate between the engines (the first engine of a run alternates
/// too) so that drift in the machine's load falls on both.
/// </summary>
public static class Bench
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static List<PairResult> Run(string checkpoint, IReadOnlyDictionary<GgmlType, string> ggufs,
        IEnumerable<BenchPair> pairs,
        BenchSettings settings, int[] prompt, TextWriter log)
    {
        var results = new List<PairResult>();
        int context = settings.PromptTokens + settings.GenTokens + 1;
        foreach (var pair in pairs)
        {
            log.WriteLine($"== {pair.OursLabel} (ours) vs {pair.LlamaLabel} (llama.cpp): loading");
            using var ours = new OurEngine(checkpoint, settings.Threads, context, pair.OursInt4);
            using var llama =
                new LlamaCppEngine(ggufs[pair.LlamaType], settings.Threads, context,
                batchSize: Math.Max(512, settings.PromptTokens), exact: false);
            var oursRuns = new List<RunTiming>();
            var llamaRuns = new List<RunTiming>();
            // One untimed warm-up each: first-call allocations and page faults are not part of the steady state.
            RunOurs(ours, prompt, 4);
            RunLlama(llama, prompt, 4);
            for (int r = 0; r < settings.Runs; r++)
            {
                bool oursFirst = r % 2 == 0;
                if (oursFirst) oursRuns.Add(RunOurs(ours, prompt, settings.GenTokens));
                llamaRuns.Add(RunLlama(llama, prompt, settings.GenTokens));
                if (!oursFirst) oursRuns.Add(RunOurs(ours, prompt, settings.GenTokens));
                log.WriteLine(
                    $"   run {r + 1}/{settings.Runs}: ours prefill {oursRuns[^1].PrefillSeconds * 1e3:F0} ms, decode " +
                    $"{oursRuns[^1].DecodeSeconds * 1e3:F0} ms; " +
                              $"llama.cpp prefill {llamaRuns[^1].PrefillSeconds * 1e3:F0} ms, decode " +
                                  $"{llamaRuns[^1].DecodeSeconds * 1e3:F0} ms");
            }
            int agree = 0;
            while (agree < settings.GenTokens
                && oursRuns[^1].Generated[agree] == llamaRuns[^1].Generated[agree]) agree++;
            results.Add(new PairResult(pair,
                new EngineResult(pair.OursLabel, ours.Model.Quantization == WeightQuantization.Int4 ? "int4" : "bf16",
                    oursRuns, prompt.Length, settings.GenTokens),
                new EngineResult(pair.LlamaLabel, pair.LlamaLabel, llamaRuns, prompt.Length, settings.GenTokens),
                    agree));
        }
        return results;
    }

    private static RunTiming RunOurs(OurEngine engine, int[] prompt, int steps)
    {
        engine.Clear();
        var clock = Stopwatch.StartNew();
        float[] logits = engine.Evaluate(prompt, allPositions: false);
        double prefill = clock.Elapsed.TotalSeconds;
        var generated = new int[steps];
        clock.Restart();
        for (int i = 0; i < steps; i++)
        {
            generated[i] = Greedy.ArgMax(logits);
            logits = engine.DecodeOne(generated[i]);
        }
        return new RunTiming(prefill, clock.Elapsed.TotalSeconds, generated);
    }

    private static RunTiming RunLlama(LlamaCppEngine engine, int[] prompt, int steps)
    {
        engine.Clear();
        var clock = Stopwatch.StartNew();
        float[] first = engine.Evaluate(prompt, 0, allPositions: false);
        double prefill = clock.Elapsed.TotalSeconds;
        var generated = new int[steps];
        clock.Restart();
        ReadOnlySpan<float> logits = first;
        for (int i = 0; i < steps; i++)
        {
            generated[i] = Greedy.ArgMax(logits);
            logits = engine.DecodeOne(generated[i], prompt.Length + i);
        }
        return new RunTiming(prefill, clock.Elapsed.TotalSeconds, generated);
    }

    /// <summary>The table for docs/benchmarks.md.</summary>
    public static string MarkdownTable(IEnumerable<PairResult> results)
    {
        var sb = new StringBuilder();
        sb.AppendLine(
            "| ours | llama.cpp | prefill tok/s (ours vs llama.cpp) | decode tok/s (ours vs llama.cpp) | ratio " +
            "ours/llama.cpp (prefill / decode) |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var r in results)
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Pair.OursLabel} | {r.Pair.LlamaLabel} | {r.Ours.PrefillTokensPerSecond:F1} vs " +
                $"{r.Llama.PrefillTokensPerSecond:F1} | " +
                          $"{r.Ours.DecodeTokensPerSecond:F1} vs {r.Llama.DecodeTokensPerSecond:F1} | " +
                              $"{r.PrefillRatio:F2}× / {r.DecodeRatio:F2}× |");
        return sb.ToString();
    }

    public static string Json(IEnumerable<PairResult> results, IReadOnlyDictionary<string, object?> context)
    {
        var document = new Dictionary<string, object?>(context)
        {
            ["pairs"] = results.Select(r => new Dictionary<string, object?>
            {
                ["pair"] = r.Pair.Key,
                ["ours"] = r.Pair.OursLabel,
                ["llama_cpp"] = r.Pair.LlamaLabel,
                ["ours_prefill_tokens_per_s"] = Math.Round(r.Ours.PrefillTokensPerSecond, 3),
                ["ours_decode_tokens_per_s"] = Math.Round(r.Ours.DecodeTokensPerSecond, 3),
                ["llama_prefill_tokens_per_s"] = Math.Round(r.Llama.PrefillTokensPerSecond, 3),
                ["llama_decode_tokens_per_s"] = Math.Round(r.Llama.DecodeTokensPerSecond, 3),
                ["prefill_ratio"] = Math.Round(r.PrefillRatio, 4),
                ["decode_ratio"] = Math.Round(r.DecodeRatio, 4),
                ["greedy_tokens_agreeing"] = r.GreedyAgreement,
                ["ours_runs_s"] =
                    r.Ours.Runs.Select(x => new[] { Math.Round(x.PrefillSeconds, 5), Math.Round(x.DecodeSeconds, 5) })
                    .ToArray(),
                ["llama_runs_s"] =
                    r.Llama.Runs.Select(x => new[] { Math.Round(x.PrefillSeconds, 5), Math.Round(x.DecodeSeconds, 5) })
                    .ToArray(),
            }).ToList(),
        };
        return JsonSerializer.Serialize(document, Indented);
    }

    /// <summary>The 1-, 5- and 15-minute load averages (/proc/loadavg), or "unavailable".</summary>
    public static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unavailable";
        }
        catch (UnauthorizedAccessException)
        {
            return "unavailable";
        }
    }

    public static string CpuModel()
    {
        try
        {
            var line =
                File.ReadLines("/proc/cpuinfo").FirstOrDefault(l =>
                l.StartsWith("model name", StringComparison.Ordinal));
            return line is null ? "unknown CPU" : line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException)
        {
            return "unknown CPU";
        }
    }

    /// <summary>
    /// A prompt of exactly <paramref name="length"/> ids: BOS, then our tokenization of a repeated English paragraph.
    /// Returns the text's ids too, so the caller can compare them with llama.cpp's tokenization of the same text.
    /// </summary>
    public static (int[] Prompt, string Text) MakePrompt(MiniCpmTokenizer tokenizer, int length)
    {
        var text = new StringBuilder();
        int[] ids = [];
        while (ids.Length < length - 1)
        {
            text.Append(CrossCheck.DefaultText).Append(' ');
            ids = tokenizer.Encode(text.ToString().TrimEnd());
        }
        return ([tokenizer.BosId, .. ids.AsSpan(0, length - 1)], text.ToString().TrimEnd());
    }
}
