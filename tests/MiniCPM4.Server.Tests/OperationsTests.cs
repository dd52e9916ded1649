using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;

namespace MiniCPM4.Server.Tests;

/// <summary>API keys, /metrics, /tokenize and /detokenize, model names and option validation.</summary>
[TestFixture]
public sealed class OperationsTests
{
    private const string Chat = """{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}""";

    [Test]
    public async Task ApiKey_IsRequiredEverywhereButHealthAndThePage()
    {
        await using var server = await TestServer.StartAsync(o => o.ApiKeys = ["k-one", "k-two"]);
        async Task<HttpResponseMessage> Post(string? key)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = HttpProtocolTests.Json(Chat),
            };
            if (key is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            return await server.Http.SendAsync(request);
        }
        using (var missing = await Post(null))
            await HttpProtocolTests.AssertErrorAsync(missing, HttpStatusCode.Unauthorized, "invalid_request_error",
                null, "invalid_api_key");
        using (var wrong = await Post("k-three"))
            await HttpProtocolTests.AssertErrorAsync(wrong, HttpStatusCode.Unauthorized, "invalid_request_error",
                null, "invalid_api_key");
        using (var right = await Post("k-two")) Assert.That(right.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        using (var models = await server.Http.GetAsync("/v1/models"))
            Assert.That(models.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
        using (var health = await server.Http.GetAsync("/health"))
            Assert.That(health.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        using (var page = await server.Http.GetAsync("/"))
            Assert.That(page.StatusCode, Is.EqualTo(HttpStatusCode.OK));
    }

    [Test]
    public async Task UnknownModel_Gets404ModelNotFound_AnAliasIsServed()
    {
        await using var server = await TestServer.StartAsync(o => o.ModelAliases = ["gpt-4o-mini"]);
        using var unknown = await server.Http.PostAsync("/v1/chat/completions", HttpProtocolTests.Json(
            """{"model":"nope","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"""));
        await HttpProtocolTests.AssertErrorAsync(unknown, HttpStatusCode.NotFound, "invalid_request_error", "model",
            "model_not_found");
        using var alias = await server.Http.PostAsync("/v1/chat/completions", HttpProtocolTests.Json(
            """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"""));
        var root = JsonDocument.Parse(await alias.Content.ReadAsStringAsync()).RootElement;
        Assert.That(root.GetProperty("model").GetString(), Is.EqualTo("gpt-4o-mini"));
    }

    [Test]
    public async Task Metrics_ParseAsPrometheusText_AndCountTheWork()
    {
        await using var server = await TestServer.StartAsync();
        using (var ok = await server.Http.PostAsync("/v1/chat/completions", HttpProtocolTests.Json(Chat)))
            Assert.That(ok.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        using (await server.Http.PostAsync("/v1/chat/completions", HttpProtocolTests.Json("{}"))) { }
        using var response = await server.Http.GetAsync("/metrics");
        Assert.That(response.Content.Headers.ContentType?.MediaType, Is.EqualTo("text/plain"));
        string text = await response.Content.ReadAsStringAsync();

        // Parsed by the Prometheus project's own Python client (python3-prometheus-client, installed by .ci/run).
        var samples = ParseWithPrometheusClient(text);
        double Sample(string name, string labels = "") =>
            samples.TryGetValue(name + labels, out var v) ? v : throw new AssertionException($"no {name}{labels}");
        Assert.That(Sample("minicpm4_requests_total", "{endpoint=/v1/chat/completions,status=200}"), Is.EqualTo(1));
        Assert.That(Sample("minicpm4_requests_total", "{endpoint=/v1/chat/completions,status=400}"), Is.EqualTo(1));
        Assert.That(Sample("minicpm4_completion_tokens_total"), Is.InRange(1, 4));
        Assert.That(Sample("minicpm4_prompt_tokens_total"), Is.GreaterThan(0));
        Assert.That(Sample("minicpm4_time_to_first_token_seconds_count"), Is.EqualTo(1));
        Assert.That(Sample("minicpm4_time_per_output_token_seconds_count"), Is.LessThanOrEqualTo(1));
        Assert.That(Sample("minicpm4_queue_depth"), Is.Zero);
        Assert.That(Sample("minicpm4_running_generations"), Is.Zero);
        Assert.That(Sample("minicpm4_kv_cache_used_tokens"), Is.Zero);
        Assert.That(Sample("minicpm4_kv_cache_capacity_tokens"), Is.GreaterThan(0));
        Assert.That(Sample("minicpm4_speculative_rounds_total"), Is.Zero, "the tiny test model has no draft");
    }

    // name{label=value,...} -> value, labels sorted by name.
    private static Dictionary<string, double> ParseWithPrometheusClient(string text)
    {
        const string script = """
            import sys
            from prometheus_client.parser import text_string_to_metric_families
            for family in text_string_to_metric_families(sys.stdin.read()):
                for s in family.samples:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                    print(s.name + ("{" + labels + "}" if labels else "") + "\t" + repr(s.value))
            """;
        // Debian's Python, where the Debian package installs the module (a python3 earlier on PATH may lack it).
        string python3 = File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
        var start = new ProcessStartInfo(python3, ["-c", script])
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var python = Process.Start(start)!;
        python.StandardInput.Write(text);
        python.StandardInput.Close();
        string output = python.StandardOutput.ReadToEnd();
        string error = python.StandardError.ReadToEnd();
        python.WaitForExit();
        Assert.That(python.ExitCode, Is.Zero, "the Prometheus parser rejected /metrics: " + error);
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t'))
            .ToDictionary(p => p[0], p => double.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture));
    }

    [Test]
    public async Task TokenizeAndDetokenize_RoundTrip()
    {
        await using var server = await TestServer.StartAsync();
        using var tokenized = await server.Http.PostAsJsonAsync("/tokenize",
            new { content = "Hello world", with_pieces = true });
        var root = JsonDocument.Parse(await tokenized.Content.ReadAsStringAsync()).RootElement;
        var ids = root.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();
        Assert.That(ids, Is.EqualTo(TestModel.Model.Tokenizer.Encode("Hello world")));
        Assert.That(root.GetProperty("pieces").GetArrayLength(), Is.EqualTo(ids.Length));
        using var detokenized = await server.Http.PostAsJsonAsync("/detokenize", new { tokens = ids });
        var text = JsonDocument.Parse(await detokenized.Content.ReadAsStringAsync()).RootElement;
        Assert.That(text.GetProperty("content").GetString(), Is.EqualTo("Hello world"));
        using var bad = await server.Http.PostAsJsonAsync("/detokenize", new { tokens = new[] { 1, -5 } });
        await HttpProtocolTests.AssertErrorAsync(bad, HttpStatusCode.BadRequest, "invalid_request_error", "tokens[1]",
            "invalid_value");
    }

    [TestCase(nameof(ServerOptions.MaxConcurrentRequests), "--max-concurrent")]
    [TestCase(nameof(ServerOptions.MaxQueue), "--max-queue")]
    [TestCase(nameof(ServerOptions.DefaultMaxTokens), "--max-tokens")]
    public void InvalidOptions_AreRefusedAtStart(string property, string option)
    {
        var options = new ServerOptions { Model = TestModel.Model };
        typeof(ServerOptions).GetProperty(property)!.SetValue(options, property == "MaxQueue" ? -1 : 0);
        var e = Assert.Throws<ArgumentException>(() => MiniCpmServer.Build(options));
        Assert.That(e!.Message, Does.Contain(option));
    }
}

/// <summary>A conversation named by X-Conversation-Id keeps its KV cache between requests.</summary>
[TestFixture]
public sealed class ConversationCacheTests
{
    [Test]
    public async Task TheNextTurnReusesTheConversationsKvCache()
    {
        await using var server = await TestServer.StartAsync(o => o.MaxConcurrentRequests = 2);
        async Task<JsonElement> Ask(string conversation, object[] messages)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = JsonContent.Create(new { messages, max_tokens = 6, temperature = 0 }),
            };
            request.Headers.Add(MiniCpmServer.ConversationHeader, conversation);
            using var response = await server.Http.SendAsync(request);
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
        }
        var first = await Ask("c-1", [new { role = "user", content = "Tell me about lighthouses, please." }]);
        // Another conversation in between, on the other slot's session or this one: c-1 keeps its own.
        await Ask("c-2", [new { role = "user", content = "Something else entirely." }]);
        string reply = first.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
        var second = await Ask("c-1",
        [
            new { role = "user", content = "Tell me about lighthouses, please." },
            new { role = "assistant", content = reply },
            new { role = "user", content = "And more?" },
        ]);
        int firstPrompt = first.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        int cached = second.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens")
            .GetInt32();
        Assert.That(cached, Is.GreaterThanOrEqualTo(firstPrompt - 1), "the first turn's prompt is reused");
    }
}

