using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace MiniCPM4.Server.Tests;

/// <summary>Raw HTTP: the simple endpoints, /v1/completions and the validation matrix.</summary>
[TestFixture]
public sealed class HttpProtocolTests
{
    private TestServer _server = null!;
    private HttpClient Http => _server.Http;

    [OneTimeSetUp]
    public async Task StartAsync() => _server = await TestServer.StartAsync(o =>
    {
        o.MaxRequestBytes = 256 * 1024;
        o.ModelAliases = ["echo-me"];
    });

    [OneTimeTearDown]
    public async Task StopAsync() => await _server.DisposeAsync();

    internal static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    [Test]
    public async Task Health_IsOk()
    {
        using var response = await Http.GetAsync("/health");
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.That(doc.RootElement.GetProperty("status").GetString(), Is.EqualTo("ok"));
    }

    [Test]
    public async Task Models_ListsTheOneModel()
    {
        using var response = await Http.GetAsync("/v1/models");
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.That(doc.RootElement.GetProperty("object").GetString(), Is.EqualTo("list"));
        var data = doc.RootElement.GetProperty("data");
        Assert.That(data.GetArrayLength(), Is.EqualTo(1));
        Assert.That(data[0].GetProperty("id").GetString(), Is.EqualTo(TestServer.ModelId));
        Assert.That(data[0].GetProperty("object").GetString(), Is.EqualTo("model"));
    }

    [Test]
    public async Task Completions_Plain()
    {
        using var response = await Http.PostAsync("/v1/completions",
            Json("""{"model":"echo-me","prompt":"Once upon a time","max_tokens":6,"temperature":0.7,"seed":3}"""));
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var root = doc.RootElement;
        Assert.That(root.GetProperty("object").GetString(), Is.EqualTo("text_completion"));
        Assert.That(root.GetProperty("model").GetString(), Is.EqualTo("echo-me"));
        var choice = root.GetProperty("choices")[0];
        Assert.That(choice.GetProperty("text").GetString(), Is.Not.Empty);
        Assert.That(choice.GetProperty("finish_reason").GetString(), Is.AnyOf("stop", "length"));
        var usage = root.GetProperty("usage");
        Assert.That(usage.GetProperty("completion_tokens").GetInt32(), Is.InRange(1, 6));
        Assert.That(usage.GetProperty("total_tokens").GetInt32(),
            Is.EqualTo(usage.GetProperty("prompt_tokens").GetInt32()
                + usage.GetProperty("completion_tokens").GetInt32()));
    }

    [Test]
    public async Task Completions_Streaming_MatchesPlainAndEndsWithDone()
    {
        const string body = """{"prompt":"The weather today","max_tokens":10,"temperature":0.8,"seed":99%STREAM%}""";
        using var plainResponse = await Http.PostAsync("/v1/completions", Json(body.Replace("%STREAM%", "")));
        using var plain = JsonDocument.Parse(await plainResponse.Content.ReadAsStringAsync());
        string plainText = plain.RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = Json(body.Replace("%STREAM%", ""","stream":true,"stream_options":{"include_usage":true}""")),
        };
        using var response = await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(response.Content.Headers.ContentType?.MediaType, Is.EqualTo("text/event-stream"));
        var events = await ReadEventsAsync(response);

