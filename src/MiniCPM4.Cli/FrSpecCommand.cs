using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using MiniCPM4.Checkpoints;
using MiniCPM4.Speculative;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Cli;

/// <summary>
/// `minicpm4 frspec`: FR-Spec draft vocabularies (the frequency-ranked token ids the EAGLE draft head is restricted
/// to). `build` ranks the tokens of a corpus; `info` shows and checks a freq_&lt;r&gt;.pt / .npy / .safetensors file.
/// </summary>
internal static class FrSpecCommand
{
    private static readonly Option<string> Corpus =
        new("--corpus") { Description = "Text corpus, tokenized line by line (streamed)", Required = true };
    private static readonly Option<int> Size =
        new("--size") { Description = "Draft vocabulary size r (ids kept, EOS included)", DefaultValueFactory = _ =>
        FrSpecVocabulary.DefaultSize };
    private static readonly Option<string> Out =
        new("--out",
        "-o") { Description = "Output file: freq_<r>.pt (torch.save format), or .npy / .safetensors by extension",
        Required = true };
    private static readonly Option<string?> OptionalModel =
        new("--model", "-m") { Description = "Checkpoint directory: check the ids against its vocab_size and EOS ids" };
    private static readonly Option<int?> ExpectedSize =
        new("--size") { Description = "Expected draft vocabulary size r (also picks freq_<r>.pt in a directory)" };
    private static readonly Argument<string> FileArgument =
        new("file") { Description = "FR-Spec file (.pt, .npy, .safetensors) or a directory with freq_<r>.pt" };

    private const int ShownIds = 16;

    public static Command Create()
    {
        var build =
            new Command("build",
            "Rank a corpus's tokens by frequency and write the top r (EOS last) as an FR-Spec file");
        build.Options.Add(Cli.Model);
        build.Options.Add(Corpus);
        build.Options.Add(Size);
        build.Options.Add(Out);
        build.Options.Add(Cli.Json);
        build.SetAction((parse, ct) => Cli.Guard(parse, () => BuildAsync(parse, ct)));

        var info = new Command("info", "Show an FR-Spec token-id file and check it (against a model with -m)");
        info.Arguments.Add(FileArgument);
        info.Options.Add(OptionalModel);
        info.Options.Add(ExpectedSize);
        info.Options.Add(Cli.Json);
        info.SetAction((parse, ct) => Cli.Guard(parse, () => Info(parse)));

        var command = new Command("frspec", "FR-Spec draft vocabularies for speculative decoding (build, info)");
        command.Subcommands.Add(build);
        command.Subcommands.Add(info);
        return command;
    }

    /// <summary>
    /// What an FR-Spec list needs from a checkpoint, read without its weights: config.json's vocab_size and the EOS
    /// ids — the tokenizer's eos_token first (what CPM.cu's gen_fr_index.py appends; &lt;|im_end|&gt; for MiniCPM4),
    /// then config.json's and generation_config.json's eos_token_id — and the tokenizer.
    /// </summary>
    private static (int VocabSize, int[] EosIds, MiniCpmTokenizer Tokenizer) ReadModel(string directory)
    {
        if (!Directory.Exists(directory)) throw new CheckpointException(Path.GetFullPath(directory),
            "checkpoint directory does not exist");
        var config = MiniCpmConfig.Load(Path.Combine(directory, "config.json"));
        string genPath = Path.Combine(directory, "generation_config.json");
        var generation = File.Exists(genPath) ? GenerationConfig.Load(genPath) : new GenerationConfig();
        var tokenizer = MiniCpmTokenizer.Load(directory);
        var eos = new List<int>();
        foreach (int id in new[] { tokenizer.EosId }.Concat(config.EosTokenIds).Concat(generation.EosTokenIds ?? []))
        {
            if (id >= 0 && id < config.VocabSize && !eos.Contains(id)) eos.Add(id);
        }
        if (eos.Count == 0) throw new CheckpointException(Path.GetFullPath(directory),
            "the checkpoint names no EOS token id inside its vocabulary");
        return (config.VocabSize, eos.ToArray(), tokenizer);
    }

