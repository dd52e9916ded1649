using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using NUnit.Framework;

namespace MiniCPM4.AI.Tests;

/// <summary>Tool calling with the model's text replaced by a script (random weights never call tools).</summary>
[TestFixture]
public class ScriptedToolCallTests
{
    private const string ToolCallOutput =
        "<|thought_start|>\nI need to add the numbers.\n<|thought_end|>\n" +
        "<|tool_call_start|>\n```python\nadd(a=2, b=3)\n```\n<|tool_call_end|>\n";

    private MiniCpmModel _model = null!;

    [OneTimeSetUp]
    public void Load() => _model = TinyModel.Load();

    [OneTimeTearDown]
    public void Unload() => _model.Dispose();

    // Yields the text in 3-character pieces, like tokens.
    private static async IAsyncEnumerable<string> Pieces(string text,
        [EnumeratorCancellation] CancellationToken ct = default)
    {
        for (int i = 0; i < text.Length; i += 3)
        {
            await Task.Yield();
            ct.ThrowIfCancellationRequested();
            yield return text.Substring(i, Math.Min(3, text.Length - i));
        }
    }

    [Test]
    public async Task StreamingToolCallBecomesFunctionCallContent()
    {
        using var client =
            new MiniCpmChatClient(_model, null, new ScriptedReplyGenerator((_, _, ct) => Pieces(ToolCallOutput, ct)));
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "2+3?")])) updates.Add(
            u);
        Assert.That(string.Concat(updates.Select(u => u.Text)), Does.Not.Contain("<|"));
        var call = updates.SelectMany(u => u.Contents).OfType<FunctionCallContent>().Single();
        Assert.That(call.Name, Is.EqualTo("add"));
        Assert.That(call.Arguments!["a"], Is.EqualTo(2L));
        Assert.That(updates[^1].FinishReason, Is.EqualTo(ChatFinishReason.ToolCalls));
        var reasoning =
            string.Concat(updates.SelectMany(u => u.Contents).OfType<TextReasoningContent>().Select(r => r.Text));
        Assert.That(reasoning, Is.EqualTo("I need to add the numbers."));
    }

    [Test]
    public async Task FunctionInvokingChatClientRoundTrip()
    {
        var prompts = new List<string>();
        IAsyncEnumerable<string> Script(string prompt, GenerationOptions options, CancellationToken ct)
        {
            lock (prompts) prompts.Add(prompt);
            return Pieces(prompt.Contains("<|im_start|>tool\n", StringComparison.Ordinal) ? "The sum is 5."
                : ToolCallOutput, ct);
        }

        int invoked = 0;
        var add = AIFunctionFactory.Create((int a, int b) =>
        {
            Interlocked.Increment(ref invoked);
            return a + b;
        }, "add", "Adds two integers.");

        using var inner = new MiniCpmChatClient(_model, null, new ScriptedReplyGenerator(Script));
        using var client = new ChatClientBuilder(inner).UseFunctionInvocation().Build();
        var response =
            await client.GetResponseAsync([new ChatMessage(ChatRole.User, "What is 2+3?")],
            new ChatOptions { Tools = [add] });

        Assert.That(invoked, Is.EqualTo(1));
        Assert.That(response.Text, Is.EqualTo("The sum is 5."));
        Assert.That(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Single().Name,
            Is.EqualTo("add"));
        Assert.That(
            response.Messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().Single().Result?.ToString(),
            Is.EqualTo("5"));
        Assert.That(prompts, Has.Count.EqualTo(2));
        Assert.That(prompts[0], Does.Contain("\"name\":\"add\""), "the tool is described in the system turn");
        var followUp = prompts[1];
        Assert.That(followUp, Does.Contain("<|im_start|>user\nWhat is 2+3?<|im_end|>\n"));
        Assert.That(followUp,
            Does.Contain("<|tool_call_start|>\n```python\nadd(a=2, b=3)\n```\n<|tool_call_end|>\n<|im_end|>\n"));
        Assert.That(followUp, Does.EndWith("<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\n"));
    }

    [Test]
    public async Task FunctionInvocationStreaming()
    {
        IAsyncEnumerable<string> Script(string prompt, GenerationOptions options, CancellationToken ct) =>
            Pieces(prompt.Contains("<|im_start|>tool\n", StringComparison.Ordinal) ? "Done." : ToolCallOutput, ct);
        var add = AIFunctionFactory.Create((int a, int b) => a + b, "add");
        using var client =
            new ChatClientBuilder(
            new MiniCpmChatClient(_model, null, new ScriptedReplyGenerator(Script))).UseFunctionInvocation().Build();
        var response =
            await client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "2+3")],
            new ChatOptions { Tools = [add] })
            .ToChatResponseAsync();
        Assert.That(response.Text, Does.EndWith("Done."));
        Assert.That(response.Messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().Count(),
            Is.EqualTo(1));
    }

    [Test]
    public async Task QueuedCallsAreServedInOrderAndCanBeCancelled()
    {
        var gate = new TaskCompletionSource();
        var order = new List<string>();
        async IAsyncEnumerable<string> Script(string prompt, GenerationOptions options,
            [EnumeratorCancellation] CancellationToken ct)
        {
            var name = prompt.Contains("first") ? "first" : prompt.Contains("second") ? "second" : "third";
            lock (order) order.Add(name);
            if (name == "first") await gate.Task.WaitAsync(ct);
            yield return name;
        }
        using var client =
            new MiniCpmChatClient(_model, new MiniCpmChatClientOptions { MaxConcurrentSessions = 1 },
            new ScriptedReplyGenerator(Script));
        var first = client.GetResponseAsync([new ChatMessage(ChatRole.User, "first")]);
        await Task.Delay(50);
        using var cts = new CancellationTokenSource();
        var second = client.GetResponseAsync([new ChatMessage(ChatRole.User, "second")], null, cts.Token);
        var third = client.GetResponseAsync([new ChatMessage(ChatRole.User, "third")]);
        await Task.Delay(50);
        cts.Cancel();
        Assert.That(async () => await second, Throws.InstanceOf<OperationCanceledException>());
        Assert.That(third.IsCompleted, Is.False, "waits behind the first call");
        gate.SetResult();
        Assert.That((await first).Text, Is.EqualTo("first"));
        Assert.That((await third).Text, Is.EqualTo("third"));
        Assert.That(order, Is.EqualTo(new[] { "first", "third" }));
    }
}
