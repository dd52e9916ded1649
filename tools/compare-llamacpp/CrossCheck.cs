using System.Globalization;
namespace MiniCPM4.CompareLlamaCpp;

/// <summary>The result of comparing llama.cpp's logits with ours on the same token ids.</summary>
/// <param name="Positions">Positions compared: every prompt position (one prefill) and the decode steps after
/// it.</param>
/// <param name="MaxAbsDifference">Largest |ours − llama.cpp| over all positions and vocabulary entries.</param>
/// <param name="MaxAbsLogit">Largest |logit| seen (the scale the difference is relative to).</param>
/// <param name="TokenizersAgree">Whether both tokenizers gave the same ids for the prompt text.</param>
/// <param name="TokenizerReport">"identical (N ids)" or where they first differ.</param>
/// <param name="PerPosition">Max |difference| at each position.</param>
public sealed record CrossCheckResult(int Positions, double MaxAbsDifference, double MaxAbsLogit, bool TokenizersAgree,
    string TokenizerReport, double[] PerPosition);

/// <summary>
/// The independent check of the GGUF writer: the same fp32 weights in llama.cpp (F32 GGUF, f32 KV cache, flash
/// attention off) and in our engine, fed the same token ids; any layout or scale error in the GGUF shows up as
/// logit differences of order one, while two correct fp32 engines differ only by summation order.
/// </summary>
public static class CrossCheck
{
    public const string DefaultText =
        "The quick brown fox jumps over the lazy dog. Small language models run on laptops and phones, " +
        "and their speed depends on memory bandwidth.";

    public static CrossCheckResult Run(string checkpointDirectory, string ggufPath, string text, int decodeSteps,
        int threads)
    {
        using var ours = new OurEngine(checkpointDirectory, threads, contextLength: 512, int4: false);
        var tokenizer = ours.Model.Tokenizer;
        int[] ourIds = tokenizer.Encode(text);
        if (ourIds.Length == 0) throw new ArgumentException("the cross-check text tokenizes to nothing");
        using var llama = new LlamaCppEngine(ggufPath, threads, contextLength: 512, batchSize: 512, exact: true);
        if (llama.VocabSize != ours.VocabSize) throw new InvalidOperationException(
            $"vocabularies differ: llama.cpp {llama.VocabSize}, ours {ours.VocabSize}");
        int[] llamaIds = llama.Tokenize(text);
        string report = CompareIds(ourIds, llamaIds);

        // Both engines get our ids, with BOS first as a prompt would have it.
        int[] ids = [tokenizer.BosId, .. ourIds];
        if (ids.Length + decodeSteps > 512) throw new ArgumentException(
            "the cross-check text is too long (512 positions)");
        int vocab = ours.VocabSize;
        float[] a = ours.Evaluate(ids, allPositions: true), b = llama.Evaluate(ids, 0, allPositions: true);
        var perPosition = new List<double>();
        double maxLogit = 0;
        for (int p = 0; p < ids.Length; p++)
            perPosition.Add(MaxDifference(a.AsSpan(p * vocab, vocab), b.AsSpan(p * vocab, vocab), ref maxLogit));
        // Decode steps feed the same greedy token (ours) to both, so the single-token paths are compared too.
        var last = a.AsSpan((ids.Length - 1) * vocab, vocab).ToArray();
        for (int s = 0; s < decodeSteps; s++)
        {
            int next = Greedy.ArgMax(last);
            var ourStep = ours.DecodeOne(next);
            var llamaStep = llama.DecodeOne(next, ids.Length + s);
            perPosition.Add(MaxDifference(ourStep, llamaStep, ref maxLogit));
            last = ourStep;
        }
        return new CrossCheckResult(perPosition.Count, perPosition.Max(), maxLogit,
            ourIds.AsSpan().SequenceEqual(llamaIds), report, perPosition.ToArray());
    }

    public static string CompareIds(int[] ours, int[] llama)
    {
        if (ours.AsSpan().SequenceEqual(llama)) return $"identical ({ours.Length} ids)";
        int i = 0;
        while (i < ours.Length && i < llama.Length && ours[i] == llama[i]) i++;
        string At(int[] ids) => i < ids.Length ? ids[i].ToString(CultureInfo.InvariantCulture) : "end";
        return $"differ at index {i} of {ours.Length}/{llama.Length} (ours {At(ours)}, llama.cpp {At(llama)})";
    }

    private static double MaxDifference(ReadOnlySpan<float> x, ReadOnlySpan<float> y, ref double maxLogit)
    {
        double max = 0;
        for (int i = 0; i < x.Length; i++)
        {
            max = Math.Max(max, Math.Abs((double)x[i] - y[i]));
            maxLogit = Math.Max(maxLogit, Math.Max(Math.Abs(x[i]), Math.Abs(y[i])));
        }
        return max;
    }
}

public static class Greedy
{
    /// <summary>The index of the largest logit (the first on ties), as greedy sampling picks it.</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
}