    private static async Task BuildAsync(ParseResult parse, CancellationToken ct)
    {
        string model = Cli.ModelDirectory(parse);
        string corpus = parse.GetValue(Corpus)!;
        string output = parse.GetValue(Out)!;
        int size = parse.GetValue(Size);
        bool json = parse.GetValue(Cli.Json);
        if (size < 1 || size > FrSpecVocabulary.MaxSize) throw new UsageException(
            $"--size must be in [1, {FrSpecVocabulary.MaxSize}]");
        if (!File.Exists(corpus)) throw new FileNotFoundException($"the corpus file '{corpus}' does not exist", corpus);

        var (vocabSize, eosIds, tokenizer) = ReadModel(model);
        var counter = new TokenFrequencyCounter(vocabSize);
        long lines = 0;
        await Task.Run(() =>
        {
            // Each non-empty line, with its line break, is tokenized on its own (no BOS): the corpus is streamed, and
            // memory is one counter per vocabulary entry.
            foreach (var line in File.ReadLines(corpus))
            {
                ct.ThrowIfCancellationRequested();
                lines++;
                if (line.Length == 0) continue;
                int[] ids = tokenizer.Encode(line + "\n");
                foreach (int id in ids)
                {
                    if ((uint)id >= (uint)vocabSize)
                        throw new InvalidDataException(
                            $"{corpus}:{lines}: the tokenizer gave id {id}, outside config.json's vocab_size " +
                            $"{vocabSize}: tokenizer and model do not match");
                }
                counter.Add(ids);
            }
        }, ct);

        var vocabulary = FrSpecVocabularyBuilder.Build(counter, size, eosIds);
        vocabulary.Save(output);
        string full = Path.GetFullPath(output);
        // Read the file back as the engine will, so a written file is known to load.
        FrSpecVocabulary.Load(full, vocabSize, eosIds, vocabulary.Count);
        double coverage = counter.Coverage(vocabulary.TokenIds);

        if (vocabulary.Count < size)
            Console.Error.WriteLine(
                $"minicpm4: warning: the corpus has only {vocabulary.Count - 1} distinct non-EOS tokens, so the list " +
                $"has " +
                                    $"{vocabulary.Count} ids, not {size}; use a larger corpus (or a smaller --size)");
        if (json)
        {
            WriteJson(w =>
            {
                w.WriteString("path", full);
                w.WriteNumber("count", vocabulary.Count);
                w.WriteNumber("size", size);
                w.WriteNumber("corpus_lines", lines);
                w.WriteNumber("corpus_tokens", counter.TotalTokens);
                w.WriteNumber("distinct_tokens", counter.DistinctTokens);
                w.WriteNumber("coverage", Math.Round(coverage, 6));
                w.WriteNumber("eos_token_id", eosIds[0]);
            });
            return;
        }
        var o = Console.Out;
        o.WriteLine($"ids           {vocabulary.Count} (requested {size}; EOS id {eosIds[0]} last)");
        o.WriteLine(
            $"corpus        {lines} lines, {counter.TotalTokens} tokens, {counter.DistinctTokens} distinct ids");
        o.WriteLine(
            $"coverage      {(coverage * 100).ToString("F2", CultureInfo.InvariantCulture)}% of the corpus tokens " +
            $"are in the list");
        o.WriteLine($"wrote         {full}");
    }

    private static Task Info(ParseResult parse)
    {
        string path = parse.GetValue(FileArgument)!;
        string? model = parse.GetValue(OptionalModel);
        int? size = parse.GetValue(ExpectedSize);
        bool json = parse.GetValue(Cli.Json);
        if (size is int r && (r < 1 || r > FrSpecVocabulary.MaxSize)) throw new UsageException(
            $"--size must be in [1, {FrSpecVocabulary.MaxSize}]");

        string file = FrSpecVocabulary.ResolveFile(path, size);
        var list = FrSpecListFile.Read(file);
        int[] ids = list.Ids;
        int? vocabSize = null;
        int[]? eosIds = null;
        if (model is not null) (vocabSize, eosIds, _) = ReadModel(model);
        string? problem = FrSpecListFile.Validate(ids, vocabSize, eosIds, size);
        var eosPresent = eosIds?.Where(e => Array.IndexOf(ids, e) >= 0).ToArray() ?? [];

        string checks = problem is not null ? "INVALID: " + problem
            : (model is null
                ? "ok: non-empty, unique, non-negative ids" + (size is null ? "" : ", length as expected")
                    + " (give -m to check the vocabulary range and EOS)"
                : $"ok: valid for {Path.GetFullPath(model)} (vocab {vocabSize}; EOS id(s) present: " +
                    $"{string.Join(", ", eosPresent)})");
        if (json)
        {
            WriteJson(w =>
            {
                w.WriteString("path", file);
                w.WriteString("format", list.FormatKey);
                w.WriteNumber("count", ids.Length);
                w.WriteStartArray("first_ids");
                foreach (int id in ids.Take(ShownIds)) w.WriteNumberValue(id);
                w.WriteEndArray();
                if (ids.Length > 0)
                {
                    w.WriteNumber("last_id", ids[^1]);
                    w.WriteNumber("min_id", ids.Min());
                    w.WriteNumber("max_id", ids.Max());
                }
                w.WriteBoolean("valid", problem is null);
                if (problem is not null) w.WriteString("problem", problem);
                w.WriteBoolean("checked_against_model", model is not null);
                if (eosIds is not null)
                {
                    w.WriteStartArray("eos_ids_present");
                    foreach (int id in eosPresent) w.WriteNumberValue(id);
                    w.WriteEndArray();
                }
            });
        }
        else
        {
            var o = Console.Out;
            o.WriteLine($"file          {file}");
            o.WriteLine($"format        {list.FormatName}");
            o.WriteLine($"ids           {ids.Length}");
            if (ids.Length > 0)
            {
                o.WriteLine(
                    $"first         {string.Join(", ", ids.Take(ShownIds))}{(ids.Length > ShownIds ? ", ..." : "")}");
                o.WriteLine($"last          {ids[^1]}");
                o.WriteLine($"range         {ids.Min()} to {ids.Max()}");
            }
            o.WriteLine($"checks        {checks}");
        }
        if (problem is not null) throw new FrSpecFormatException(file, problem);
        return Task.CompletedTask;
    }


    private static void WriteJson(Action<Utf8JsonWriter> body)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        Console.Out.WriteLine(Encoding.UTF8.GetString(buffer.ToArray()));
    }
}
