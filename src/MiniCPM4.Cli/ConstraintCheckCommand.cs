using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MiniCPM4.Constraints;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Cli;

/// <summary>
/// `minicpm4 constraint-check`: conformance and speed of the JSON Schema constraint engine on a file of schemas and
/// instances (MaskBench's method): each instance is tokenized as generated text, and at each token the mask is
/// computed and the token checked against it.
/// </summary>
internal static class ConstraintCheckCommand
{
    private static readonly Option<string> Tokenizer =
        new("--tokenizer") { Description = "A tokenizer.model file or a checkpoint directory", Required = true };
    private static readonly Option<string> Input =
        new("--input") { Description =
        "JSON lines: {\"id\": ..., \"schema\": {...}, \"instances\": [\"<JSON text>\", ...]} (an optional \"valid\": " +
        "[bool, ...] adds a pass/fail summary)", Required = true };
    private static readonly Option<string?> Output =
        new("--output", "-o") { Description = "Write the result lines here instead of stdout" };
    private static readonly Option<int> Limit =
        new("--limit") { Description = "Check at most this many schemas (0 = all)" };

    public static Command Create()
    {
        var command =
            new Command("constraint-check",
            "Check JSON Schema constraints against instances, token by token, and time the masks");
        command.Options.Add(Tokenizer);
        command.Options.Add(Input);
        command.Options.Add(Output);
        command.Options.Add(Limit);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => Task.Run(() => Run(parse, ct), ct)));
        return command;
    }

    private static void Run(ParseResult parse, CancellationToken ct)
    {
        var tokenizer = LoadTokenizer(parse.GetValue(Tokenizer)!);
        var input = parse.GetValue(Input)!;
        if (!File.Exists(input)) throw new UsageException($"--input {input}: no such file");
        int limit = parse.GetValue(Limit);
        if (limit < 0) throw new UsageException("--limit must be >= 0");
        var checker = new ConstraintChecker(tokenizer);
        using var output = parse.GetValue(Output) is { } path ? new StreamWriter(path, false, new UTF8Encoding(false))
            : null;
        var writer = output ?? Console.Out;
        var summary = new Summary();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(input))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            ct.ThrowIfCancellationRequested();
            if (limit > 0 && summary.Schemas >= limit) break;
            Case c;
            try
            {
                c = Case.Parse(line);
            }
            catch (Exception e) when (e is JsonException or InvalidDataException)
            {
                throw new InvalidDataException($"{input}:{lineNumber}: {e.Message}");
            }
            writer.WriteLine(Check(c, checker, summary));
        }
        writer.Flush();
        summary.Print(Console.Error);
    }

    private static MiniCpmTokenizer LoadTokenizer(string path)
    {
        if (Directory.Exists(path)) return MiniCpmTokenizer.Load(path);
        if (!File.Exists(path)) throw new UsageException($"--tokenizer {path}: no such file or directory");
        using var stream = File.OpenRead(path);
        return MiniCpmTokenizer.FromSentencePiece(stream);
    }

    private sealed record Case(JsonElement Id, string Schema, string[] Instances, bool[]? Valid)
    {
        public static Case Parse(string line)
        {
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException("expected a JSON object");
            if (!root.TryGetProperty("schema", out var schema)) throw new InvalidDataException("no \"schema\"");
            if (!root.TryGetProperty("instances", out var instances) || instances.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException("no \"instances\" array");
            var texts = instances.EnumerateArray().Select(i => i.ValueKind == JsonValueKind.String
                ? i.GetString()!
                : throw new InvalidDataException("each instance must be a string of JSON text")).ToArray();
            bool[]? valid = null;
            if (root.TryGetProperty("valid", out var v))
            {
                valid = v.EnumerateArray().Select(b => b.GetBoolean()).ToArray();
                if (valid.Length != texts.Length) throw new InvalidDataException(
                    "\"valid\" and \"instances\" differ in length");
            }
            var id = root.TryGetProperty("id", out var idElement) ? idElement.Clone() : default;
            return new Case(id, schema.GetRawText(), texts, valid);
        }
    }

    private static string Check(Case c, ConstraintChecker checker, Summary summary)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WritePropertyName("id");
            if (c.Id.ValueKind == JsonValueKind.Undefined) w.WriteNullValue();
            else c.Id.WriteTo(w);
            OutputConstraint? constraint = null;
            long t0 = Stopwatch.GetTimestamp();
            string? error = null;
            try
            {
                constraint = OutputConstraint.JsonSchema(c.Schema);
                checker.Compile(constraint);
            }
            catch (ConstraintCompileException e)
            {
                error = e.Message;
            }
            double compileUs = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
            summary.Schemas++;
            if (error is null)
            {
                w.WriteNull("compile_error");
                summary.CompileUs.Add(compileUs);
            }
            else
            {
                w.WriteString("compile_error", error);
                summary.CompileErrors++;
            }
            w.WriteNumber("compile_us", Math.Round(compileUs));
            w.WriteStartArray("instances");
            bool pass = error is null;
            for (int i = 0; i < c.Instances.Length; i++)
            {
                bool? valid = c.Valid?[i];
                if (constraint is null)
                {
                    if (valid == false) summary.InvalidRejected++;
                    continue;
                }
                var (accepted, complete, tokens, times) = checker.Check(constraint, c.Instances[i]);
                summary.MaskUs.AddRange(times);
                w.WriteStartObject();
                w.WriteBoolean("accepted", accepted);
                w.WriteBoolean("complete", complete);
                w.WriteNumber("tokens", tokens);
                w.WriteStartArray("mask_us");
                foreach (double t in times) w.WriteNumberValue(Math.Round(t, 1));
                w.WriteEndArray();
                w.WriteEndObject();
                bool matched = accepted && complete;
                if (valid == true && !matched) pass = false;
                if (valid == false && matched)
                {
                    pass = false;
                    summary.InvalidAccepted++;
                }
                if (valid == false && !matched) summary.InvalidRejected++;
            }
            w.WriteEndArray();
            w.WriteEndObject();
            if (c.Valid is not null && pass) summary.Passing++;
            if (c.Valid is not null) summary.Labelled = true;
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private sealed class Summary
    {
        public int Schemas, CompileErrors, Passing, InvalidAccepted, InvalidRejected;
        public bool Labelled;
        public readonly List<double> CompileUs = [];
        public readonly List<double> MaskUs = [];

        public void Print(TextWriter w)
        {
            w.WriteLine($"schemas: {Schemas}, compile errors: {CompileErrors}" +
                (Labelled ? $", passing: {Passing}, invalid instances accepted: {InvalidAccepted}" : ""));
            w.WriteLine($"compile: p50 {Percentile(CompileUs, 0.5):0} us, p99 {Percentile(CompileUs, 0.99):0} us " +
                $"({CompileUs.Count} compiled)");
            w.WriteLine($"mask: p50 {Percentile(MaskUs, 0.5):0.0} us, p99 {Percentile(MaskUs, 0.99):0.0} us, " +
                $"max {(MaskUs.Count > 0 ? MaskUs.Max() : 0):0} us ({MaskUs.Count} masks)");
        }

        private static double Percentile(List<double> values, double q)
        {
            if (values.Count == 0) return 0;
            var sorted = values.Order().ToArray();
            return sorted[Math.Min(sorted.Length - 1, (int)Math.Floor(q * sorted.Length))];
        }
    }
}
