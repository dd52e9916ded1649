using Microsoft.Extensions.AI;
using MiniCPM4.Tokenization;
using NUnit.Framework;

namespace MiniCPM4.AI.Tests;

/// <summary>Our own versions of the checks in Microsoft.Extensions.AI's chat-client integration tests, on a tiny random
/// model.</summary>
[TestFixture]
public class ChatClientTests
{
    private MiniCpmModel _model = null!;
    private MiniCpmChatClient _client = null!;

    [OneTimeSetUp]
    public void Load()
    {
        _model = TinyModel.Load();
        _client = new MiniCpmChatClient(_model, new MiniCpmChatClientOptions { ModelId = "tiny" });
    }

    [OneTimeTearDown]
    public void Unload()
    {
        _client.Dispose();
        _model.Dispose();
    }

    private static List<ChatMessage> Question(string text = "What is the capital of France?") =>
        [new(ChatRole.User, text)];

    private static ChatOptions Greedy(int max = 12) => new() { Temperature = 0, MaxOutputTokens = max };

    // Generation that cannot stop on an end-of-turn token, so lengths are exact.
    private static ChatOptions NoStopToken(int max) => new()
    {
        RawRepresentationFactory = _ => new GenerationOptions { MaxTokens = max, StopTokenIds = [] },
    };

    // The prompt the client sends: rendered with the checkpoint's chat template (CheckpointWriter's, which adds a
    // default system turn when the conversation has none).
    private int PromptTokens(IEnumerable<ChatMessage> messages, ChatOptions? options) =>
        _model.EncodeRenderedChat(MiniCpmPromptFormatter.Render(_model.ChatTemplate, messages, options)).Length;

    [Test]
    public async Task NonStreamingReturnsText()
    {
        var response = await _client.GetResponseAsync(Question(), NoStopToken(10));
        Assert.That(response.Text, Is.Not.Empty);
        Assert.That(response.Messages, Has.Count.EqualTo(1));
        Assert.That(response.Messages[0].Role, Is.EqualTo(ChatRole.Assistant));
        Assert.That(response.ResponseId, Is.Not.Null.And.Not.Empty);
        Assert.That(response.ModelId, Is.EqualTo("tiny"));
        Assert.That(response.CreatedAt, Is.Not.Null);
        Assert.That(response.ConversationId, Is.Not.Null.And.Not.Empty);
    }

    [Test]
    public async Task StreamingMatchesNonStreamingForTheSameSeed()
    {
        var options = new ChatOptions { Temperature = 0.9f, Seed = 1234, MaxOutputTokens = 16 };
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in _client.GetStreamingResponseAsync(Question(), options.Clone())) updates.Add(u);
        Assert.That(updates.Count(u => u.Text.Length > 0), Is.GreaterThan(1), "text arrives in pieces");
        Assert.That(updates.Select(u => u.MessageId).Distinct().Count(), Is.EqualTo(1));
        Assert.That(updates.Select(u => u.ResponseId).Distinct().Count(), Is.EqualTo(1));
        Assert.That(updates.All(u => u.Role == ChatRole.Assistant && u.CreatedAt is not null), Is.True);
        Assert.That(updates[^1].FinishReason, Is.Not.Null);

