using System.Diagnostics;
using System.CommandLine;
using System.Text;
using System.Text.Json;
using MiniCPM4.Checkpoints;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 bench`: prefill and decode throughput of a checkpoint, or of a preset written
/// to a temporary directory.</summary>
internal static class BenchCommand
{
    private static readonly Option<string?> ModelDir =
        new("--model", "-m") { Description = "Checkpoint directory (default: the demo model)" };
    private static readonly Option<int> PromptTokens =
        new("--prompt-tokens") { Description = "Prompt length", DefaultValueFactory = _ => 128 };
    private static readonly Option<int> GenTokens =
        new("--gen-tokens") { Description = "Tokens to generate", DefaultValueFactory = _ => 64 };
    private static readonly Option<int> SessionsOption = new("--sessions")
    {
        Description = "Also decode this many sessions concurrently (continuous batching) and report their aggregate " +
                      "tokens/s next to one session's alone",
        DefaultValueFactory = _ => 1,
    };
    private static readonly Option<string?> PresetOption =
        new("--preset") { Description = "tiny, minicpm4-0.5b or minicpm4-8b (random weights)" };

    // Progress on stderr, so stdout holds only the results (and --json stays parseable).
    private static void Status(string what) => Console.Error.WriteLine($"bench: {what}...");

    public static Command Create()
    {
        var command = new Command("bench", "Measure prefill and decode speed");
        command.Options.Add(ModelDir);
        command.Options.Add(PresetOption);
        command.Options.Add(PromptTokens);
        command.Options.Add(GenTokens);
        command.Options.Add(SessionsOption);
        command.Options.Add(Cli.Device);
        command.Options.Add(Cli.Threads);
        command.Options.Add(Cli.Dense);
        command.Options.Add(Cli.Sparse);
        command.Options.Add(Cli.Quantize);
        command.Options.Add(Cli.ClipSearch);
        command.Options.Add(Cli.Json);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => RunAsync(parse, ct)));
        return command;
    }

    private static async Task RunAsync(ParseResult parse, CancellationToken ct)
    {
        var dir = parse.GetValue(ModelDir);
        var preset = parse.GetValue(PresetOption);
        if (dir is not null && preset is not null) throw new UsageException("give at most one of --model or --preset");
        if (dir is null && preset is null)
            dir = Cli.DemoModelDirectory() ?? throw new UsageException(
                "no model: pass --model DIR or --preset NAME (the demo model, models/demo, was not found)");
        int promptTokens = parse.GetValue(PromptTokens), genTokens = parse.GetValue(GenTokens);
        if (promptTokens < 1 || genTokens < 1) throw new UsageException(
            "--prompt-tokens and --gen-tokens must be >= 1");
        int sessions = parse.GetValue(SessionsOption);
        if (sessions < 1 || sessions > 256) throw new UsageException("--sessions must be in [1, 256]");
        var quantization = Cli.QuantizationFrom(parse);
        string? temp = null;
        try
        {
            if (preset is not null)
            {
                var p = CreateModelCommand.ParsePreset(preset);
                temp = Path.Combine(Path.GetTempPath(), $"minicpm4-bench-{Guid.NewGuid():N}");
                Status($"writing a random {preset} checkpoint to {temp}");
                await Task.Run(() => CheckpointWriter.CreateRandomModel(temp, p, 0, TensorDType.BF16), ct);
                dir = temp;
            }
            var (device, index) = Cli.ParseDevice(parse.GetValue(Cli.Device) ?? "auto");
            Status($"loading {dir}");
            using var model = await MiniCpmModel.LoadAsync(dir!, new MiniCpmLoadOptions
            {
                Device = device, DeviceIndex = index, Threads = parse.GetValue(Cli.Threads),
                    SparseAttention = parse.GetValue(Cli.Dense) ? false : null,
                    SparseOverrides = Cli.SparseOverridesFrom(parse),
                Quantization = quantization, QuantizationClipSearch = parse.GetValue(Cli.ClipSearch),
            }, null, ct);
            using var session =
                model.CreateSession(
                new SessionOptions { ContextLength =
                Math.Min(model.Config.MaxPositionEmbeddings, promptTokens + genTokens + 1) });
            var rng = new Random(1234);
            var prompt = new int[promptTokens];
            for (int i = 0; i < prompt.Length; i++) prompt[i] = rng.Next(model.Config.VocabSize);
            Status($"prefill: {promptTokens} tokens");
            await Task.Run(() => session.Prefill(prompt, ct), ct);
            Status($"decode: {genTokens} tokens");
            var options = new GenerationOptions { MaxTokens = genTokens, StopTokenIds = [], Seed = 0 };
            long decodeStart = Stopwatch.GetTimestamp();
            int generated = 0;
            await foreach (var t in session.GenerateAsync(options, ct)) if (t.Id >= 0) generated++;
            double aloneRate = generated / Stopwatch.GetElapsedTime(decodeStart).TotalSeconds;
            var s = session.Statistics;
            BatchedRun? batched = sessions > 1
                ? await RunBatchedAsync(model, sessions, promptTokens, genTokens, options, ct)
                : null;
            if (parse.GetValue(Cli.Json))
            {
                using var buffer = new MemoryStream();
                using (var w = new Utf8JsonWriter(buffer))
                {
                    w.WriteStartObject();
                    w.WriteString("model", Path.GetFileName(Path.TrimEndingDirectorySeparator(dir!)));
                    w.WriteNumber("parameters", model.ParameterCount);
                    w.WriteNumber("weight_bytes", model.WeightBytes);
                    w.WriteString("quantization", model.Quantization == WeightQuantization.Int4 ? "int4" : "none");
                    w.WriteNumber("prompt_tokens", s.PrefillTokens);
                    w.WriteNumber("generated_tokens", generated);
                    w.WriteNumber("prefill_tokens_per_s", Math.Round(s.PrefillTokensPerSecond, 3));
                    w.WriteNumber("decode_tokens_per_s", Math.Round(s.DecodeTokensPerSecond, 3));
                    w.WriteNumber("decode_gb_per_s", Math.Round(s.DecodeTokensPerSecond * model.WeightBytes / 1e9, 3));
                    if (batched is { } b)
                    {
                        w.WriteNumber("sessions", sessions);
                        w.WriteNumber("single_session_decode_tokens_per_s", Math.Round(aloneRate, 3));
                        w.WriteNumber("aggregate_decode_tokens_per_s", Math.Round(b.AggregateRate, 3));
                        w.WriteNumber("batch_speedup", Math.Round(b.AggregateRate / aloneRate, 3));
                        w.WriteNumber("batched_generated_tokens", b.Generated);
                        w.WriteNumber("largest_batch", b.LargestBatch);
                    }
                    w.WriteEndObject();
                }
                Console.Out.WriteLine(Encoding.UTF8.GetString(buffer.ToArray()));
            }
            else
            {
                Console.Out.WriteLine(
                    $"model    {model.ParameterCount / 1e6:F1} M parameters, {InfoCommand.Bytes(model.WeightBytes)} " +
                    $"of weights" +
                                      (model.Int4LinearCount > 0 ? $" ({model.Int4LinearCount} int4 linear layers)"
                                          : ""));
                Console.Out.WriteLine($"prefill  {s.PrefillTokens} tokens at {s.PrefillTokensPerSecond:F2} tokens/s");
                Console.Out.WriteLine(
                    $"decode   {generated} tokens at {s.DecodeTokensPerSecond:F2} tokens/s " +
                    $"({s.DecodeTokensPerSecond * model.WeightBytes / 1e9:F2} GB/s of weights)");
                if (batched is { } b)
                    Console.Out.WriteLine($"batched  {sessions} sessions: {b.AggregateRate:F2} tokens/s in total, " +
                                          $"{b.AggregateRate / aloneRate:F2}x one session alone " +
                                          $"({aloneRate:F2} tokens/s, wall time; largest batch {b.LargestBatch})");
            }
        }
        finally
        {
            if (temp is not null && Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
    }

    private readonly record struct BatchedRun(double AggregateRate, int Generated, int LargestBatch);

    // `count` sessions with their own random prompts: all prompts in (through the scheduler, concurrently), then
    // all decode at once; the aggregate rate is their tokens over the wall time of that decode phase.
    private static async Task<BatchedRun> RunBatchedAsync(MiniCpmModel model, int count, int promptTokens,
        int genTokens, GenerationOptions options, CancellationToken ct)
    {
        Status($"batched: {count} sessions, {promptTokens} prompt tokens each");
        var sessions = new List<MiniCpmSession>();
        try
        {
            var rng = new Random(99);
            var prefills = new List<Task>();
            for (int i = 0; i < count; i++)
            {
                var session = model.CreateSession(new SessionOptions
                {
                    ContextLength = Math.Min(model.Config.MaxPositionEmbeddings, promptTokens + genTokens + 1),
                });
                sessions.Add(session);
                var prompt = new int[promptTokens];
                for (int j = 0; j < prompt.Length; j++) prompt[j] = rng.Next(model.Config.VocabSize);
                prefills.Add(session.SetPromptAsync(prompt, ct));
            }
            await Task.WhenAll(prefills);
            Status($"batched: {count} sessions decode {genTokens} tokens each");
            long start = Stopwatch.GetTimestamp();
            var decodes = sessions.Select(async session =>
            {
                int n = 0;
                await foreach (var t in session.GenerateAsync(options, ct)) if (t.Id >= 0) n++;
                return n;
            }).ToList();
            int generated = (await Task.WhenAll(decodes)).Sum();
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            return new BatchedRun(generated / seconds, generated, model.LargestBatch);
        }
        finally
        {
            foreach (var session in sessions) session.Dispose();
        }
    }
}
