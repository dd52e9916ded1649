using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using MiniCPM4.Server;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 loadtest`: the OpenAI-compatible server under concurrent clients, against the same requests
/// sent one at a time, in one run: throughput, and latency percentiles.</summary>
internal static class LoadTestCommand
{
    private static readonly Option<int> Clients = new("--clients")
    {
        Description = "Concurrent clients", DefaultValueFactory = _ => 8,
    };
    private static readonly Option<int> Requests = new("--requests")
    {
        Description = "Requests per client (the serial run sends all of them one by one)",
        DefaultValueFactory = _ => 10,
    };
    private static readonly Option<int> MaxTokens = new("--max-tokens")
    {
        Description = "Tokens each request may generate (greedy; usage.completion_tokens counts what it did)",
        DefaultValueFactory = _ => 64,
    };

    private static void Status(string what) => Console.Error.WriteLine($"loadtest: {what}...");

    public static Command Create()
    {
        var command = new Command("loadtest",
            "Measure the server: N concurrent clients against the same requests one at a time (in-process, loopback)");
        command.Options.Add(Clients);
        command.Options.Add(Requests);
        command.Options.Add(MaxTokens);
        command.Options.Add(Cli.Json);
        Cli.AddModelOptions(command);
        foreach (var option in new Option[] { Cli.SpecIter, Cli.SpecTopK, Cli.SpecTree, Cli.NoSpec })
            command.Options.Add(option);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => RunAsync(parse, ct)));
        return command;
    }

    private readonly record struct Phase(int Requests, int Tokens, double Seconds, double P50, double P95)
    {
        public double TokensPerSecond => Tokens / Seconds;
    }

    private static async Task RunAsync(ParseResult parse, CancellationToken ct)
    {
        int clients = parse.GetValue(Clients), requests = parse.GetValue(Requests);
        int maxTokens = parse.GetValue(MaxTokens);
        if (clients is < 1 or > 256) throw new UsageException($"--clients must be in [1, 256] (got {clients})");
        if (requests is < 1 or > 10000) throw new UsageException($"--requests must be in [1, 10000] (got {requests})");
        if (maxTokens is < 1 or > 4096)
            throw new UsageException($"--max-tokens must be in [1, 4096] (got {maxTokens})");
        using var model = await Cli.LoadModelAsync(parse, ct);
        var options = new ServerOptions
        {
            Model = model,
            Urls = "http://127.0.0.1:0",
            MaxConcurrentRequests = clients,
            MaxQueue = clients * requests,
            MinimumLogLevel = LogLevel.Warning,
            SessionOptions = Cli.SessionOptionsFrom(parse),
            Speculative = Cli.SpeculativeFrom(parse),
        };
        var app = MiniCpmServer.Build(options);
        await using (app.ConfigureAwait(false))
        {
            await app.StartAsync(ct);
            using var http = new HttpClient
            {
                BaseAddress = new Uri(MiniCpmServer.GetBaseAddress(app)), Timeout = TimeSpan.FromMinutes(10),
            };
            // Distinct prompts of different lengths; the same set in both runs.
            var bodies = Enumerable.Range(0, clients * requests).Select(i => Body(i, maxTokens)).ToArray();
            await SendAsync(http, bodies[0], ct);  // warm-up (first-use costs), not counted
            Status($"serial: {bodies.Length} requests one at a time");
            var serial = await RunPhaseAsync(http, bodies, 1, ct);
            Status($"concurrent: {clients} clients x {requests} requests");
            var concurrent = await RunPhaseAsync(http, bodies, clients, ct);
            await app.StopAsync(CancellationToken.None);
            Report(parse.GetValue(Cli.Json), model, clients, requests, maxTokens, serial, concurrent);
        }
    }

    private static string Body(int i, int maxTokens)
    {
        var words = new[] { "harbour", "lantern", "orchard", "meadow", "bridge", "compass", "thunder", "garden" };
        var prompt = new StringBuilder($"Story {i}:");
        for (int w = 0; w < 4 + i * 7 % 29; w++) prompt.Append(' ').Append(words[(i + w * 3) % words.Length]);
        return JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["prompt"] = prompt.ToString(), ["max_tokens"] = maxTokens, ["temperature"] = 0,
        });
    }

    // Sends the bodies with `clients` concurrent clients, each taking the next unsent body; returns the totals.
    private static async Task<Phase> RunPhaseAsync(HttpClient http, string[] bodies, int clients, CancellationToken ct)
    {
        var latencies = new double[bodies.Length];
        var tokens = new int[bodies.Length];
        int next = -1;
        long start = Stopwatch.GetTimestamp();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
        {
            for (int i; (i = Interlocked.Increment(ref next)) < bodies.Length;)
            {
                long t0 = Stopwatch.GetTimestamp();
                tokens[i] = await SendAsync(http, bodies[i], ct);
                latencies[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            }
        }));
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        Array.Sort(latencies);
        return new Phase(bodies.Length, tokens.Sum(), seconds, Percentile(latencies, 0.50),
            Percentile(latencies, 0.95));
    }

    private static double Percentile(double[] sorted, double p) =>
        sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

    // One completion; returns its completion_tokens.
    private static async Task<int> SendAsync(HttpClient http, string body, CancellationToken ct)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await http.PostAsync("/v1/completions", content, ct);
        string text = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode)
            throw new InvalidOperationException($"the server answered {(int)response.StatusCode}: {text}");
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
    }

    private static void Report(bool json, MiniCpmModel model, int clients, int requests, int maxTokens, Phase serial,
        Phase concurrent)
    {
        double speedup = concurrent.TokensPerSecond / serial.TokensPerSecond;
        if (json)
        {
            using var buffer = new MemoryStream();
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                w.WriteString("model", Path.GetFileName(Path.TrimEndingDirectorySeparator(model.Directory)));
                w.WriteNumber("clients", clients);
                w.WriteNumber("requests_per_client", requests);
                w.WriteNumber("max_tokens", maxTokens);
                foreach (var (name, phase) in new[] { ("serial", serial), ("concurrent", concurrent) })
                {
                    w.WriteStartObject(name);
                    w.WriteNumber("requests", phase.Requests);
                    w.WriteNumber("completion_tokens", phase.Tokens);
                    w.WriteNumber("seconds", Math.Round(phase.Seconds, 3));
                    w.WriteNumber("tokens_per_s", Math.Round(phase.TokensPerSecond, 2));
                    w.WriteNumber("latency_p50_s", Math.Round(phase.P50, 4));
                    w.WriteNumber("latency_p95_s", Math.Round(phase.P95, 4));
                    w.WriteEndObject();
                }
                w.WriteNumber("throughput_ratio", Math.Round(speedup, 3));
                w.WriteNumber("largest_batch", model.LargestBatch);
                w.WriteEndObject();
            }
            Console.Out.WriteLine(Encoding.UTF8.GetString(buffer.ToArray()));
            return;
        }
        var c = CultureInfo.InvariantCulture;
        foreach (var (name, phase) in new[] { ("serial", serial), ($"{clients} clients", concurrent) })
            Console.Out.WriteLine(string.Format(c,
                "{0,-11} {1} requests, {2} tokens in {3:F2} s: {4:F1} tokens/s, latency p50 {5:F3} s, p95 {6:F3} s",
                name, phase.Requests, phase.Tokens, phase.Seconds, phase.TokensPerSecond, phase.P50, phase.P95));
        Console.Out.WriteLine(string.Format(c, "throughput  {0:F2}x serial (largest batch {1})", speedup,
            model.LargestBatch));
    }
}
