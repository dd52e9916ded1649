using System.ClientModel;
using System.Text;
using OpenAI;
using OpenAI.Chat;

namespace MiniCPM4.Server.Tests;

/// <summary>The official OpenAI .NET client against the in-process server.</summary>
[TestFixture]
public sealed class OpenAiClientTests
{
    private TestServer _server = null!;
    private ChatClient _client = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _server = await TestServer.StartAsync();
        _client = new ChatClient(TestServer.ModelId, new ApiKeyCredential("unused"),
            new OpenAIClientOptions { Endpoint = new Uri(_server.BaseAddress + "/v1") });
    }

    [OneTimeTearDown]
    public async Task StopAsync() => await _server.DisposeAsync();

    private static List<OpenAI.Chat.ChatMessage> Conversation() =>
    [
        new SystemChatMessage("You are a test."),
        new UserChatMessage("Tell me a story about a lighthouse."),
    ];

    [Test]
    public async Task PlainChatCompletion_HasContentUsageAndFinishReason()
    {
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 12, Temperature = 0.8f, Seed = 11 };
        ChatCompletion completion = await _client.CompleteChatAsync(Conversation(), options);

        Assert.That(completion.Role, Is.EqualTo(ChatMessageRole.Assistant));
        Assert.That(completion.Content, Has.Count.EqualTo(1));
        Assert.That(completion.Content[0].Text, Is.Not.Empty);
        Assert.That(completion.Model, Is.EqualTo(TestServer.ModelId));
        Assert.That(completion.Id, Does.StartWith("chatcmpl-"));
        Assert.That(completion.FinishReason, Is.AnyOf(ChatFinishReason.Stop, ChatFinishReason.Length));
        Assert.That(completion.Usage.InputTokenCount, Is.GreaterThan(10));
        Assert.That(completion.Usage.OutputTokenCount, Is.InRange(1, 12));
        Assert.That(completion.Usage.TotalTokenCount,
            Is.EqualTo(completion.Usage.InputTokenCount + completion.Usage.OutputTokenCount));
        if (completion.FinishReason == ChatFinishReason.Length)
            Assert.That(completion.Usage.OutputTokenCount, Is.EqualTo(12));
    }

    [Test]
    public async Task StreamingChat_ConcatenatesToThePlainTextWithTheSameSeed_AndReportsUsage()
    {
        var options =
            new ChatCompletionOptions { MaxOutputTokenCount = 20, Temperature = 0.9f, TopP = 0.95f, Seed = 1234 };
        ChatCompletion plain = await _client.CompleteChatAsync(Conversation(), options);

        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        ChatMessageRole? role = null;
        int updates = 0;
        await foreach (var update in _client.CompleteChatStreamingAsync(Conversation(), options))
        {
            updates++;
            role ??= update.Role;
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }

        Assert.That(updates, Is.GreaterThan(2));
        Assert.That(role, Is.EqualTo(ChatMessageRole.Assistant));
        Assert.That(text.ToString(), Is.EqualTo(plain.Content[0].Text));
        Assert.That(finish, Is.EqualTo(plain.FinishReason));
        Assert.That(usage, Is.Not.Null, "the client asks for stream_options.include_usage");
        Assert.That(usage!.InputTokenCount, Is.EqualTo(plain.Usage.InputTokenCount));
        Assert.That(usage.OutputTokenCount, Is.EqualTo(plain.Usage.OutputTokenCount));
        Assert.That(usage.TotalTokenCount, Is.EqualTo(usage.InputTokenCount + usage.OutputTokenCount));
    }

    [Test]
    public async Task MaxTokens_EndsWithFinishReasonLength()
    {
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 3, Temperature = 0f };
        ChatCompletion completion = await _client.CompleteChatAsync(Conversation(), options);
        Assert.That(completion.FinishReason, Is.EqualTo(ChatFinishReason.Length));
        Assert.That(completion.Usage.OutputTokenCount, Is.EqualTo(3));
    }

    [Test]
    public async Task StopString_IsHonouredAndNotReturned()
    {
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 16, Temperature = 0f };
        ChatCompletion full = await _client.CompleteChatAsync(Conversation(), options);
        string text = full.Content[0].Text;
        Assume.That(text.Length, Is.GreaterThan(4));
        string stop = text.Substring(text.Length / 2, 2);
        int at = text.IndexOf(stop, StringComparison.Ordinal);

        options.StopSequences.Add(stop);
        ChatCompletion stopped = await _client.CompleteChatAsync(Conversation(), options);
        Assert.That(stopped.FinishReason, Is.EqualTo(ChatFinishReason.Stop));
        Assert.That(stopped.Content.Count == 0 ? "" : stopped.Content[0].Text, Is.EqualTo(text[..at]));
    }
}
