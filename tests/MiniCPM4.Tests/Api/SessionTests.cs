using NUnit.Framework;
using MiniCPM4.Chat;
using System.Diagnostics;

namespace MiniCPM4.Tests.Api;

[TestFixture]
public class SessionTests
{
    private MiniCpmModel _model = null!;

    [OneTimeSetUp]
    public void Load() => _model = TinyModelFixture.Load();

    [OneTimeTearDown]
    public void Unload() => _model.Dispose();

    private static async Task<List<int>> Collect(IAsyncEnumerable<GeneratedToken> stream)
    {
        var ids = new List<int>();
        await foreach (var t in stream) if (t.Id >= 0) ids.Add(t.Id);
        return ids;
    }

    [Test]
    public void AContextBeyondThePositionsNamesTheManagedOption()
    {
        int positions = _model.Config.MaxPositionEmbeddings;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            _model.CreateSession(new SessionOptions { ContextLength = positions + 1 }));
        Assert.That(e!.Message, Does.Contain("SessionOptions.ContextLength").And.Contain(positions.ToString()));
        Assert.That(e.Message, Does.Not.Contain("context_capacity"));
        using var full = _model.CreateSession(new SessionOptions { ContextLength = positions });
        Assert.That(full.Capacity, Is.EqualTo(positions));
    }

    [Test]
    public async Task GreedyGenerationIsDeterministic()
    {
        var options = new GenerationOptions { MaxTokens = 24, StopTokenIds = [] };
        using var a = _model.CreateSession();
        using var b = _model.CreateSession();
        var first = await Collect(a.GenerateAsync("Once upon a time", options));
        var second = await Collect(b.GenerateAsync("Once upon a time", options));
        Assert.That(first, Has.Count.EqualTo(24));
        Assert.That(second, Is.EqualTo(first));
        Assert.That(first.Distinct().Count(), Is.GreaterThan(1), "a random model should not be constant");
    }

    [Test]
    public async Task GreedyTokensAreTheArgmaxOfTheLogits()
    {
        using var s = _model.CreateSession();
        var prompt = _model.EncodePrompt("The quick brown fox");
        var logits = s.PrefillWithLogits(prompt, allPositions: false);
        var ids = await Collect(s.GenerateAsync(new GenerationOptions { MaxTokens = 1, StopTokenIds = [] }));
        Assert.That(ids.Single(), Is.EqualTo(Array.IndexOf(logits, logits.Max())));
        Assert.That(logits.All(float.IsFinite), Is.True);
    }

    [Test]
    public async Task SeededSamplingIsDeterministic()
    {
        GenerationOptions Options(ulong seed) =>
            new() { MaxTokens = 32, Temperature = 1.5f, Seed = seed, StopTokenIds = [] };
        using var s = _model.CreateSession();
        var a = await Collect(s.GenerateAsync("Hello", Options(42)));
        var b = await Collect(s.GenerateAsync("Hello", Options(42)));
        var c = await Collect(s.GenerateAsync("Hello", Options(43)));
        Assert.That(b, Is.EqualTo(a));
        Assert.That(c, Is.Not.EqualTo(a));
    }

    [Test]
    public void ReusesTheCachedPrefix()
    {
        using var s = _model.CreateSession();
        var first = _model.EncodePrompt("Once upon a time there was");
        var longer = first.Concat(_model.Tokenizer.Encode(" a dragon", addBos: false)).ToArray();
        Assert.That(s.SetPrompt(first), Is.EqualTo(first.Length));
        Assert.That(s.SetPrompt(longer), Is.EqualTo(longer.Length - first.Length), "only the new suffix is evaluated");
        Assert.That(s.Tokens, Is.EqualTo(longer));
        Assert.That(s.SetPrompt(first), Is.EqualTo(1), "a shorter prompt rewinds and re-evaluates only its last token");
        Assert.That(s.Tokens, Is.EqualTo(first));
    }

    [Test]
    public async Task SetPromptAsyncReusesTheCachedPrefixOffTheCallingThread()
    {
        using var s = _model.CreateSession();
        var first = _model.EncodePrompt("Once upon a time there was");
        var longer = first.Concat(_model.Tokenizer.Encode(" a dragon", addBos: false)).ToArray();
        Assert.That(await s.SetPromptAsync(first), Is.EqualTo(first.Length));
        Assert.That(await s.SetPromptAsync(longer), Is.EqualTo(longer.Length - first.Length));
        Assert.That(s.Tokens, Is.EqualTo(longer));
        Assert.Throws<ArgumentException>(() => s.SetPromptAsync(ReadOnlyMemory<int>.Empty));
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        await Assert.CatchAsync<OperationCanceledException>(() => s.SetPromptAsync(first, cancelled.Token));
        Assert.That(s.Tokens, Is.EqualTo(longer), "a cancelled call changes nothing");
    }

    [Test]
    public async Task StopStringSpanningTokensEndsGenerationAndIsNotEmitted()
    {
        using var s = _model.CreateSession();
        var options = new GenerationOptions { MaxTokens = 40, StopTokenIds = [] };
        var full = await s.GenerateTextAsync("Once upon a time", options);
        Assert.That(full.Text.Length, Is.GreaterThan(12));
        // A stop string from the middle of the text, long enough to span several tokens.
        var stop = full.Text.Substring(full.Text.Length / 2, 6);
        int at = full.Text.IndexOf(stop, StringComparison.Ordinal);
        var stopped = await s.GenerateTextAsync("Once upon a time", options with { StopStrings = [stop] });
        Assert.That(stopped.Text, Is.EqualTo(full.Text[..at]));
        Assert.That(stopped.FinishReason, Is.EqualTo(FinishReason.Stop));
    }

    [Test]
    public async Task StopTokenEndsGenerationWithoutBeingEvaluated()
    {
        using var s = _model.CreateSession();
        var probe =
            await Collect(
            s.GenerateAsync("Once upon a time", new GenerationOptions { MaxTokens = 8, StopTokenIds = [] }));
        int stopId = probe[3];
        var ids =
            await Collect(
            s.GenerateAsync("Once upon a time", new GenerationOptions { MaxTokens = 8, StopTokenIds = [stopId] }));
        Assert.That(ids, Is.EqualTo(probe.Take(probe.IndexOf(stopId)).ToList()));
        Assert.That(s.LastFinishReason, Is.EqualTo(FinishReason.Stop));
        int promptLength = _model.EncodePrompt("Once upon a time").Length;
        Assert.That(s.Length, Is.EqualTo(promptLength + ids.Count), "the stop token is not added to the KV cache");
    }

    [Test]
    public async Task ChatPrefillsOnlyTheNewTurn()
    {
        using var s = _model.CreateSession();
        var chat = new MiniCpmChat(s, "Be brief.");
        var options = new GenerationOptions { MaxTokens = 5, Temperature = 0.7f, Seed = 1 };
        await foreach (var _ in chat.SendAsync("Hello!", options)) { }
        var afterFirst = s.Tokens;
        long prefilled = s.Statistics.PrefillTokens;
        await foreach (var _ in chat.SendAsync("Tell me more.", options)) { }
        var turn =
            _model.Tokenizer.Encode("<|im_end|>\n<|im_start|>user\nTell me more.<|im_end|>\n<|im_start|>assistant\n");
        Assert.That(s.Statistics.PrefillTokens - prefilled, Is.EqualTo(turn.Length), "only the new turn is prefilled");
        Assert.That(s.Tokens.Take(afterFirst.Length), Is.EqualTo(afterFirst), "the first turn stays cached");
        Assert.That(s.Tokens.Skip(afterFirst.Length).Take(turn.Length), Is.EqualTo(turn));
        Assert.That(chat.History.Select(m => m.Role),
            Is.EqualTo(new[] { "system", "user", "assistant", "user", "assistant" }));
        // The cached tokens are exactly the ChatML conversation (first prompt encoded as a whole).
        var firstPrompt = _model.EncodeChat([new("system", "Be brief."), new("user", "Hello!")]);
        Assert.That(afterFirst.Take(firstPrompt.Length), Is.EqualTo(firstPrompt));
    }

    [Test]
    public void CancellationDuringPrefillLeavesTheSessionUsable()
    {
        using var s = _model.CreateSession(new SessionOptions { ContextLength = 2048, PrefillChunk = 1 });
        var rng = new Random(5);
        var prompt = Enumerable.Range(0, 2000).Select(_ => rng.Next(3, 30000)).ToArray();
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(20));
        var watch = Stopwatch.StartNew();
        Assert.Throws(Is.InstanceOf<OperationCanceledException>(), () => s.Prefill(prompt, cts.Token));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)));
        Assert.That(s.Length, Is.EqualTo(0), "a cancelled prefill appends nothing");
        s.Prefill(prompt.AsSpan(0, 5));
        Assert.That(s.Length, Is.EqualTo(5));
    }

    [Test]
    public async Task CancellationDuringDecodeLeavesTheSessionUsable()
    {
        using var s = _model.CreateSession();
        using var cts = new CancellationTokenSource();
        int received = 0;
        await Assert.ThrowsAsync(Is.InstanceOf<OperationCanceledException>(), async () =>
        {
            await foreach (
                var t in s.GenerateAsync("Once", new GenerationOptions { MaxTokens = 1000, StopTokenIds = [] },
                cts.Token))
                if (++received == 5) cts.Cancel();
        });
        Assert.That(received, Is.EqualTo(5));
        int length = s.Length;
        var more = await Collect(s.GenerateAsync(new GenerationOptions { MaxTokens = 3, StopTokenIds = [] }));
        Assert.That(more, Has.Count.EqualTo(3));
        Assert.That(s.Length, Is.EqualTo(length + 3));
    }

    [Test]
    public async Task OverlappingCallsOnOneSessionAreRejected()
    {
        using var s = _model.CreateSession();
        await using var e =
            s.GenerateAsync("Once", new GenerationOptions { MaxTokens = 50, StopTokenIds = [] }).GetAsyncEnumerator();
        Assert.That(await e.MoveNextAsync(), Is.True);
        Assert.Throws<InvalidOperationException>(() => s.Prefill([5, 6]));
    }

    [Test]
    public async Task DisposingTheModelBeforeItsSessionIsSafe()
    {
        var model = TinyModelFixture.Load();
        var session = model.CreateSession();
        model.Dispose();
        var ids =
            await Collect(
            session.GenerateAsync("Once upon", new GenerationOptions { MaxTokens = 5, StopTokenIds = [] }));
        Assert.That(ids, Has.Count.EqualTo(5));
        session.Dispose();
        Assert.Throws<ObjectDisposedException>(() => _ = session.Length);
    }

    [Test]
    public void PromptLongerThanTheContextIsATypedError()
    {
        using var s = _model.CreateSession(new SessionOptions { ContextLength = 8 });
        var ex = Assert.Throws<MiniCpmContextFullException>(() => s.Prefill(Enumerable.Range(10, 9).ToArray()));
        Assert.That(ex!.Message, Does.Contain("capacity"));
        Assert.That(s.Length, Is.EqualTo(0));
    }

    [Test]
    public void RepeatedLoadAndDisposeDoesNotLeakNativeMemory()
    {
        static long Rss()
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            using var p = Process.GetCurrentProcess();
            p.Refresh();
            return p.WorkingSet64;
        }
        for (int i = 0; i < 20; i++) Cycle();
        long before = Rss();
        for (int i = 0; i < 200; i++) Cycle();
        long growth = Rss() - before;
        // One leaked model would be ~9 MB of weights + a KV cache; 200 of them gigabytes.
        Assert.That(growth, Is.LessThan(64L << 20), $"resident memory grew by {growth / 1e6:F1} MB over 200 cycles");

        static void Cycle()
        {
            using var m = TinyModelFixture.Load();
            using var s = m.CreateSession(new SessionOptions { ContextLength = 64 });
            s.Prefill([1, 2, 3]);
        }
    }
}
