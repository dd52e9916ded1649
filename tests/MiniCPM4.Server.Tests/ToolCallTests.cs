using System.Net.Http.Json;
using System.Text.Json;
using MiniCPM4.Checkpoints;
using OpenAI.Chat;

namespace MiniCPM4.Server.Tests;

/// <summary>Tools, tool calls and reasoning through the server, with the model's text replaced by a script.</summary>
[TestFixture]
public class ToolCallTests
{
    private const string Scripted =
        "<|thought_start|>\nI should add.\n<|thought_end|>\n<|tool_call_start|>\n```python\nadd(a=2, " +
            "b=3)\n```\n<|tool_call_end|>\n";

    private static string[] Pieces(string text) =>
        Enumerable.Range(0, (text.Length + 2) / 3).Select(i => text.Substring(i * 3, Math.Min(3, text.Length - i * 3)))
        .ToArray();

    private static readonly object AddTool = new
    {
        type = "function",
        function =
            new { name = "add", description = "Adds.",
            parameters =
            new { type = "object", properties = new { a = new { type = "integer" }, b = new { type = "integer" } } } },
    };

    [Test]
    public async Task ToolCallsAndReasoningAreReturned()
    {
        await using var server = await TestServer.StartAsync(o => o.ScriptedCompletion = () => Pieces(Scripted));
        var client = new ChatClient(TestServer.ModelId, new System.ClientModel.ApiKeyCredential("none"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress + "/v1") });
        var options =
            new ChatCompletionOptions { Tools =
            { ChatTool.CreateFunctionTool("add", "Adds.",
            BinaryData.FromString("""{"type": "object", "properties": {"a": {"type": "integer"}}}""")) } };
        ChatCompletion completion = await client.CompleteChatAsync([new UserChatMessage("2+3?")], options);
        Assert.That(completion.FinishReason, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls));
        var call = completion.ToolCalls.Single();
        Assert.That(call.FunctionName, Is.EqualTo("add"));
        Assert.That(JsonDocument.Parse(call.FunctionArguments.ToString()).RootElement.GetProperty("b").GetInt32(),
            Is.EqualTo(3));

        // The raw body: content null, reasoning_content, and the follow-up with the call and its result renders.
        var body =
            new { messages = new object[] { new { role = "user", content = "2+3?" } }, tools = new[] { AddTool } };
        var raw = await server.Http.PostAsJsonAsync("/v1/chat/completions", body);
        var json =
            JsonDocument.Parse(await raw.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty(
            "message");
        Assert.That(json.GetProperty("content").ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That(json.GetProperty("reasoning_content").GetString(), Is.EqualTo("I should add."));
        Assert.That(json.GetProperty("tool_calls")[0].GetProperty("function").GetProperty("arguments").GetString(),
            Is.EqualTo("{\"a\":2,\"b\":3}"));

        var followUp = new
        {
            messages = new object[]
            {
                new { role = "user", content = "2+3?" },
                new { role = "assistant", content = (string?)null,
                    tool_calls =
                    new[] { new { id = "c1", type = "function",
                    function = new { name = "add", arguments = "{\"a\": 2, \"b\": 3}" } } } },
                new { role = "tool", tool_call_id = "c1", content = "5" },
            },
            tools = new[] { AddTool },
        };
        var second = await server.Http.PostAsJsonAsync("/v1/chat/completions", followUp);
        Assert.That((int)second.StatusCode, Is.EqualTo(200), await second.Content.ReadAsStringAsync());
    }

    [Test]
    public async Task StreamedToolCallsAndReasoningAreDeltas()
    {
        await using var server = await TestServer.StartAsync(o => o.ScriptedCompletion = () => Pieces(Scripted));
        var body =
            new { messages = new object[] { new { role = "user", content = "2+3?" } }, tools = new[] { AddTool },
            stream = true };
        var response = await server.Http.PostAsJsonAsync("/v1/chat/completions", body);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Where(e => e.StartsWith("data: {", StringComparison.Ordinal))
            .Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0]).ToList();
        string reasoning =
            string.Concat(
            events.Select(e => e.GetProperty("delta").TryGetProperty("reasoning_content", out var r) ? r.GetString()
            : ""));
        Assert.That(reasoning, Is.EqualTo("I should add."));
        var calls = events.Where(e => e.GetProperty("delta").TryGetProperty("tool_calls", out _)).ToList();
        Assert.That(calls, Has.Count.EqualTo(1));
        var call = calls[0].GetProperty("delta").GetProperty("tool_calls")[0];
        Assert.That(
            (call.GetProperty("index").GetInt32(), call.GetProperty("function").GetProperty("name").GetString()),
            Is.EqualTo((0, "add")));
        Assert.That(events[^1].GetProperty("finish_reason").GetString(), Is.EqualTo("tool_calls"));
    }

    [TestCase(true, 2)]
    [TestCase(false, 1)]
    public async Task ParallelToolCalls_FalseKeepsTheFirstCall(bool parallel, int expected)
    {
        const string two =
            "<|tool_call_start|>\n```python\nadd(a=1, b=2)\nadd(a=3, b=4)\n```\n<|tool_call_end|>\n";
        await using var server = await TestServer.StartAsync(o => o.ScriptedCompletion = () => Pieces(two));
        foreach (bool stream in new[] { false, true })
        {
            var body = new
            {
                messages = new object[] { new { role = "user", content = "sums" } }, tools = new[] { AddTool },
                parallel_tool_calls = parallel, stream,
            };
            var response = await server.Http.PostAsJsonAsync("/v1/chat/completions", body);
            string text = await response.Content.ReadAsStringAsync();
            int calls = stream
                ? text.Split("\n\n").Count(e => e.Contains("\"tool_calls\":[", StringComparison.Ordinal))
                : JsonDocument.Parse(text).RootElement.GetProperty("choices")[0].GetProperty("message")
                    .GetProperty("tool_calls").GetArrayLength();
            if (stream && expected == 2)
                Assert.That(text, Does.Contain("\"index\":1"), "the second call's delta has index 1");
            else
                Assert.That(calls, Is.EqualTo(expected), text);
        }
    }

    [Test]
    public async Task ChatTemplateKwargsReachTheTemplate()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"minicpm4-server-tests-{Environment.ProcessId}", "tiny41");
        if (!File.Exists(Path.Combine(dir, "config.json")))
            CheckpointWriter.CreateRandomModel(dir, ModelPreset.Tiny, seed: 5, dtype: TensorDType.BF16);
        File.Copy(Path.Combine(TestContext.CurrentContext.TestDirectory, "TestData", "minicpm4.1-style.jinja"),
            Path.Combine(dir, "chat_template.jinja"), overwrite: true);
        using var model = MiniCpmModel.Load(dir, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2 });
        await using var server = await TestServer.StartAsync(o =>
        {
            o.Model = model;
            o.ScriptedCompletion = () => Pieces("<think>\nHmm.\n</think>\n\nHello.");
        });
        async Task<JsonElement> Ask(object body)
        {
            var r = await server.Http.PostAsJsonAsync("/v1/chat/completions", body);
            Assert.That((int)r.StatusCode, Is.EqualTo(200), await r.Content.ReadAsStringAsync());
            return JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
        }
        var on = await Ask(new { messages = new[] { new { role = "user", content = "Hi" } } });
        var off =
            await Ask(
            new { messages = new[] { new { role = "user", content = "Hi" } },
            chat_template_kwargs = new { enable_thinking = false } });
        int onTokens = on.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        int offTokens = off.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        Assert.That(offTokens, Is.GreaterThan(onTokens), "enable_thinking=false adds the empty think block");
        var message = on.GetProperty("choices")[0].GetProperty("message");
        Assert.That(message.GetProperty("content").GetString(), Is.EqualTo("Hello."));
        Assert.That(message.GetProperty("reasoning_content").GetString(), Is.EqualTo("Hmm."));

        var bad =
            await server.Http.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new[] { new { role = "user", content = "Hi" } }, chat_template_kwargs = 5 });
        Assert.That((int)bad.StatusCode, Is.EqualTo(400));
    }
}