/// <summary>The log-probability scorer against the model's raw logits.</summary>
[TestFixture]
public sealed class LogprobScorerTests
{
    [TestCase(1)]
    [TestCase(4)]
    public void ScoresAreTheLogSoftmaxOfTheModelsLogits(int contextLength)
    {
        var model = TestModel.Model;
        int[] context = [.. Enumerable.Range(10, contextLength)];
        int[] generated = [40, 41, 42];
        using var scorer = new LogprobScorer(model, new SessionOptions(), 3);
        scorer.SetContext(context, CancellationToken.None);
        var scored = generated.Select(scorer.Next).ToList();

        using var reference = model.CreateSession(new SessionOptions());
        int vocab = model.Config.VocabSize;
        var logits = reference.PrefillWithLogits([.. context, .. generated[..^1]], allPositions: true);
        for (int i = 0; i < generated.Length; i++)
        {
            var row = logits.AsSpan((contextLength - 1 + i) * vocab, vocab);
            double max = double.NegativeInfinity;
            foreach (var v in row) max = Math.Max(max, v);
            double sum = 0;
            foreach (var v in row) sum += Math.Exp(v - max);
            double expected = row[generated[i]] - (max + Math.Log(sum));
            Assert.That(scored[i].Logprob, Is.EqualTo(expected).Within(1e-3), $"token {i}");
            Assert.That(scored[i].Top, Has.Length.EqualTo(3));
            Assert.That(scored[i].Top[0].Logprob, Is.GreaterThanOrEqualTo(scored[i].Logprob - 1e-9));
        }
    }
}
