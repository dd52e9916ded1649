using System.CommandLine;
using MiniCPM4.Checkpoints;

namespace MiniCPM4.Cli;

/// <summary>An error in how the command was called (exit code 2).</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>The `minicpm4` command line: commands, shared options and the exit-code contract
/// (0 success, 2 usage error, 1 any other error with a one-line message on stderr).</summary>
internal static class Cli
{
    internal static readonly Option<string?> Model =
        new("--model",
        "-m") { Description =
        "Checkpoint directory (Hugging Face MiniCPM4 format); default: $MINICPM4_MODEL, else the bundled demo model" };
    internal static readonly Option<string> Device =
        new("--device") { Description = "cpu, cuda, cuda:N or auto", DefaultValueFactory = _ => "auto" };
    internal static readonly Option<int> Threads = new("--threads") { Description = "CPU threads (0 = all cores)" };
    internal static readonly Option<int> Context =
        new("--context") { Description = "KV cache capacity in tokens (0 = min(max positions, 4096))" };
    internal static readonly Option<string?> KvMemory =
        new("--kv-memory") { Description =
        "Size the KV cache from a memory limit: a size (8GiB, 512MB) or a share of the free memory (90%); --context " +
        "then caps it" };
    internal static readonly Option<string?> Sparse = new("--sparse")
    {
        Description = "Change InfLLM v2 settings, e.g. topk=16,dense_len=4096 (keys: kernel_size, kernel_stride, " +
                      "init_blocks, block_size, window_size, topk, dense_len; lengths in tokens). Turns InfLLM v2 on " +
                      "for a checkpoint without sparse_config",
    };
    internal static readonly Option<bool> NoCudaGraphs =
        new("--no-cuda-graphs") { Description =
        "On CUDA, launch every kernel of a decode step or speculative verification instead of replaying recorded " +
        "CUDA graphs (same output)" };
    internal static readonly Option<bool> Dense =
        new("--dense") { Description = "Dense attention even when the checkpoint has a sparse_config (InfLLM v2 off)" };
    internal static readonly Option<bool> Verbose =
        new("--verbose") { Description = "Print stack traces and loader details", Recursive = true };
    internal static readonly Option<bool> Json =
        new("--json") { Description = "Print one JSON object instead of text" };
    internal static readonly Option<int> MaxTokens =
        new("--max-tokens") { Description = "Tokens to generate at most", DefaultValueFactory = _ => 256 };
    internal static readonly Option<float?> Temperature =
        new("--temperature") { Description =
        "Sampling temperature; 0 is greedy (default: the checkpoint's generation_config, else 0)" };
    internal static readonly Option<int?> TopK = new("--top-k") { Description = "Keep the k most likely tokens" };
    internal static readonly Option<float?> TopP = new("--top-p") { Description = "Nucleus sampling threshold" };
    internal static readonly Option<float?> MinP =
        new("--min-p") { Description = "Drop tokens below min-p times the most likely" };
    internal static readonly Option<float?> RepetitionPenalty =
        new("--repetition-penalty") { Description = "Penalty for repeated tokens (1 = off)" };
    internal static readonly Option<ulong?> Seed = new("--seed") { Description = "RNG seed (same seed, same tokens)" };
    internal static readonly Option<string?> Draft =
        new("--draft") { Description =
        "EAGLE-2 draft checkpoint directory: speculative decoding (same output, faster)" };
    internal static readonly Option<string?> FrSpec =
        new("--frspec") { Description =
        "FR-Spec draft vocabulary (freq_<V>.pt, .npy or .safetensors, or a directory with freq_<V>.pt); needs " +
        "--draft" };
    internal static readonly Option<int?> FrSpecSize =
        new("--frspec-size") { Description =
        "Expected FR-Spec list length (the freq_<V>.pt looked for in a directory)" };
    internal static readonly Option<int> DraftWindow =
        new("--draft-window") { Description =
        "The draft attends to at most the last N context tokens (0 = all; CPM.cu's eagle_window_size): cheaper " +
        "drafts at long contexts, same output" };
    internal static readonly Option<int?> SpecIter =
        new("--spec-iter") { Description = "Draft levels per speculative round, root included (default 2)" };
    internal static readonly Option<int?> SpecTopK =
        new("--spec-topk") { Description = "Children per expanded draft node (default 10)" };
    internal static readonly Option<string?> SpecTree = new("--spec-tree")
    {
        Description =
            "auto (default: each step picks plain decoding or a tree of 4-32 nodes, whichever is faster) or " +
                      "a fixed number of tree nodes verified per round, root included, <= 64",
    };
    internal static readonly Option<bool> NoSpec =
        new("--no-speculative") { Description = "Plain decoding even with --draft" };
    internal static readonly Option<string?> Quantize =
        new("--quantize") { Description =
        "Quantize while loading: int4 (W4A16, group 128, Marlin layout; embedding, norms and LM head stay dense) or " +
        "none. A quantized checkpoint is int4 without it" };
    internal static readonly Option<int?> LongContext =
        new("--long-context") { Description =
        "Raise the position limit to N tokens with MiniCPM4's published long-context LongRoPE factors (head_dim 128 " +
        "models, e.g. 131072 for MiniCPM4-8B); use --context to size the KV cache" };
    internal static readonly Option<bool> ClipSearch =
        new("--clip-search") { Description =
        "With --quantize int4: per group, search the clipping range with the least error (slower load)" };
    internal static readonly Option<string[]> Stop =
        new("--stop") { Description = "Stop string (repeatable)", AllowMultipleArgumentsPerToken = false };
    internal static readonly Option<string?> JsonSchema =
        new("--json-schema") { Description =
        "Constrain the output to JSON valid under this JSON Schema file (objects get only the properties their " +
        "schema declares)" };
    internal static readonly Option<string?> Regex =
        new("--regex") { Description =
        "Constrain the whole output to match this regular expression (ECMAScript syntax)" };
    internal static readonly Option<string?> Grammar =
        new("--grammar") { Description =
        "Constrain the output to this grammar file (Lark-like format, docs/grammar-format.md)" };
    internal static readonly Option<string?> Choice =
        new("--choice") { Description = "Constrain the output to one of these comma-separated strings" };

