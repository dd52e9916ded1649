using System.Globalization;
using System.CommandLine;
using MiniCPM4;
using MiniCPM4.Checkpoints;
using MiniCPM4.CompareLlamaCpp;
using MiniCPM4.Tokenization;

// compare-llamacpp: our engine against llama.cpp (LLamaSharp 0.30.0) on the same weights. See README.md.
var root = new RootCommand("Compare MiniCPM4.NET with llama.cpp (through LLamaSharp) on the same weights");
root.Subcommands.Add(Commands.Bench());
root.Subcommands.Add(Commands.Gguf());
root.Subcommands.Add(Commands.CrossCheckCommand());
var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    foreach (var error in parse.Errors) Console.Error.WriteLine($"compare-llamacpp: {error.Message}");
    return 2;
}
return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });

internal sealed class UsageException(string message) : Exception(message);

internal static class Commands
{
    private static readonly Option<string?> Model =
        new("--model", "-m") { Description = "A dense Hugging Face MiniCPM4 checkpoint directory" };
    private static readonly Option<string?> Preset =
        new("--preset") { Description =
        "Write a random checkpoint of this shape instead: tiny, minicpm4-0.5b or minicpm4-8b" };
    private static readonly Option<int> Threads =
        new("--threads", "-t") { Description = "Threads for both engines", DefaultValueFactory = _ => 2 };
    private static readonly Option<string?> WorkDir =
        new("--work-dir") { Description =
        "Where the checkpoint and GGUF files go (default: a temporary directory, deleted afterwards)" };
    private static readonly Option<bool> Reuse =
        new("--reuse") { Description =
        "Reuse the preset checkpoint and GGUF files already in --work-dir (GGUFs newer than the checkpoint)" };

