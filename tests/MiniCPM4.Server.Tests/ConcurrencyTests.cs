using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.DependencyInjection;

namespace MiniCPM4.Server.Tests;

/// <summary>Queue limits, client disconnects and shutdown.</summary>
[TestFixture]
public sealed class ConcurrencyTests
{
    private const string LongStream =
        """{"messages":[{"role":"user","content":"Write a very long essay."}],"max_tokens":1900,"temperature":1,"seed":5,"stream":true}""";

    private static async Task<(HttpResponseMessage Response, StreamReader Reader)> StartStreamAsync(HttpClient http)
    {
        var request =
            new HttpRequestMessage(HttpMethod.Post,
            "/v1/chat/completions") { Content = HttpProtocolTests.Json(LongStream) };
        var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        string? first = await reader.ReadLineAsync();
        Assert.That(first, Does.StartWith("data: {"));
        return (response, reader);
    }

    private static async Task WaitForAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed > timeout) Assert.Fail($"timed out after {timeout.TotalSeconds} s waiting for {what}");
            await Task.Delay(20);
        }
    }

    [Test]
    public async Task ConcurrentRequestsShareForwardPassesAndGetTheirSerialAnswers()
    {
        // Eight clients at once against the same prompts one at a time: the same completions, and the model's
        // scheduler put several requests into one pass.
        string Body(int i) =>
            $$"""{"prompt":"Request number {{i}} says","max_tokens":16,"temperature":0.7,"seed":{{i}}}""";
        async Task<string> Complete(HttpClient http, int i)
        {
            var response = await http.PostAsync("/v1/completions", HttpProtocolTests.Json(Body(i)));
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            using var doc = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            return doc.RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
        }
        await using var server = await TestServer.StartAsync(o => o.MaxConcurrentRequests = 8);
        var serial = new List<string>();
        for (int i = 0; i < 8; i++) serial.Add(await Complete(server.Http, i));
        int before = TestModel.Model.LargestBatch;
        var concurrent = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => Complete(server.Http, i)));
        Assert.That(concurrent, Is.EqualTo(serial));
        Assert.That(TestModel.Model.LargestBatch, Is.GreaterThan(1),
            $"no shared pass (largest batch before: {before})");
    }

    [Test]
    public async Task QueueFull_Gets429WithRetryAfter()
    {
        await using var server = await TestServer.StartAsync(o => { o.MaxConcurrentRequests = 1; o.MaxQueue = 0; });
        var (response, reader) = await StartStreamAsync(server.Http);
        using (response)
        using (reader)
        {
            Assert.That(server.Metrics.Running, Is.EqualTo(1));
            using var second = await server.Http.PostAsync("/v1/chat/completions",
                HttpProtocolTests.Json("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"""));
            Assert.That(second.Headers.RetryAfter, Is.Not.Null);
            await HttpProtocolTests.AssertErrorAsync(second, HttpStatusCode.TooManyRequests, "rate_limit_exceeded",
                null, null);
            Assert.That(server.Metrics.RequestsRejected, Is.EqualTo(1));

            // Cheap endpoints are not queued.
            using var health = await server.Http.GetAsync("/health");
            Assert.That(health.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        }

        // Once the stream is gone, the slot frees up.
        await WaitForAsync(() => server.Metrics.Running == 0, TimeSpan.FromSeconds(10), "the slot to be released");
        using var third = await server.Http.PostAsync("/v1/chat/completions",
            HttpProtocolTests.Json("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"""));
        Assert.That(third.StatusCode, Is.EqualTo(HttpStatusCode.OK));
    }

    [Test]
    public async Task QueuedRequest_WaitsForTheRunningOne()
    {
        await using var server = await TestServer.StartAsync(o => { o.MaxConcurrentRequests = 1; o.MaxQueue = 1; });
        var (response, reader) = await StartStreamAsync(server.Http);
        Task<HttpResponseMessage> queued;
        using (response)
        using (reader)
        {
            queued = server.Http.PostAsync("/v1/chat/completions",
                HttpProtocolTests.Json("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"""));
            await WaitForAsync(() => server.Metrics.Waiting == 1, TimeSpan.FromSeconds(10), "the request to queue");
            Assert.That(queued.IsCompleted, Is.False);
        }
        using var done = await queued.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.That(done.StatusCode, Is.EqualTo(HttpStatusCode.OK));
    }

    [Test]
    public async Task ClientDisconnect_CancelsTheGeneration_AndTheServerStaysResponsive()
    {
        await using var server = await TestServer.StartAsync();
        var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Metrics.GenerationCancelled += () => cancelled.TrySetResult();

        var (response, reader) = await StartStreamAsync(server.Http);
        string? second = await reader.ReadLineAsync(); // blank separator
        Assert.That(second, Is.Not.Null);
        var sw = Stopwatch.StartNew();
        reader.Dispose();
        response.Dispose();

        // A full 1900-token generation takes many seconds here; the cancellation is observed at once.
        await cancelled.Task.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.That(server.Metrics.GenerationsCancelled, Is.EqualTo(1));
        Assert.That(server.Metrics.GenerationsCompleted, Is.Zero);
        await WaitForAsync(() => server.Metrics.Running == 0, TimeSpan.FromSeconds(5), "the slot to be released");

        using var next = await server.Http.PostAsync("/v1/chat/completions",
            HttpProtocolTests.Json("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":3}"""));
        Assert.That(next.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
        Assert.That(server.Metrics.GenerationsCompleted, Is.EqualTo(1));
        Assert.That(server.Metrics.GenerationsFailed, Is.Zero);
    }

    [Test]
    public async Task ShuttingDown_RefusesNewWorkWith503()
    {
        await using var server = await TestServer.StartAsync();
        server.App.Services.GetRequiredService<ServerState>().BeginShutdown();
        using var response = await server.Http.PostAsync("/v1/chat/completions",
            HttpProtocolTests.Json("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"""));
        await HttpProtocolTests.AssertErrorAsync(response, HttpStatusCode.ServiceUnavailable, "server_error", null,
            "server_shutting_down");
    }

    [Test]
    public async Task Stopping_AfterTheGracePeriod_EndsTheStreamWithAnErrorEventAndDone()
    {
        var server = await TestServer.StartAsync(o => o.ShutdownTimeout = TimeSpan.Zero);
        var http = new HttpClient { BaseAddress = new Uri(server.BaseAddress) };
        var (response, reader) = await StartStreamAsync(http);
        var sw = Stopwatch.StartNew();
        var stop = server.App.StopAsync();
        using (response)
        using (reader)
        {
            var rest = await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(10));
            var events = rest.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.That(events[^1], Is.EqualTo("data: [DONE]"));
            Assert.That(events[^2], Does.Contain("\"error\"").And.Contain("server_shutting_down"));
        }
        await stop.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
        Assert.That(server.Metrics.GenerationsCancelled, Is.EqualTo(1));
        http.Dispose();
        await server.DisposeAsync();
    }

    [Test]
    public async Task Stopping_LetsRunningGenerationsFinish_AndRefusesNewOnes()
    {
        var server = await TestServer.StartAsync(o => o.ShutdownTimeout = TimeSpan.FromSeconds(60));
        var http = new HttpClient { BaseAddress = new Uri(server.BaseAddress) };
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = HttpProtocolTests.Json(LongStream.Replace("1900", "300", StringComparison.Ordinal)),
        };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        Assert.That(await reader.ReadLineAsync(), Does.StartWith("data: {"));
        var stop = server.App.StopAsync();
        await WaitForAsync(() => server.App.Services.GetRequiredService<ServerState>().IsStopping,
            TimeSpan.FromSeconds(5), "shutdown to begin");
        var rest = await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.That(rest, Does.Contain("\"finish_reason\":\"length\"").Or.Contain("\"finish_reason\":\"stop\""));
        Assert.That(rest, Does.EndWith("data: [DONE]\n\n").And.Not.Contain("\"error\""));
        await stop.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(server.Metrics.GenerationsCompleted, Is.EqualTo(1));
        http.Dispose();
        await server.DisposeAsync();
    }
}