        Assert.That(events[^1], Is.EqualTo("[DONE]"));
        var text = new StringBuilder();
        string? finish = null;
        JsonElement? usage = null;
        foreach (var e in events[..^1])
        {
            using var doc = JsonDocument.Parse(e);
            var root = doc.RootElement;
            Assert.That(root.GetProperty("object").GetString(), Is.EqualTo("text_completion"));
            var choices = root.GetProperty("choices");
            if (choices.GetArrayLength() > 0)
            {
                text.Append(choices[0].GetProperty("text").GetString());
                if (choices[0].GetProperty("finish_reason").ValueKind == JsonValueKind.String)
                    finish = choices[0].GetProperty("finish_reason").GetString();
            }
            if (root.TryGetProperty("usage", out var u)) usage = u.Clone();
        }
        Assert.That(text.ToString(), Is.EqualTo(plainText));
        Assert.That(finish,
            Is.EqualTo(plain.RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString()));
        Assert.That(usage, Is.Not.Null);
        Assert.That(usage!.Value.GetProperty("completion_tokens").GetInt32(),
            Is.EqualTo(plain.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32()));
    }

    [Test]
    public async Task ChatStreaming_RawSse_FirstDeltaHasRole_LastHasFinishReason()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = Json("""{"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":4,"stream":true}"""),
        };
        using var response = await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        var events = await ReadEventsAsync(response);
        Assert.That(events[^1], Is.EqualTo("[DONE]"));
        using var first = JsonDocument.Parse(events[0]);
        Assert.That(first.RootElement.GetProperty("object").GetString(), Is.EqualTo("chat.completion.chunk"));
        Assert.That(first.RootElement.GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString(),
            Is.EqualTo("assistant"));
        using var last = JsonDocument.Parse(events[^2]);
        Assert.That(last.RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString(),
            Is.EqualTo("length"));
        Assert.That(last.RootElement.TryGetProperty("usage", out _), Is.False, "usage only when include_usage is set");
    }

    internal static async Task<List<string>> ReadEventsAsync(HttpResponseMessage response)
    {
        var events = new List<string>();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0) continue;
            Assert.That(line, Does.StartWith("data: "));
            events.Add(line["data: ".Length..]);
        }
        return events;
    }

    public static IEnumerable<TestCaseData> BadRequests()
    {
        const string chat = "/v1/chat/completions", text = "/v1/completions";
        const string ok = """[{"role":"user","content":"hi"}]""";
        TestCaseData Case(string name, string path, string body, string? param = null, string? code = null) =>
            new TestCaseData(path, body, param, code).SetName("BadRequest_" + name);

        yield return Case("InvalidJson", chat, """{"messages": [""");
        yield return Case("JsonArray", chat, """[{"role":"user","content":"hi"}]""");
        yield return Case("JsonNull", chat, "null");
        yield return Case("EmptyBody", chat, "");
        yield return Case("MissingMessages", chat, """{"model":"x"}""", "messages");
        yield return Case("MessagesString", chat, """{"messages":"hi"}""", "messages");
        yield return Case("MessagesEmpty", chat, """{"messages":[]}""", "messages");
        yield return Case("MessageNotObject", chat, """{"messages":[42]}""", "messages[0]");
        yield return Case("MessageWithoutContent", chat, """{"messages":[{"role":"user"}]}""", "messages[0].content");
        yield return Case("MessageContentNumber", chat, """{"messages":[{"role":"user","content":7}]}""",
            "messages[0].content");
        yield return Case("MessageImagePart", chat,
            """{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""",
                "messages[0].content[0].type");
        yield return Case("UnknownRole", chat, """{"messages":[{"role":"wizard","content":"hi"}]}""",
            "messages[0].role");
        yield return Case("MissingRole", chat, """{"messages":[{"content":"hi"}]}""", "messages[0].role");
        yield return Case("MaxTokensString", chat, $$"""{"messages":{{ok}},"max_tokens":"ten"}""", "max_tokens");
        yield return Case("MaxTokensFraction", chat, $$"""{"messages":{{ok}},"max_tokens":1.5}""", "max_tokens");
        yield return Case("MaxTokensZero", chat, $$"""{"messages":{{ok}},"max_tokens":0}""", "max_tokens");
        yield return Case("MaxTokensAbsurd", chat, $$"""{"messages":{{ok}},"max_tokens":100000000}""", "max_tokens");
        yield return Case("MaxTokensOverflow", chat, $$"""{"messages":{{ok}},"max_tokens":1e30}""", "max_tokens");
        yield return Case("MaxCompletionTokensNegative", chat, $$"""{"messages":{{ok}},"max_completion_tokens":-1}""",
            "max_completion_tokens");
        yield return Case("TemperatureString", chat, $$"""{"messages":{{ok}},"temperature":"hot"}""", "temperature");
        yield return Case("Temperature5", chat, $$"""{"messages":{{ok}},"temperature":5}""", "temperature");
        yield return Case("TemperatureNegative", chat, $$"""{"messages":{{ok}},"temperature":-0.1}""", "temperature");
        yield return Case("TopPZero", chat, $$"""{"messages":{{ok}},"top_p":0}""", "top_p");
        yield return Case("TopPAboveOne", chat, $$"""{"messages":{{ok}},"top_p":1.5}""", "top_p");
        yield return Case("StreamString", chat, $$"""{"messages":{{ok}},"stream":"yes"}""", "stream");
        yield return Case("StopNumber", chat, $$"""{"messages":{{ok}},"stop":5}""", "stop");
        yield return Case("StopTooMany", chat, $$"""{"messages":{{ok}},"stop":["a","b","c","d","e"]}""", "stop");
        yield return Case("SeedString", chat, $$"""{"messages":{{ok}},"seed":"x"}""", "seed");
        yield return Case("NTwo", chat, $$"""{"messages":{{ok}},"n":2}""", "n");
        // The output fields: tools, tool_choice, parallel_tool_calls, response_format, logprobs.
        // Single quotes stand for double quotes in these bodies.
        static string With(string fields) =>
            ("{'messages':[{'role':'user','content':'hi'}]," + fields + "}").Replace('\'', '"');
        const string tool =
            "'tools':[{'type':'function','function':{'name':'add','parameters':{'type':'object'}}}]";
        yield return Case("ToolsNumber", chat, With("'tools':5"), "tools");
        yield return Case("ToolWithoutFunction", chat, With("'tools':[{'type':'function'}]"), "tools[0]");
        yield return Case("ToolParametersString", chat,
            With("'tools':[{'type':'function','function':{'name':'f','parameters':'x'}}]"),
            "tools[0].function.parameters");
        yield return Case("ToolChoiceUnknown", chat, With(tool + ",'tool_choice':'often'"), "tool_choice");
        yield return Case("ToolChoiceNumber", chat, With(tool + ",'tool_choice':1"), "tool_choice");
        yield return Case("ToolChoiceRequiredWithoutTools", chat, With("'tool_choice':'required'"), "tool_choice");
        yield return Case("ToolChoiceNamedMissing", chat,
            With(tool + ",'tool_choice':{'type':'function','function':{'name':'mul'}}"), "tool_choice.function.name");
        yield return Case("ToolSchemaUnsupported", chat,
            With("'tool_choice':'required','tools':[{'type':'function','function':{'name':'f'," +
                 "'parameters':{'type':'object','unevaluatedProperties':{'type':'string'}}}}]"), "tools");
        yield return Case("ParallelToolCallsString", chat, With("'parallel_tool_calls':'no'"), "parallel_tool_calls");
        yield return Case("ResponseFormatString", chat, With("'response_format':'json'"), "response_format");
        yield return Case("ResponseFormatUnknownType", chat, With("'response_format':{'type':'yaml'}"),
            "response_format.type");
        yield return Case("ResponseFormatSchemaMissing", chat, With("'response_format':{'type':'json_schema'}"),
            "response_format.json_schema");
        yield return Case("ResponseFormatSchemaUnsupported", chat,
            With("'response_format':{'type':'json_schema','json_schema':{'name':'x'," +
                 "'schema':{'type':'object','unevaluatedProperties':{'type':'string'}}}}"),
            "response_format.json_schema.schema", "unsupported_keyword");
        yield return Case("LogprobsString", chat, With("'logprobs':'yes'"), "logprobs");
        yield return Case("TopLogprobs21", chat, With("'logprobs':true,'top_logprobs':21"), "top_logprobs");
        yield return Case("TopLogprobsWithoutLogprobs", chat, With("'top_logprobs':3"), "top_logprobs");
        yield return Case("CompletionsLogprobs6", text, """{"prompt":"hi","logprobs":6}""", "logprobs");
        yield return Case("CompletionsMissingPrompt", text, """{"max_tokens":3}""", "prompt");
        yield return Case("CompletionsPromptNumber", text, """{"prompt":42}""", "prompt");
        yield return Case("CompletionsJsonArray", text, """["hello"]""");
        yield return Case("CompletionsTemperature5", text, """{"prompt":"hi","temperature":5}""", "temperature");
        yield return Case("CompletionsMaxTokensAbsurd", text, """{"prompt":"hi","max_tokens":99999999}""",
            "max_tokens");
        string longPrompt = string.Concat(Enumerable.Repeat("lighthouse keeper ", 2500));
        yield return Case("ChatPromptOverContext", chat,
            $$"""{"messages":[{"role":"user","content":"{{longPrompt}}"}]}""", null, "context_length_exceeded");
        yield return Case("CompletionsPromptOverContext", text, $$"""{"prompt":"{{longPrompt}}"}""", null,
            "context_length_exceeded");
        yield return Case("PromptPlusMaxTokensOverContext", text, """{"prompt":"hi","max_tokens":2047}""", "max_tokens",
            "context_length_exceeded");
    }

    [TestCaseSource(nameof(BadRequests))]
    public async Task MalformedRequest_Gets400WithOpenAiErrorBody(string path, string body, string? param, string? code)
    {
        using var response = await Http.PostAsync(path, Json(body));
        await AssertErrorAsync(response, HttpStatusCode.BadRequest, "invalid_request_error", param, code);
    }

    [Test]
    public async Task BodyOverTheSizeLimit_Gets413()
    {
        string big = new('a', 300 * 1024);
        using var response = await Http.PostAsync("/v1/chat/completions",
            Json($$"""{"messages":[{"role":"user","content":"{{big}}"}]}"""));
        await AssertErrorAsync(response, HttpStatusCode.RequestEntityTooLarge, "invalid_request_error", null,
            "request_too_large");
    }

    [Test]
    public async Task ChunkedBodyOverTheSizeLimit_Gets413()
    {
        var content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(new string(' ', 300 * 1024) + "{}")));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = content };
        request.Headers.TransferEncodingChunked = true;
        using var response = await Http.SendAsync(request);
        await AssertErrorAsync(response, HttpStatusCode.RequestEntityTooLarge, "invalid_request_error", null,
            "request_too_large");
    }

    [Test]
    public async Task UnknownUrl_Gets404WithErrorBody()
    {
        using var response = await Http.GetAsync("/v1/nothing-here");
        await AssertErrorAsync(response, HttpStatusCode.NotFound, "invalid_request_error", null, "unknown_url");
    }

    [Test]
    public async Task ServerStaysHealthyAfterBadRequests()
    {
        using (await Http.PostAsync("/v1/chat/completions", Json("{oops"))) { }
        using var response = await Http.PostAsync("/v1/chat/completions",
            Json("""{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},{"role":"user","content":"more"}],"max_tokens":2}"""));
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
    }

    internal static async Task AssertErrorAsync(HttpResponseMessage response, HttpStatusCode status, string type,
        string? param, string? code)
    {
        string text = await response.Content.ReadAsStringAsync();
        Assert.That(response.StatusCode, Is.EqualTo(status), text);
        Assert.That(response.Content.Headers.ContentType?.MediaType, Is.EqualTo("application/json"));
        using var doc = JsonDocument.Parse(text);
        var error = doc.RootElement.GetProperty("error");
        Assert.That(error.GetProperty("message").GetString(), Is.Not.Empty);
        Assert.That(error.GetProperty("message").GetString(), Does.Not.Contain("   at "), "no stack traces");
        Assert.That(error.GetProperty("type").GetString(), Is.EqualTo(type));
        Assert.That(error.TryGetProperty("param", out var p), Is.True);
        Assert.That(error.TryGetProperty("code", out var c), Is.True);
        if (param is not null) Assert.That(p.GetString(), Is.EqualTo(param), text);
        if (code is not null) Assert.That(c.GetString(), Is.EqualTo(code), text);
    }
}