        var fromStream = await ToResponse(updates);
        var direct = await _client.GetResponseAsync(Question(), options.Clone());
        Assert.That(direct.Text, Is.EqualTo(fromStream.Text));
        Assert.That(direct.FinishReason, Is.EqualTo(fromStream.FinishReason));
        Assert.That(direct.Usage!.OutputTokenCount, Is.EqualTo(fromStream.Usage!.OutputTokenCount));
    }

    private static async Task<ChatResponse> ToResponse(IEnumerable<ChatResponseUpdate> updates)
    {
        async IAsyncEnumerable<ChatResponseUpdate> Replay()
        {
            foreach (var u in updates) yield return u;
            await Task.CompletedTask;
        }
        return await Replay().ToChatResponseAsync();
    }

    [Test]
    public async Task UsageCountsAgreeWithTheTokenizer()
    {
        var messages = Question();
        var options = NoStopToken(9);
        var response = await _client.GetResponseAsync(messages, options);
        var usage = response.Usage!;
        Assert.That(usage.InputTokenCount, Is.EqualTo(PromptTokens(messages, options)));
        Assert.That(usage.OutputTokenCount, Is.EqualTo(9));
        Assert.That(usage.TotalTokenCount, Is.EqualTo(usage.InputTokenCount + usage.OutputTokenCount));
        Assert.That(usage.CachedInputTokenCount, Is.EqualTo(0));
    }

    [Test]
    public async Task FinishReasonLengthWhenMaxOutputTokensIsHit()
    {
        var response = await _client.GetResponseAsync(Question(), NoStopToken(5));
        Assert.That(response.FinishReason, Is.EqualTo(ChatFinishReason.Length));
        Assert.That(response.Usage!.OutputTokenCount, Is.EqualTo(5));

        var viaChatOptions = await _client.GetResponseAsync(Question(), Greedy(3));
        Assert.That(viaChatOptions.Usage!.OutputTokenCount, Is.LessThanOrEqualTo(3));
        if (viaChatOptions.Usage.OutputTokenCount == 3)
            Assert.That(viaChatOptions.FinishReason, Is.EqualTo(ChatFinishReason.Length));
    }

    [Test]
    public async Task AppendingTheResponseToTheHistoryContinuesTheConversation()
    {
        var history = Question("Hello there");
        var first = await _client.GetResponseAsync(history, Greedy(8));
        history.AddMessages(first);
        history.Add(new ChatMessage(ChatRole.User, "And then?"));
        var second = await _client.GetResponseAsync(history, Greedy(8));
        Assert.That(history, Has.Count.EqualTo(3));
        Assert.That(second.Usage!.InputTokenCount,
            Is.GreaterThan(first.Usage!.InputTokenCount!.Value + first.Usage.OutputTokenCount!.Value - 2));
        Assert.That(second.Usage.InputTokenCount, Is.EqualTo(PromptTokens(history, null)));
        Assert.That(second.ConversationId, Is.Not.EqualTo(first.ConversationId), "no id passed: a new conversation");
    }

    [Test]
    public async Task ConversationIdReusesTheKvCache()
    {
        var messages = Question("Tell me a story");
        var first = await _client.GetResponseAsync(messages, Greedy(8));
        Assert.That(first.Usage!.CachedInputTokenCount, Is.EqualTo(0));
        var id = first.ConversationId!;

        // The same prompt again on that conversation: everything but the last token is reused.
        var again =
            await _client.GetResponseAsync(messages,
            new ChatOptions { Temperature = 0, MaxOutputTokens = 8, ConversationId = id });
        Assert.That(again.ConversationId, Is.EqualTo(id));
        Assert.That(again.Usage!.CachedInputTokenCount, Is.EqualTo(again.Usage.InputTokenCount - 1));
        Assert.That(again.Text, Is.EqualTo(first.Text));

        // The next turn: the whole previous prompt (at least) comes from the cache; only the suffix is prefilled.
        var history = new List<ChatMessage>(messages);
        history.AddMessages(again);
        history.Add(new ChatMessage(ChatRole.User, "Go on"));
        var next =
            await _client.GetResponseAsync(history,
            new ChatOptions { Temperature = 0, MaxOutputTokens = 8, ConversationId = id });
        var usage = next.Usage!;
        Assert.That(usage.CachedInputTokenCount, Is.GreaterThanOrEqualTo(first.Usage.InputTokenCount!.Value));
        Assert.That(usage.CachedInputTokenCount + usage.AdditionalCounts!["PrefillTokenCount"],
            Is.EqualTo(usage.InputTokenCount));
        Assert.That(usage.InputTokenCount, Is.EqualTo(PromptTokens(history, null)));

        // Without the id nothing is reused.
        var fresh = await _client.GetResponseAsync(history, Greedy(8));
        Assert.That(fresh.Usage!.CachedInputTokenCount, Is.EqualTo(0));
        Assert.That(fresh.Text, Is.EqualTo(next.Text));
    }

    [Test]
    public async Task ConversationIdWithOnlyTheNewMessageAppendsToTheStoredHistory()
    {
        var first = await _client.GetResponseAsync(Question("First question"), Greedy(6));
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 6, ConversationId = first.ConversationId };
        var second = await _client.GetResponseAsync([new ChatMessage(ChatRole.User, "Second question")], options);
        var full = Question("First question");
        full.AddMessages(first);
        full.Add(new ChatMessage(ChatRole.User, "Second question"));
        Assert.That(second.Usage!.InputTokenCount, Is.EqualTo(PromptTokens(full, null)));
        Assert.That(second.Usage.CachedInputTokenCount, Is.GreaterThan(0));
    }

    [Test]
    public async Task InstructionsChangeThePrompt()
    {
        var plain = await _client.GetResponseAsync(Question(), Greedy(6));
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 6, Instructions = "Answer in French." };
        var instructed = await _client.GetResponseAsync(Question(), options);
        Assert.That(instructed.Usage!.InputTokenCount, Is.EqualTo(PromptTokens(Question(), options)));
        Assert.That(instructed.Usage.InputTokenCount, Is.Not.EqualTo(plain.Usage!.InputTokenCount!.Value));
        Assert.That(MiniCpmPromptFormatter.Format(Question(), options),
            Does.StartWith("<|im_start|>system\nAnswer in French.<|im_end|>\n"));
        // The instructions are the system turn; the template's default system prompt is used only without one.
        Assert.That(MiniCpmPromptFormatter.Render(_model.ChatTemplate, Question(), options),
            Does.StartWith("<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\n"));
        Assert.That(MiniCpmPromptFormatter.Render(_model.ChatTemplate, Question(), null),
            Does.StartWith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"));
    }

    [Test]
    public async Task StopSequencesEndTheText()
    {
        var unstopped = await _client.GetResponseAsync(Question(), NoStopToken(24));
        var text = unstopped.Text;
        Assume.That(text.Length, Is.GreaterThan(12));
        var stop = text.Substring(text.Length / 2, 3);
        var options = NoStopToken(24);
        options.StopSequences = [stop];
        var stopped = await _client.GetResponseAsync(Question(), options);
        Assert.That(stopped.Text, Is.EqualTo(text[..text.IndexOf(stop, StringComparison.Ordinal)]));
        Assert.That(stopped.FinishReason, Is.EqualTo(ChatFinishReason.Stop));
    }

    [Test]
    public void PreCancelledCallThrows()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.That(async () => await _client.GetResponseAsync(Question(), Greedy(), cts.Token),
            Throws.InstanceOf<OperationCanceledException>());
    }

    [Test]
    public async Task CancellationMidStreamThrowsAndTheClientStillWorks()
    {
        using var cts = new CancellationTokenSource();
        int seen = 0;
        Assert.That(async () =>
        {
            await foreach (var u in _client.GetStreamingResponseAsync(Question(), NoStopToken(500), cts.Token))
            {
                if (++seen == 2) cts.Cancel();
            }
        }, Throws.InstanceOf<OperationCanceledException>());
        Assert.That(seen, Is.LessThan(10));
        var after = await _client.GetResponseAsync(Question(), NoStopToken(4));
        Assert.That(after.Usage!.OutputTokenCount, Is.EqualTo(4));
    }

    [Test]
    public async Task ParallelCallsCompleteAndAreDeterministicPerSeed()
    {
        using var client = new MiniCpmChatClient(_model, new MiniCpmChatClientOptions { MaxConcurrentSessions = 2 });
        ChatOptions Options(int seed) => new()
        {
            RawRepresentationFactory = _ =>
                new GenerationOptions { MaxTokens = 12, Temperature = 1f, Seed = (ulong)seed, StopTokenIds = [] },
        };
        var sequential = new List<string>();
        for (int seed = 1; seed <= 4; seed++) sequential.Add(
            (await client.GetResponseAsync(Question(), Options(seed))).Text);
        var parallel = await Task.WhenAll(Enumerable.Range(1, 4).Select(seed =>
            Task.Run(() => client.GetResponseAsync(Question(), Options(seed)))));
        Assert.That(parallel.Select(r => r.Text), Is.EqualTo(sequential));
        Assert.That(sequential.Distinct().Count(), Is.GreaterThan(1));
    }

    [Test]
    public void GetServiceReturnsMetadataModelTokenizerAndSelf()
    {
        var metadata = _client.GetService<ChatClientMetadata>()!;
        Assert.That(metadata.ProviderName, Is.EqualTo("minicpm"));
        Assert.That(metadata.DefaultModelId, Is.EqualTo("tiny"));
        Assert.That(metadata.ProviderUri!.IsFile, Is.True);
        Assert.That(metadata.ProviderUri.LocalPath.TrimEnd('/'), Is.EqualTo(_model.Directory.TrimEnd('/')));
        Assert.That(_client.GetService<MiniCpmModel>(), Is.SameAs(_model));
        Assert.That(_client.GetService<MiniCpmTokenizer>(), Is.SameAs(_model.Tokenizer));
        Assert.That(_client.GetService<MiniCpmChatClient>(), Is.SameAs(_client));
        Assert.That(_client.GetService<IChatClient>(), Is.SameAs(_client));
        Assert.That(_client.GetService(typeof(ChatClientMetadata), "key"), Is.Null);
        Assert.That(_client.GetService<string>(), Is.Null);
    }

    [Test]
    public void NullMessagesThrow()
    {
        Assert.That(() => _client.GetResponseAsync(null!), Throws.ArgumentNullException);
        Assert.That(() => _client.GetStreamingResponseAsync(null!), Throws.ArgumentNullException);
    }

    [Test]
    public async Task UnsupportedOptionsAreIgnoredWithOneLogLine()
    {
        var log = new List<string>();
        using var client = new MiniCpmChatClient(_model, new MiniCpmChatClientOptions { Log = log.Add });
        // (A JSON ResponseFormat is no longer among them: it constrains the reply, see StructuredOutputTests.)
        var options = new ChatOptions { MaxOutputTokens = 2, AllowBackgroundResponses = true };
        await client.GetResponseAsync(Question(), options.Clone());
        await client.GetResponseAsync(Question(), options.Clone());
        Assert.That(log.Count(l => l.Contains("AllowBackgroundResponses")), Is.EqualTo(1));
    }

    [Test]
    public async Task CachedConversationsAreBounded()
    {
        using var client = new MiniCpmChatClient(_model, new MiniCpmChatClientOptions { MaxCachedConversations = 2 });
        var ids = new List<string>();
        for (int i = 0; i < 4; i++) ids.Add(
            (await client.GetResponseAsync(Question($"q{i}"), Greedy(2))).ConversationId!);
        Assert.That(client.CachedConversationCount, Is.EqualTo(2));
        var evicted =
            await client.GetResponseAsync(Question("q0"),
            new ChatOptions { MaxOutputTokens = 2, ConversationId = ids[0] });
        Assert.That(evicted.Usage!.CachedInputTokenCount, Is.EqualTo(0));
        var kept =
            await client.GetResponseAsync(Question("q3"),
            new ChatOptions { MaxOutputTokens = 2, ConversationId = ids[3] });
        Assert.That(kept.Usage!.CachedInputTokenCount, Is.GreaterThan(0));
    }
}
