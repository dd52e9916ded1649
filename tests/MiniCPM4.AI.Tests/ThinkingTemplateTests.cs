using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using NUnit.Framework;

namespace MiniCPM4.AI.Tests;

/// <summary>IChatClient over a checkpoint whose chat_template.jinja is MiniCPM4.1-style (thinking switch, tools in the
/// template, MCP tool-call block), with the model's text replaced by a script.</summary>
[TestFixture]
public class ThinkingTemplateTests
{
    private MiniCpmModel _model = null!;
    private string _dir = null!;

    [OneTimeSetUp]
    public void Load()
    {
        _dir = Path.Combine(Path.GetDirectoryName(TinyModel.Directory)!, "tiny41");
        Directory.CreateDirectory(_dir);
        foreach (var file in Directory.GetFiles(TinyModel.Directory)) File.Copy(file,
            Path.Combine(_dir, Path.GetFileName(file)), overwrite: true);
        File.Copy(Path.Combine(TestContext.CurrentContext.TestDirectory, "TestData", "minicpm4.1-style.jinja"),
            Path.Combine(_dir, "chat_template.jinja"), overwrite: true);
        _model = MiniCpmModel.Load(_dir, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2 });
    }

    [OneTimeTearDown]
    public void Unload() => _model.Dispose();

    private static async IAsyncEnumerable<string> Pieces(string text,
        [EnumeratorCancellation] CancellationToken ct = default)
    {
        for (int i = 0; i < text.Length; i += 2)
        {
            await Task.Yield();
            yield return text.Substring(i, Math.Min(2, text.Length - i));
        }
    }

    [Test]
    public async Task ThinkBlocksBecomeReasoningAndEnableThinkingReachesTheTemplate()
    {
        var prompts = new List<string>();
        using var client = new MiniCpmChatClient(_model, null, new ScriptedReplyGenerator((prompt, _, ct) =>
        {
            prompts.Add(prompt);
            return Pieces("<think>\nA short story.\n</think>\n\nOnce upon a time.", ct);
        }));
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Tell a story.")]);
        Assert.That(response.Text, Is.EqualTo("Once upon a time."));
        var reasoning = response.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>().Single();
        Assert.That(reasoning.Text, Is.EqualTo("A short story."));
        Assert.That(prompts[0], Does.EndWith("<|im_start|>assistant\n"), "thinking on by default");

        var off = new ChatOptions { AdditionalProperties = new() { ["enable_thinking"] = false } };
        await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Tell a story.")], off);
        Assert.That(prompts[1], Does.EndWith("<|im_start|>assistant\n<think>\n\n</think>\n\n"));

        var kwargs =
            new ChatOptions { AdditionalProperties =
            new() { ["chat_template_kwargs"] = new Dictionary<string, object?> { ["enable_thinking"] = false } } };
        await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Tell a story.")], kwargs);
        Assert.That(prompts[2], Does.EndWith("<think>\n\n</think>\n\n"));

        using var defaults = new MiniCpmChatClient(_model, new MiniCpmChatClientOptions
        {
            ChatTemplateArguments = new Dictionary<string, object?> { ["enable_thinking"] = false },
        }, new ScriptedReplyGenerator((prompt, _, ct) =>
        {
            prompts.Add(prompt);
            return Pieces("ok", ct);
        }));
        await defaults.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")]);
        Assert.That(prompts[3], Does.EndWith("<think>\n\n</think>\n\n"));
    }

    [Test]
    public async Task ToolsReachTheTemplateAndCallsComeBack()
    {
        var prompts = new List<string>();
        IAsyncEnumerable<string> Script(string prompt, GenerationOptions options, CancellationToken ct)
        {
            lock (prompts) prompts.Add(prompt);
            return Pieces(prompt.Contains("<|im_start|>tool\n", StringComparison.Ordinal)
                ? "<think>\nGot it.\n</think>\n\nThe sum is 5."
                : "<think>\nUse add.\n</think>\n\n<|tool_call_start|>\n```python\nadd(a=2, " +
                    "b=3)\n```\n<|tool_call_end|>", ct);
        }
        var add = AIFunctionFactory.Create((int a, int b) => a + b, "add", "Adds two integers.");
        using var inner = new MiniCpmChatClient(_model, null, new ScriptedReplyGenerator(Script));
        using var client = new ChatClientBuilder(inner).UseFunctionInvocation().Build();
        var response =
            await client.GetResponseAsync([new ChatMessage(ChatRole.User, "2+3?")], new ChatOptions { Tools = [add] });

        Assert.That(response.Text, Is.EqualTo("The sum is 5."));
        Assert.That(prompts[0], Does.Contain("<tools>\n{\"name\": \"add\", \"description\": \"Adds two integers.\""),
            "the template renders the tool schema with its own tojson");
        Assert.That(prompts[1],
            Does.Contain(
            "<|im_start|>assistant\n<|tool_call_start|>\n```python\nadd(a=2, b=3)\n```\n<|tool_call_end|><|im_end|>\n"),
            "the call goes back as tool_calls, rendered by the template");
        Assert.That(prompts[1], Does.EndWith("<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\n"));
    }
}
