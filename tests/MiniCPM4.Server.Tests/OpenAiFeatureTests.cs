using System.ClientModel;
using System.Text;
using System.Text.Json;
using Json.Schema;
using OpenAI;
using OpenAI.Chat;

namespace MiniCPM4.Server.Tests;

/// <summary>Tools, structured output, log probabilities and speculative usage through the OpenAI .NET client, on the
/// demo model (real weights) with its draft.</summary>
[TestFixture]
public sealed class OpenAiFeatureTests
{
    private const string AddSchema = """
        {"type":"object","properties":{"a":{"type":"integer","minimum":0,"maximum":99},
         "b":{"type":"integer","minimum":0,"maximum":99}},"required":["a","b"],"additionalProperties":false}
        """;

    private TestServer _server = null!;
    private ChatClient _client = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _server = await TestServer.StartAsync(o =>
        {
            o.Model = TestModel.DemoWithDraft;
            o.ModelId = "demo";
        });
        _client = new ChatClient("demo", new ApiKeyCredential("unused"),
            new OpenAIClientOptions { Endpoint = new Uri(_server.BaseAddress + "/v1") });
    }

    [OneTimeTearDown]
    public async Task StopAsync() => await _server.DisposeAsync();

    private static ChatTool AddTool() =>
        ChatTool.CreateFunctionTool("add", "Adds two numbers.", BinaryData.FromString(AddSchema));

    private static void AssertValid(string schema, string json)
    {
        var result = JsonSchema.FromText(schema).Evaluate(JsonDocument.Parse(json).RootElement,
            new EvaluationOptions { OutputFormat = OutputFormat.List });
        Assert.That(result.IsValid, Is.True, $"{json} is not valid under {schema}");
    }

    [TestCase(true)]
    [TestCase(false)]
    public async Task RequiredToolCall_IsConstrainedToTheSchema_AndTheRoundTripWorks(bool named)
    {
        var options = new ChatCompletionOptions
        {
            Tools = { AddTool(), ChatTool.CreateFunctionTool("noop", "Does nothing.") },
            ToolChoice = named ? ChatToolChoice.CreateFunctionChoice("add") : ChatToolChoice.CreateRequiredChoice(),
            MaxOutputTokenCount = 200,
            Temperature = 0.8f,
            Seed = 3,
        };
        List<ChatMessage> messages = [new UserChatMessage("What is 2 + 3?")];
        ChatCompletion completion = await _client.CompleteChatAsync(messages, options);
        Assert.That(completion.FinishReason, Is.EqualTo(ChatFinishReason.ToolCalls));
        var call = completion.ToolCalls.Single();
        if (named) Assert.That(call.FunctionName, Is.EqualTo("add"));
        Assert.That(call.Id, Is.Not.Empty);
        if (call.FunctionName == "add") AssertValid(AddSchema, call.FunctionArguments.ToString());

        // The result goes back as a tool message, which the chat template renders.
        messages.Add(new AssistantChatMessage(completion));
        messages.Add(new ToolChatMessage(call.Id, "5"));
        ChatCompletion answer = await _client.CompleteChatAsync(messages,
            new ChatCompletionOptions { Tools = { AddTool() }, ToolChoice = ChatToolChoice.CreateNoneChoice(),
                MaxOutputTokenCount = 8 });
        Assert.That(answer.FinishReason, Is.AnyOf(ChatFinishReason.Stop, ChatFinishReason.Length));
        Assert.That(answer.ToolCalls, Is.Empty);
    }

    [Test]
    public async Task StreamedToolCall_DeltasCarryIndexIdNameAndArguments()
    {
        var options = new ChatCompletionOptions
        {
            Tools = { AddTool() }, ToolChoice = ChatToolChoice.CreateFunctionChoice("add"), MaxOutputTokenCount = 200,
            Seed = 4, Temperature = 0.8f,
        };
        var arguments = new StringBuilder();
        string? id = null, name = null;
        int? index = null;
        ChatFinishReason? finish = null;
        await foreach (var update in _client.CompleteChatStreamingAsync([new UserChatMessage("Add 4 and 9.")], options))
        {
            foreach (var call in update.ToolCallUpdates)
            {
                index ??= call.Index;
                id ??= call.ToolCallId;
                name ??= call.FunctionName;
                if (call.FunctionArgumentsUpdate is { } part) arguments.Append(part.ToString());
            }
            finish ??= update.FinishReason;
        }
        Assert.That((index, name, finish), Is.EqualTo(((int?)0, "add", (ChatFinishReason?)ChatFinishReason.ToolCalls)));
        Assert.That(id, Does.StartWith("call_"));
        AssertValid(AddSchema, arguments.ToString());
    }

    [Test]
    public async Task JsonSchemaResponseFormat_GivesValidJson()
    {
        const string schema = """
            {"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer",
             "minimum":0,"maximum":120},"tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":3}},
             "required":["name","age","tags"],"additionalProperties":false}
            """;
        foreach (bool strict in new[] { true, false })
        {
            var options = new ChatCompletionOptions
            {
                ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("person", BinaryData.FromString(schema),
                    jsonSchemaIsStrict: strict),
                MaxOutputTokenCount = 200, Temperature = 0.7f, Seed = 9,
            };
            ChatCompletion completion = await _client.CompleteChatAsync([new UserChatMessage("Describe a person.")],
                options);
            Assert.That(completion.FinishReason, Is.EqualTo(ChatFinishReason.Stop));
            AssertValid(schema, completion.Content[0].Text);
        }
        var json = await _client.CompleteChatAsync([new UserChatMessage("Some JSON please.")],
            new ChatCompletionOptions
            {
                ResponseFormat = ChatResponseFormat.CreateJsonObjectFormat(), MaxOutputTokenCount = 60, Seed = 2,
            });
        // json_object bounds nothing but the shape: a reply cut by max_tokens is an unfinished object.
        if (json.Value.FinishReason == ChatFinishReason.Stop)
            Assert.That(JsonDocument.Parse(json.Value.Content[0].Text).RootElement.ValueKind,
                Is.EqualTo(JsonValueKind.Object));
        else
            Assert.That(json.Value.Content[0].Text.TrimStart(), Does.StartWith("{"));
    }

    [Test]
    public async Task Logprobs_AreOrderedNormalisedAndStreamedAlike()
    {
        var options = new ChatCompletionOptions
        {
            IncludeLogProbabilities = true, TopLogProbabilityCount = 5, MaxOutputTokenCount = 12, Temperature = 0f,
        };
        ChatCompletion completion = await _client.CompleteChatAsync([new UserChatMessage("Tell me a story.")], options);
        var tokens = completion.ContentTokenLogProbabilities;
        Assert.That(tokens, Has.Count.EqualTo(completion.Usage.OutputTokenCount));
        foreach (var t in tokens)
        {
            Assert.That(t.TopLogProbabilities, Has.Count.EqualTo(5));
            var top = t.TopLogProbabilities.Select(x => x.LogProbability).ToList();
            Assert.That(top, Is.Ordered.Descending);
            Assert.That(top, Has.All.LessThanOrEqualTo(0f));
            Assert.That(top.Sum(x => Math.Exp(x)), Is.LessThanOrEqualTo(1 + 1e-4));
            // Greedy: the chosen token is the most likely one.
            Assert.That(t.LogProbability, Is.EqualTo(top[0]).Within(1e-4));
            Assert.That(t.Token, Is.EqualTo(t.TopLogProbabilities[0].Token));
        }
        // Each token is the text it added (a stop-string check may hold a few characters back to the end).
        Assert.That(completion.Content[0].Text, Does.StartWith(string.Concat(tokens.Select(t => t.Token))));

        var streamed = new List<ChatTokenLogProbabilityDetails>();
        await foreach (var update in _client.CompleteChatStreamingAsync([new UserChatMessage("Tell me a story.")],
                           options))
            streamed.AddRange(update.ContentTokenLogProbabilities);
        Assert.That(streamed.Select(t => t.Token), Is.EqualTo(tokens.Select(t => t.Token)));
        Assert.That(streamed.Select(t => t.LogProbability),
            Is.EqualTo(tokens.Select(t => t.LogProbability)).Within(1e-4));
    }

    [Test]
    public void Logprobs_AreTheModelsOwnDistribution()
    {
        // The scorer's numbers are log-softmax of the logits: they sum to one over the vocabulary.
        var logits = new float[] { 2f, 1f, 0.5f, -3f };
        var lp = LogprobScorer.Score(logits, 1, 4);
        Assert.That(lp.Top.Select(t => t.Id), Is.EqualTo(new[] { 0, 1, 2, 3 }));
        Assert.That(lp.Top.Sum(t => Math.Exp(t.Logprob)), Is.EqualTo(1).Within(1e-9));
        Assert.That(lp.Logprob, Is.EqualTo(1 - Math.Log(logits.Sum(x => Math.Exp(x)))).Within(1e-6));
    }

    [Test]
    public async Task CompletionsLogprobs_AndSpeculativeUsage()
    {
        using var response = await _server.Http.PostAsync("/v1/completions", HttpProtocolTests.Json(
            """{"model":"demo","prompt":"Once upon a time","max_tokens":40,"temperature":0,"logprobs":3}"""));
        var root = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        var logprobs = root.GetProperty("choices")[0].GetProperty("logprobs");
        int n = root.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        Assert.That(logprobs.GetProperty("tokens").GetArrayLength(), Is.EqualTo(n));
        Assert.That(logprobs.GetProperty("top_logprobs")[0].EnumerateObject().Count(), Is.InRange(1, 3));
        Assert.That(string.Concat(logprobs.GetProperty("tokens").EnumerateArray().Select(t => t.GetString())),
            Is.EqualTo(root.GetProperty("choices")[0].GetProperty("text").GetString()));
        var offsets = logprobs.GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32()).ToList();
        Assert.That(offsets, Is.Ordered.Ascending);
        // The demo model runs with its draft: usage tells the speculative rounds and tokens per round.
        var spec = root.GetProperty("usage").GetProperty("speculative");
        Assert.That(spec.GetProperty("rounds").GetInt64(), Is.GreaterThan(0));
        Assert.That(spec.GetProperty("accepted_tokens_per_round").GetDouble(), Is.GreaterThanOrEqualTo(1));
        Assert.That(spec.GetProperty("tokens").GetInt64(), Is.LessThanOrEqualTo(n + 1));

        // Streamed: each token's chunk carries its own log probabilities, the same as the whole answer's.
        using var streamed = await _server.Http.PostAsync("/v1/completions", HttpProtocolTests.Json(
            """
            {"model":"demo","prompt":"Once upon a time","max_tokens":40,"temperature":0,"logprobs":3,"stream":true}
            """));
        var chunks = (await streamed.Content.ReadAsStringAsync()).Split("\n\n")
            .Where(e => e.StartsWith("data: {", StringComparison.Ordinal))
            .Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0])
            .Where(c => c.GetProperty("logprobs").ValueKind == JsonValueKind.Object)
            .Select(c => c.GetProperty("logprobs").GetProperty("token_logprobs")[0].GetDouble()).ToList();
        var whole = logprobs.GetProperty("token_logprobs").EnumerateArray().Select(x => x.GetDouble()).ToList();
        Assert.That(chunks, Is.EqualTo(whole).Within(1e-4));
    }

    [Test]
    public async Task AnUnsupportedSchemaKeyword_Gets400NamingIt()
    {
        var options = new ChatCompletionOptions
        {
            ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("x", BinaryData.FromString(
                """{"type":"object","unevaluatedProperties":{"type":"string"}}""")),
        };
        var e = await Assert.ThrowsAsync<ClientResultException>(() =>
            _client.CompleteChatAsync([new UserChatMessage("hi")], options));
        Assert.That(e!.Status, Is.EqualTo(400));
        Assert.That(e.Message, Does.Contain("unevaluatedProperties"));
    }
}

