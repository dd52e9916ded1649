using MiniCPM4;
using MiniCPM4.Checkpoints;
using MiniCPM4.Tokenization;
using MiniCPM4.CompareLlamaCpp;
using NUnit.Framework;

namespace CompareLlamaCpp.Tests;

/// <summary>The benchmark's plumbing (not its speed): prompt, medians, and one short run of every pair.</summary>
[NonParallelizable]
public class BenchTests() : TinyCheckpointFixture(TensorDType.BF16, seed: 9)
{
    [Test]
    public void MedianOfOddAndEvenCounts()
    {
        Assert.That(EngineResult.Median([3.0, 1.0, 2.0]), Is.EqualTo(2.0));
        Assert.That(EngineResult.Median([4.0, 1.0, 2.0, 3.0]), Is.EqualTo(2.5));
        Assert.That(() => EngineResult.Median([]), Throws.InvalidOperationException);
    }

    [Test]
    public void ThePromptHasExactlyTheRequestedIdsAfterBos()
    {
        var tokenizer = MiniCpmTokenizer.Load(CheckpointDir);
        var (prompt, text) = Bench.MakePrompt(tokenizer, 128);
        Assert.That(prompt, Has.Length.EqualTo(128));
        Assert.That(prompt[0], Is.EqualTo(tokenizer.BosId));
        Assert.That(prompt[1..], Is.EqualTo(tokenizer.Encode(text)[..127]));
    }

    [Test]
    public void CompareIdsNamesTheFirstDifference()
    {
        Assert.That(CrossCheck.CompareIds([1, 2, 3], [1, 2, 3]), Is.EqualTo("identical (3 ids)"));
        Assert.That(CrossCheck.CompareIds([1, 2, 3], [1, 5, 3]),
            Is.EqualTo("differ at index 1 of 3/3 (ours 2, llama.cpp 5)"));
        Assert.That(CrossCheck.CompareIds([1, 2], [1, 2, 3]),
            Is.EqualTo("differ at index 2 of 2/3 (ours end, llama.cpp 3)"));
    }

    [Test]
    public void EveryPairRunsOnBothEnginesWithTheSameGreedyPromptHandling()
    {
        string bf16 = Path.Combine(WorkDir, "tiny-BF16.gguf");
        CheckpointToGguf.Convert(CheckpointDir, bf16, GgmlType.BF16);
        var ggufs = new Dictionary<GgmlType, string> { [GgmlType.BF16] = bf16 };
        foreach (var q in new[] { GgmlType.Q4_0, GgmlType.Q8_0 })
        {
            ggufs[q] = Path.Combine(WorkDir, $"tiny-{q}.gguf");
            LlamaCppEngine.Quantize(bf16, ggufs[q], q, threads: 2);
        }
        var (prompt, _) = Bench.MakePrompt(MiniCpmTokenizer.Load(CheckpointDir), 16);
        var results =
            Bench.Run(CheckpointDir, ggufs, BenchPair.All, new BenchSettings(2, 2, 16, 4), prompt, TextWriter.Null);

        Assert.That(results.Select(r => r.Pair.Key), Is.EqualTo(new[] { "bf16", "int4", "q8" }));
        Assert.That(results.Select(r => r.Ours.Weights), Is.EqualTo(new[] { "bf16", "int4", "bf16" }));
        foreach (var r in results)
        {
            Assert.That(r.Ours.Runs, Has.Count.EqualTo(2));
            Assert.That(r.Llama.Runs, Has.Count.EqualTo(2));
            Assert.That(r.Ours.Runs.Concat(r.Llama.Runs).SelectMany(x => new[] { x.PrefillSeconds, x.DecodeSeconds }),
                Is.All.GreaterThan(0));
            Assert.That(r.Ours.Runs[0].Generated, Has.Length.EqualTo(4));
            Assert.That(r.Ours.Runs[1].Generated, Is.EqualTo(r.Ours.Runs[0].Generated), "greedy runs repeat");
            Assert.That(r.Llama.Runs[1].Generated, Is.EqualTo(r.Llama.Runs[0].Generated), "greedy runs repeat");
        }
        string table = Bench.MarkdownTable(results);
        Assert.That(table.Split('\n', StringSplitOptions.RemoveEmptyEntries), Has.Length.EqualTo(5));
        Assert.That(table, Does.Contain("| int4 group 128 (W4A8 unless --cpu-precision exact: W4A16) | Q4_0 |"));
    }
}