    public static async Task<int> RunAsync(string[] args)
    {
        var root = new RootCommand("minicpm4: run MiniCPM4 models (CPU reference backend; CUDA when compiled in)");
        root.Options.Add(Verbose);
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(ChatCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(LogitsCommand.Create());
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(CreateModelCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(FrSpecCommand.Create());
        root.Subcommands.Add(QuantizeCommand.Create());
        root.Subcommands.Add(ConstraintCheckCommand.Create());
        root.Subcommands.Add(TemplateCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        root.Subcommands.Add(LoadTestCommand.Create());

        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors) Console.Error.WriteLine($"minicpm4: {error.Message}");
            Console.Error.WriteLine("Try 'minicpm4 --help'.");
            return 2;
        }
        var invocation = new InvocationConfiguration { EnableDefaultExceptionHandler = false };
        // `chat` handles Ctrl-C itself (it stops the reply, not the program) and the server handles Ctrl-C and SIGTERM
        // with its own grace period (--shutdown-timeout); every other command is cancelled by them.
        if (parse.CommandResult.Command.Name is "chat" or "serve") invocation.ProcessTerminationTimeout = null;
        return await parse.InvokeAsync(invocation);
    }

    /// <summary>Runs a command body with the exit-code contract.</summary>
    public static async Task<int> Guard(ParseResult parse, Func<Task> body)
    {
        bool verbose = parse.GetValue(Verbose);
        try
        {
            await body();
            return 0;
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"minicpm4: {e.Message}");
            return 2;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("minicpm4: cancelled");
            return 1;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"minicpm4: {OneLine(e)}");
            if (verbose) Console.Error.WriteLine(e);
            return 1;
        }
    }

    private static string OneLine(Exception e)
    {
        string kind = e switch
        {
            CheckpointException => "checkpoint error",
            MiniCPM4.Chat.Jinja.TemplateException => "template error",
            MiniCpmNativeLibraryException => "native library error",
            MiniCpmException or MiniCpmInvalidArgumentException => "engine error",
            FileNotFoundException or DirectoryNotFoundException => "file not found",
            InvalidDataException => "invalid data",
            IOException => "I/O error",
            _ => "error",
        };
        return $"{kind}: {e.Message.ReplaceLineEndings(" ")}";
    }

    public static (ComputeDevice Device, int Index) ParseDevice(string text)
    {
        var t = text.Trim().ToLowerInvariant();
        if (t == "auto") return (ComputeDevice.Auto, 0);
        if (t == "cpu") return (ComputeDevice.Cpu, 0);
        if (t == "cuda") return (ComputeDevice.Cuda, 0);
        if (t.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(t[5..], out int index) && index >= 0)
            return (ComputeDevice.Cuda, index);
        throw new UsageException($"unknown device '{text}' (expected cpu, cuda, cuda:N or auto)");
    }

    /// <summary>The directory of the bundled demo model (next to the CLI, else models/demo of the enclosing checkout),
    /// or null.</summary>
    internal static string? DemoModelDirectory()
    {
        var candidates = new List<string> { Path.Combine(AppContext.BaseDirectory, "models", "demo") };
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
            candidates.Add(Path.Combine(dir.FullName, "models", "demo"));
        return candidates.FirstOrDefault(d => File.Exists(Path.Combine(d, "config.json")));
    }

    /// <summary>--model, else $MINICPM4_MODEL, else the bundled demo model.</summary>
    public static string ModelDirectory(ParseResult parse) => ResolveModel(parse).Directory;

    private static (string Directory, bool IsDemo) ResolveModel(ParseResult parse)
    {
        if (parse.GetValue(Model) is { Length: > 0 } given) return (given, false);
        if (Environment.GetEnvironmentVariable("MINICPM4_MODEL") is { Length: > 0 } env) return (env, false);
        return (DemoModelDirectory() ?? throw new UsageException(
            "no model: pass --model DIR (a Hugging Face MiniCPM4 checkpoint) or set MINICPM4_MODEL; the demo model " +
            "(models/demo in the repository) was not found next to the CLI or above the current directory"), true);
    }

    /// <summary>Loads the model named by --model with a progress bar on an interactive stderr.</summary>
    public static async Task<MiniCpmModel> LoadModelAsync(ParseResult parse, CancellationToken ct)
    {
        var (directory, isDemo) = ResolveModel(parse);
        var (device, index) = ParseDevice(parse.GetValue(Device) ?? "auto");
        bool verbose = parse.GetValue(Verbose);
        var options = new MiniCpmLoadOptions
        {
            Device = device,
            DeviceIndex = index,
            Threads = parse.GetValue(Threads),
            SparseAttention = parse.GetValue(Dense) ? false : null,
            SparseOverrides = SparseOverridesFrom(parse),
            DraftDirectory = parse.GetValue(Draft),
            FrSpecPath = parse.GetValue(FrSpec),
            FrSpecSize = parse.GetValue(FrSpecSize),
            DraftAttentionWindow = parse.GetValue(DraftWindow),
            Quantization = QuantizationFrom(parse),
            QuantizationClipSearch = parse.GetValue(ClipSearch),
            LongContext = parse.GetValue(LongContext),
            Log = verbose ? line => Console.Error.WriteLine($"minicpm4: {line}") : null,
        };
        if (options.Threads < 0) throw new UsageException("--threads must be >= 0");
        if (options.DraftAttentionWindow < 0) throw new UsageException(
            "--draft-window must be >= 0 (0 = the whole context)");
        // The demo model comes with its EAGLE draft and FR-Spec list: use them unless told otherwise.
        string demoDraft = Path.Combine(directory, "draft");
        if (isDemo && options.DraftDirectory is null && !parse.GetValue(NoSpec) && Directory.Exists(demoDraft))
        {
            options = options with
            {
                DraftDirectory = demoDraft,
                FrSpecPath = Directory.GetFiles(demoDraft, "freq_*.pt").Order(StringComparer.Ordinal).FirstOrDefault(),
            };
        }
        if (parse.CommandResult.Command.Options.Contains(SpecTree)) SpeculativeFrom(parse);
        if (options.FrSpecPath is not null && options.DraftDirectory is null)
            throw new UsageException("--frspec needs --draft (an FR-Spec list restricts the draft's vocabulary)");
        return await Progress.RunAsync("Loading " + Path.GetFileName(Path.TrimEndingDirectorySeparator(directory)),
            progress => MiniCpmModel.LoadAsync(directory, options, progress, ct));
    }

    /// <summary>--sparse key=value,... (InfLLM v2 settings), or null.</summary>
    public static SparseAttentionOverrides? SparseOverridesFrom(ParseResult parse)
    {
        if (parse.GetValue(Sparse) is not { } text) return null;
        if (parse.GetValue(Dense)) throw new UsageException(
            "--sparse changes InfLLM v2's settings, but --dense turns it off");
        try
        {
            return SparseAttentionOverrides.Parse(text);
        }
        catch (FormatException e)
        {
            throw new UsageException($"--sparse {e.Message}");
        }
    }

    /// <summary>--quantize (and the --clip-search that goes with it).</summary>
    public static WeightQuantization QuantizationFrom(ParseResult parse)
    {
        var q = (parse.GetValue(Quantize) ?? "none").Trim().ToLowerInvariant() switch
        {
            "none" => WeightQuantization.None,
            "int4" or "w4a16" => WeightQuantization.Int4,
            var other => throw new UsageException($"unknown --quantize '{other}' (expected int4 or none)"),
        };
        if (parse.GetValue(ClipSearch) && q != WeightQuantization.Int4)
            throw new UsageException("--clip-search needs --quantize int4");
        return q;
    }

    /// <summary>A session with the command line's options; a --context beyond the model's positions is a usage
    /// error.</summary>
    public static MiniCpmSession CreateSession(ParseResult parse, MiniCpmModel model, SessionOptions? options = null)
    {
        options ??= SessionOptionsFrom(parse);
        int positions = model.Config.MaxPositionEmbeddings;
        if (options.ContextLength > positions)
            throw new UsageException(
                $"--context {options.ContextLength} is more than the model's {positions} positions " +
                "(max_position_embeddings; --long-context N raises it for MiniCPM4 models with head_dim 128)");
        return model.CreateSession(options);
    }

    public static SessionOptions SessionOptionsFrom(ParseResult parse)
    {
        int context = parse.GetValue(Context);
        if (context < 0) throw new UsageException("--context must be >= 0");
        var options = new SessionOptions { ContextLength = context, CudaGraphs = !parse.GetValue(NoCudaGraphs) };
        if (parse.GetValue(KvMemory) is { } limit)
        {
            try
            {
                var (bytes, fraction) = MemoryLimitText.Parse(limit);
                options = options with { KvCacheMemoryBytes = bytes, KvCacheMemoryFraction = fraction };
            }
            catch (FormatException e)
            {
                throw new UsageException($"--kv-memory {e.Message}");
            }
        }
        return options;
    }

    /// <summary>Generation options: the checkpoint's defaults, overridden by the command line.</summary>
    public static GenerationOptions GenerationOptionsFrom(ParseResult parse, MiniCpmModel model)
    {
        var o = GenerationOptions.FromDefaults(model.GenerationDefaults);
        int max = parse.GetValue(MaxTokens);
        if (max < 0) throw new UsageException("--max-tokens must be >= 0");
        o = o with { MaxTokens = max };
        if (parse.GetValue(Temperature) is float t)
        {
            if (!float.IsFinite(t) || t < 0) throw new UsageException("--temperature must be >= 0");
            o = o with { Temperature = t };
        }
        if (parse.GetValue(TopK) is int k)
        {
            if (k < 0) throw new UsageException("--top-k must be >= 0");
            o = o with { TopK = k };
        }
        if (parse.GetValue(TopP) is float p)
        {
            if (!(p > 0 && p <= 1)) throw new UsageException("--top-p must be in (0, 1]");
            o = o with { TopP = p };
        }
        if (parse.GetValue(MinP) is float mp)
        {
            if (!(mp >= 0 && mp <= 1)) throw new UsageException("--min-p must be in [0, 1]");
            o = o with { MinP = mp };
        }
        if (parse.GetValue(RepetitionPenalty) is float rp)
        {
            if (!(rp > 0)) throw new UsageException("--repetition-penalty must be > 0");
            o = o with { RepetitionPenalty = rp };
        }
        o = o with { Seed = parse.GetValue(Seed) ?? 0 };
        if (parse.GetValue(Stop) is { Length: > 0 } stops) o = o with { StopStrings = stops };
        return o with { Speculative = SpeculativeFrom(parse), Constraint = ConstraintFrom(parse) };
    }

    /// <summary>The output constraint of --json-schema, --regex, --grammar or --choice (at most one), or
    /// null.</summary>
    public static Constraints.OutputConstraint? ConstraintFrom(ParseResult parse)
    {
        var given = new (Option<string?> Option, string? Value)[]
        {
            (JsonSchema, parse.GetValue(JsonSchema)), (Regex, parse.GetValue(Regex)),
                (Grammar, parse.GetValue(Grammar)),
            (Choice, parse.GetValue(Choice)),
        }.Where(g => g.Value is not null).ToArray();
        if (given.Length == 0) return null;
        if (given.Length > 1) throw new UsageException(
            $"give at most one of {string.Join(", ", given.Select(g => g.Option.Name))}");
        var (option, value) = given[0];
        try
        {
            // Objects get the properties their schema declares, no others (the schema's meaning of an absent
            // additionalProperties would let a model add keys at will).
            if (option == JsonSchema) return Constraints.OutputConstraint.JsonSchemaDeclaredProperties(
                ReadFile(option.Name, value!));
            if (option == Grammar) return Constraints.OutputConstraint.Grammar(ReadFile(option.Name, value!));
            if (option == Regex) return Constraints.OutputConstraint.Regex(value!);
            var choices = value!.Split(',');
            if (choices.Any(c => c.Length == 0)) throw new UsageException("--choice has an empty option");
            return Constraints.OutputConstraint.Choice(choices);
        }
        catch (Constraints.ConstraintCompileException e)
        {
            throw new UsageException($"{option.Name}: {e.Message}");
        }

        static string ReadFile(string name, string path) => File.Exists(path)
            ? File.ReadAllText(path)
            : throw new UsageException($"{name} {path}: no such file");
    }

    /// <summary>The speculative tree options of the command line (checked before the model loads).</summary>
    public static SpeculativeOptions SpeculativeFrom(ParseResult parse)
    {
        var spec = new SpeculativeOptions();
        if (parse.GetValue(SpecIter) is int iter) spec = spec with { NumIterations = iter };
        if (parse.GetValue(SpecTopK) is int topk) spec = spec with { TopKPerIteration = topk };
        switch (parse.GetValue(SpecTree))
        {
            case null or "auto":
                if (spec != new SpeculativeOptions())
                    throw new UsageException(
                        "--spec-iter and --spec-topk need a fixed --spec-tree N (auto chooses the tree)");
                break;
            case var text when int.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out int tree):
                spec = spec with { TreeSize = tree };
                if (tree == SpeculativeOptions.AutoTreeSize) throw new UsageException(
                    "--spec-tree must be auto or in [2, 64]");
                break;
            case var text:
                throw new UsageException($"--spec-tree '{text}': expected auto or a number of nodes in [2, 64]");
        }
        if (parse.GetValue(NoSpec)) spec = spec with { Enabled = false };
        if (spec.Enabled && !spec.Adaptive && (spec.NumIterations is < 1 or > 64 || spec.TreeSize is < 2 or > 64 ||
                             spec.TopKPerIteration < 1 || spec.TopKPerIteration > spec.TreeSize - 1))
            throw new UsageException(
                "--spec-iter must be in [1, 64], --spec-tree in [2, 64] and --spec-topk in [1, spec-tree - 1]");
        return spec;
    }

    public static void AddGenerationOptions(Command command)
    {
        foreach (
            var option in new Option[] { MaxTokens, Temperature, TopK, TopP, MinP, RepetitionPenalty, Seed, Stop,
            SpecIter, SpecTopK, SpecTree, NoSpec, JsonSchema, Regex, Grammar, Choice })
            command.Options.Add(option);
    }

    public static void AddModelOptions(Command command)
    {
        foreach (
            var option in new Option[] { Model, Device, Threads, Context, KvMemory, NoCudaGraphs, Dense, Sparse, Draft,
            FrSpec, FrSpecSize, DraftWindow, Quantize, ClipSearch, LongContext })
            command.Options.Add(option);
    }
}