    public static Command Bench()
    {
        var runs =
            new Option<int>("--runs") { Description = "Timed runs per engine and pair (alternating)",
            DefaultValueFactory = _ => 3 };
        var pairs =
            new Option<string>(
            "--pairs") { Description =
            "Comma-separated: bf16 (our bf16 vs BF16), int4 (our int4 vs Q4_0), q8 (our bf16 vs Q8_0)",
            DefaultValueFactory = _ => "bf16,int4,q8" };
        var promptTokens =
            new Option<int>("--prompt-tokens") { Description = "Prompt length in tokens", DefaultValueFactory = _ =>
            128 };
        var genTokens =
            new Option<int>("--gen-tokens") { Description = "Greedy tokens decoded after the prompt",
            DefaultValueFactory = _ => 64 };
        var precision =
            new Option<string?>(
            "--cpu-precision") { Description =
            "Our CPU arithmetic: fast (int4 on int8 activations, bf16 prefill on bf16 activations; the default) or " +
            "exact (fp32 activations); sets MCPM_CPU_PRECISION" };
        var isa =
            new Option<string?>(
            "--isa") { Description = "Our CPU kernel set; sets MCPM_CPU_ISA (default: the best this CPU runs)" };
        var json = new Option<bool>("--json") { Description = "Print the results as JSON instead of the table" };
        var command =
            new Command("bench",
            "Prefill and decode speed of both engines, side by side (the default preset is minicpm4-0.5b)");
        foreach (
            var o in new Option[] { Model, Preset, Threads, runs, pairs, promptTokens, genTokens, precision, isa,
            WorkDir, Reuse, json }) command.Options.Add(o);
        command.SetAction((p, ct) => Guard(() =>
        {
            // Before anything loads the engine: the native library reads these with getenv.
            if (p.GetValue(precision) is { } mode)
            {
                if (mode is not ("fast" or "exact")) throw new UsageException(
                    $"--cpu-precision '{mode}': expected fast or exact");
                NativeEnvironment.Set("MCPM_CPU_PRECISION", mode);
            }
            if (p.GetValue(isa) is { } isaName) NativeEnvironment.Set("MCPM_CPU_ISA", isaName);
            var settings =
                new BenchSettings(Positive(p.GetValue(Threads), "--threads"), Positive(p.GetValue(runs), "--runs"),
                Positive(p.GetValue(promptTokens), "--prompt-tokens"), Positive(p.GetValue(genTokens), "--gen-tokens"));
            var selected =
                p.GetValue(pairs)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(k => BenchPair.All.FirstOrDefault(x => x.Key == k)
                    ?? throw new UsageException($"--pairs: unknown pair '{k}' (bf16, int4, q8)"))
                .Distinct().ToList();
            if (selected.Count == 0) throw new UsageException("--pairs names no pair");
            bool asJson = p.GetValue(json);
            TextWriter log = asJson ? Console.Error : Console.Out;
            using var work = new WorkDirectory(p.GetValue(WorkDir));
            bool reuse = p.GetValue(Reuse);
            if (reuse && p.GetValue(WorkDir) is null) throw new UsageException("--reuse needs --work-dir");
            string checkpoint = CheckpointFrom(p, work, TensorDType.BF16, "minicpm4-0.5b", log, reuse);
            string loadBefore = MiniCPM4.CompareLlamaCpp.Bench.LoadAverage();

            var ggufs = new Dictionary<GgmlType, string>();
            string stem = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(checkpoint)));
            DateTime checkpointTime = File.GetLastWriteTimeUtc(Path.Combine(checkpoint, "config.json"));
            bool Reusable(string path) => reuse && File.Exists(path) && File.GetLastWriteTimeUtc(path) > checkpointTime;
            string bf16 = Path.Combine(work.Path, $"{stem}-BF16.gguf");
            if (Reusable(bf16))
            {
                log.WriteLine($"reusing {bf16}");
            }
            else
            {
                log.WriteLine($"writing {bf16}");
                CheckpointToGguf.Convert(checkpoint, bf16, GgmlType.BF16);
            }
            ggufs[GgmlType.BF16] = bf16;
            var types = new Dictionary<string, string> { ["BF16"] = GgufReader.Read(bf16).TypeSummary() };
            foreach (var q in selected.Select(s => s.LlamaType).Where(t => t != GgmlType.BF16).Distinct())
            {
                string path = Path.Combine(work.Path, $"{stem}-{q}.gguf");
                if (Reusable(path) && File.GetLastWriteTimeUtc(path) > File.GetLastWriteTimeUtc(bf16))
                {
                    log.WriteLine($"reusing {path}");
                }
                else
                {
                    log.WriteLine($"quantizing {path} with llama.cpp");
                    LlamaCppEngine.Quantize(bf16, path, q, settings.Threads);
                }
                ggufs[q] = path;
                types[q.ToString()] = GgufReader.Read(path).TypeSummary();
            }
            foreach (var (name, summary) in types) log.WriteLine($"GGUF {name,-5} tensors: {summary}");

            var tokenizer = MiniCpmTokenizer.Load(checkpoint);
            var (prompt, text) = MiniCPM4.CompareLlamaCpp.Bench.MakePrompt(tokenizer, settings.PromptTokens);
            string tokenizers =
                CrossCheck.CompareIds(tokenizer.Encode(text), LlamaCppEngine.TokenizeWithVocabulary(bf16, text));
            log.WriteLine($"tokenizers on the prompt text: {tokenizers}; both engines get our {prompt.Length} ids");
            string ourKernels = OurEngine.KernelInfo(), llamaKernels = LlamaCppEngine.SystemInfo();

            var results = MiniCPM4.CompareLlamaCpp.Bench.Run(checkpoint, ggufs, selected, settings, prompt, log);
            string loadAfter = MiniCPM4.CompareLlamaCpp.Bench.LoadAverage();
            var context = new Dictionary<string, object?>
            {
                ["date_utc"] = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture),
                ["cpu"] = MiniCPM4.CompareLlamaCpp.Bench.CpuModel(),
                ["logical_cpus"] = Environment.ProcessorCount,
                ["checkpoint"] = p.GetValue(Preset) ?? p.GetValue(Model) ?? "minicpm4-0.5b",
                ["threads"] = settings.Threads, ["runs"] = settings.Runs,
                ["prompt_tokens"] = settings.PromptTokens, ["gen_tokens"] = settings.GenTokens,
                ["load_average_before"] = loadBefore, ["load_average_after"] = loadAfter,
                ["our_kernels"] = ourKernels, ["llama_cpp_system_info"] = llamaKernels,
                ["gguf_tensor_types"] = types, ["tokenizers"] = tokenizers,
            };
            if (asJson)
            {
                Console.WriteLine(MiniCPM4.CompareLlamaCpp.Bench.Json(results, context));
                return;
            }
            Console.WriteLine();
            Console.WriteLine(
                $"{context["date_utc"]}, {context["cpu"]} ({Environment.ProcessorCount} logical CPUs), " +
                $"{settings.Threads} threads, " +
                              $"{context["checkpoint"]}, {settings.PromptTokens}-token prompt, {settings.GenTokens} " +
                                  $"greedy tokens, median of {settings.Runs} alternating runs");
            Console.WriteLine($"load average before: {loadBefore}; after: {loadAfter}");
            Console.WriteLine($"our kernels:       {ourKernels}");
            Console.WriteLine($"llama.cpp kernels: {llamaKernels}");
            foreach (var r in results)
                Console.WriteLine(
                    $"greedy tokens agreeing ({r.Pair.Key}): {r.GreedyAgreement} of {settings.GenTokens}");
            Console.WriteLine();
            Console.Write(MiniCPM4.CompareLlamaCpp.Bench.MarkdownTable(results));
        }));
        return command;
    }

    public static Command Gguf()
    {
        var output = new Option<string>("--out", "-o") { Description = "The GGUF file to write", Required = true };
        var type =
            new Option<string>(
            "--type") { Description =
            "f32, f16, bf16 (written directly), q4_0 or q8_0 (llama.cpp's quantizer, token_embd kept BF16)",
            DefaultValueFactory = _ => "bf16" };
        var command = new Command("gguf", "Write a GGUF (llama.cpp architecture minicpm) of a checkpoint");
        foreach (var o in new Option[] { Model, output, type, Threads }) command.Options.Add(o);
        command.SetAction((p, ct) => Guard(() =>
        {
            string model = p.GetValue(Model) ?? throw new UsageException("--model is required");
            string path = p.GetValue(output)!;
            var ggmlType = p.GetValue(type)!.ToLowerInvariant() switch
            {
                "f32" => GgmlType.F32, "f16" => GgmlType.F16, "bf16" => GgmlType.BF16, "q4_0" => GgmlType.Q4_0,
                    "q8_0" => GgmlType.Q8_0,
                var other => throw new UsageException($"--type '{other}': expected f32, f16, bf16, q4_0 or q8_0"),
            };
            if (ggmlType is GgmlType.Q4_0 or GgmlType.Q8_0)
            {
                string bf16 = path + ".bf16.tmp";
                try
                {
                    CheckpointToGguf.Convert(model, bf16, GgmlType.BF16);
                    LlamaCppEngine.Quantize(bf16, path, ggmlType, Positive(p.GetValue(Threads), "--threads"));
                }
                finally
                {
                    File.Delete(bf16);
                }
            }
            else
            {
                CheckpointToGguf.Convert(model, path, ggmlType);
            }
            Console.WriteLine(
                $"{path}: {new FileInfo(path).Length / 1e6:F1} MB; tensors: {GgufReader.Read(path).TypeSummary()}");
        }));
        return command;
    }

    public static Command CrossCheckCommand()
    {
        var tolerance =
            new Option<double>(
            "--tolerance") { Description = "Largest accepted |logit difference| (exit code 1 above it)",
            DefaultValueFactory = _ => LogitTolerance.Default };
        var steps =
            new Option<int>("--decode-steps") { Description = "Single-token steps compared after the prompt",
            DefaultValueFactory = _ => 4 };
        var command =
            new Command("cross-check",
            "Compare llama.cpp's logits (F32 GGUF, f32 KV cache, no flash attention) with ours on an fp32 checkpoint " +
            "(default: the tiny preset)");
        foreach (var o in new Option[] { Model, Preset, Threads, tolerance, steps, WorkDir }) command.Options.Add(o);
        command.SetAction((p, ct) => Guard(() =>
        {
            using var work = new WorkDirectory(p.GetValue(WorkDir));
            string checkpoint = CheckpointFrom(p, work, TensorDType.F32, "tiny", Console.Out);
            string gguf = Path.Combine(work.Path, "model-F32.gguf");
            CheckpointToGguf.Convert(checkpoint, gguf, GgmlType.F32);
            var result =
                CrossCheck.Run(checkpoint, gguf, CrossCheck.DefaultText, Math.Max(0, p.GetValue(steps)),
                Positive(p.GetValue(Threads), "--threads"));
            Console.WriteLine($"tokenizers: {result.TokenizerReport}");
            Console.WriteLine(
                $"positions compared: {result.Positions}; max |logit| {result.MaxAbsLogit:G4}; max |ours - " +
                $"llama.cpp| {result.MaxAbsDifference:E2} " +
                              $"(tolerance {p.GetValue(tolerance):E1})");
            Console.WriteLine("per position: "
                + string.Join(' ', result.PerPosition.Select(d => d.ToString("E1", CultureInfo.InvariantCulture))));
            if (result.MaxAbsDifference > p.GetValue(tolerance) || !result.TokenizersAgree)
                throw new CheckFailedException(result.TokenizersAgree ? "logits differ beyond the tolerance"
                    : "the tokenizers disagree");
        }));
        return command;
    }

    private static string CheckpointFrom(ParseResult p, WorkDirectory work, TensorDType dtype, string defaultPreset,
        TextWriter log, bool reuse = false)
    {
        string? model = p.GetValue(Model), preset = p.GetValue(Preset);
        if (model is not null && preset is not null) throw new UsageException("give --model or --preset, not both");
        if (model is not null) return model;
        var shape = (preset ?? defaultPreset) switch
        {
            "tiny" => ModelPreset.Tiny,
            "minicpm4-0.5b" => ModelPreset.MiniCpm4_0_5B,
            "minicpm4-8b" => ModelPreset.MiniCpm4_8B,
            var other => throw new UsageException($"--preset '{other}': expected tiny, minicpm4-0.5b or minicpm4-8b"),
        };
        string dir = Path.Combine(work.Path, $"checkpoint-{shape}-{dtype}");
        if (reuse && File.Exists(Path.Combine(dir, "config.json")))
        {
            log.WriteLine($"reusing {dir}");
            return dir;
        }
        log.WriteLine($"writing a random {preset ?? defaultPreset} checkpoint ({dtype}) to {dir}");
        CheckpointWriter.CreateRandomModel(dir, shape, 0, dtype);
        return dir;
    }

    private static int Positive(int value, string name) => value >= 1 ? value
        : throw new UsageException($"{name} must be >= 1");

    private static async Task<int> Guard(Action body)
    {
        try
        {
            await Task.Run(body);
            return 0;
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"compare-llamacpp: {e.Message}");
            return 2;
        }
        catch (CheckFailedException e)
        {
            Console.Error.WriteLine($"compare-llamacpp: FAILED: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException
                                       or InvalidOperationException or CheckpointException
                                       or MiniCpmException or LLama.Exceptions.RuntimeError)
        {
            Console.Error.WriteLine($"compare-llamacpp: {e.GetType().Name}: {e.Message}");
            return 1;
        }
    }
}

internal sealed class CheckFailedException(string message) : Exception(message);

/// <summary>A working directory: the one given (kept), or a temporary one deleted on dispose.</summary>
internal sealed class WorkDirectory : IDisposable
{
    private readonly bool _temporary;

    public WorkDirectory(string? path)
    {
        _temporary = path is null;
        Path = System.IO.Path.GetFullPath(path
            ?? System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"compare-llamacpp-{Guid.NewGuid():N}"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public void Dispose()
    {
        if (_temporary && Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }
}