/// <summary>tool_choice auto: a call block the reply opens is continued by the model, constrained to the schemas.
/// </summary>
[TestFixture]
public sealed class AutoToolCallTests
{
    [Test]
    public async Task ACallTheReplyOpens_IsWrittenByTheModelUnderTheSchema([Values] bool stream)
    {
        const string schema = """
            {"type":"object","properties":{"a":{"type":"integer","minimum":0,"maximum":99},
             "b":{"type":"integer","minimum":0,"maximum":99}},"required":["a","b"],"additionalProperties":false}
            """;
        // The scripted reply opens a call block and would write a call that breaks the schema; the model writes the
        // call instead (the demo model, with its draft), under the schema.
        await using var server = await TestServer.StartAsync(o =>
        {
            o.Model = TestModel.DemoWithDraft;
            o.ModelId = "demo";
            o.ScriptedCompletion = () => ["Let me ", "add. <|tool_call_", "start|>\n```python\nadd(a='x')\n```"];
            o.ScriptedCallsAreGenerated = true;
        });
        var client = new ChatClient("demo", new ApiKeyCredential("unused"),
            new OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress + "/v1") });
        var options = new ChatCompletionOptions
        {
            Tools = { ChatTool.CreateFunctionTool("add", "Adds.", BinaryData.FromString(schema)) },
            MaxOutputTokenCount = 200, Seed = 5, Temperature = 0.8f,
        };
        string text, name, arguments;
        ChatFinishReason? finish;
        if (stream)
        {
            var content = new StringBuilder();
            var args = new StringBuilder();
            string? n = null;
            finish = null;
            await foreach (var u in client.CompleteChatStreamingAsync([new UserChatMessage("2 + 3?")], options))
            {
                foreach (var part in u.ContentUpdate) content.Append(part.Text);
                foreach (var call in u.ToolCallUpdates)
                {
                    n ??= call.FunctionName;
                    if (call.FunctionArgumentsUpdate is { } a) args.Append(a.ToString());
                }
                finish ??= u.FinishReason;
            }
            (text, name, arguments) = (content.ToString(), n ?? "", args.ToString());
        }
        else
        {
            ChatCompletion c = await client.CompleteChatAsync([new UserChatMessage("2 + 3?")], options);
            (text, name, arguments, finish) = (c.Content.Count > 0 ? c.Content[0].Text : "",
                c.ToolCalls.Single().FunctionName, c.ToolCalls.Single().FunctionArguments.ToString(), c.FinishReason);
        }
        Assert.That(text.Trim(), Is.EqualTo("Let me add."));
        Assert.That((name, finish), Is.EqualTo(("add", (ChatFinishReason?)ChatFinishReason.ToolCalls)));
        var parsed = JsonDocument.Parse(arguments).RootElement;
        Assert.That(parsed.GetProperty("a").GetInt32(), Is.InRange(0, 99));
        Assert.That(parsed.GetProperty("b").GetInt32(), Is.InRange(0, 99));
    }
}
