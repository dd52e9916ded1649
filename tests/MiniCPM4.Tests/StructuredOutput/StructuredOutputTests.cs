using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using MiniCPM4.Constraints;
using MiniCPM4.Tests.Demo;
using NUnit.Framework;

namespace MiniCPM4.Tests.StructuredOutput;

/// <summary>
/// Constrained generation on the demo model, end to end: every output is valid under its schema as judged by an
/// independent validator (JsonSchema.Net), with and without the draft; speculative decoding under a constraint gives
/// exactly the tokens of plain constrained decoding; forced tokens, regex, choice and grammar constraints.
/// </summary>
[TestFixture]
public class StructuredOutputTests
{
    private MiniCpmModel _model = null!;
    private List<(string Name, string Schema, bool Bounded)> _schemas = null!;

    [OneTimeSetUp]
    public void Load()
    {
        string dir = DemoModelDirectory.Find();
        _model = MiniCpmModel.Load(dir, new MiniCpmLoadOptions
        {
            Device = ComputeDevice.Cpu,
            Threads = 2,
            DraftDirectory = Path.Combine(dir, "draft"),
            FrSpecPath = Directory.GetFiles(Path.Combine(dir, "draft"), "freq_*.pt").Single(),
        });
        _schemas =
            File.ReadLines(
            Path.Combine(TestContext.CurrentContext.TestDirectory, "TestData", "StructuredOutput", "schemas.jsonl"))
            .Select(line => JsonNode.Parse(line)!)
            .Select(n => (n["name"]!.GetValue<string>(), n["schema"]!.ToJsonString(), n["bounded"]!.GetValue<bool>()))
            .ToList();
    }

    [OneTimeTearDown]
    public void Dispose() => _model?.Dispose();

    private async Task<(string Text, int[] Ids, FinishReason Finish)> Generate(string prompt, GenerationOptions options)
    {
        using var session = _model.CreateSession(new SessionOptions { ContextLength = 1024 });
        var result = await session.GenerateTextAsync(prompt, options);
        return (result.Text, result.TokenIds.ToArray(), result.FinishReason);
    }

    private static GenerationOptions Options(OutputConstraint c, bool speculative, float temperature = 0,
        ulong seed = 1) => new()
    {
        Constraint = c,
        MaxTokens = 600,
        Temperature = temperature,
        Seed = seed,
        Speculative = speculative ? new SpeculativeOptions() : SpeculativeOptions.Off,
    };

    [Test]
    public async Task EveryOutputIsValidUnderItsSchema([Values(false, true)] bool speculative,
        [Values(0f, 0.9f)] float temperature)
    {
        var failures = new List<string>();
        int finished = 0;
        foreach (var (name, schemaText, bounded) in _schemas)
        {
            var constraint = OutputConstraint.JsonSchema(schemaText);
            string text;
            FinishReason finish;
            try
            {
                (text, _, finish) =
                    await Generate("The record:", Options(constraint, speculative, temperature, seed: 7));
            }
            catch (MiniCpmException e)
            {
                failures.Add($"{name}: {e.Message}");
                continue;
            }
            // The demo model (10 M parameters) may ramble inside an unbounded string or number until MaxTokens;
            // such an output is incomplete, not invalid. Outputs of bounded schemas always end.
            if (finish != FinishReason.Stop)
            {
                if (bounded) failures.Add($"{name}: ended by {finish} after {text.Length} chars: {text}");
                continue;
            }
            finished++;
            var schema = JsonSchema.FromText(schemaText);
            JsonElement instance;
            try
            {
                instance = JsonDocument.Parse(text).RootElement;
            }
            catch (JsonException e)
            {
                failures.Add($"{name}: not JSON ({e.Message}): {text}");
                continue;
            }
            var result =
                schema.Evaluate(instance,
                new EvaluationOptions { RequireFormatValidation = true, OutputFormat = OutputFormat.List });
            if (!result.IsValid) failures.Add($"{name}: invalid under its schema: {text}");
            if (!constraint.Accepts(text)) failures.Add($"{name}: the constraint itself rejects its output: {text}");
        }
        Assert.That(failures, Is.Empty);
        Assert.That(finished, Is.GreaterThanOrEqualTo(_schemas.Count(s => s.Bounded)));
        TestContext.Out.WriteLine(
            $"{finished} of {_schemas.Count} outputs complete within the token budget, all valid");
    }

    [Test]
    public async Task SpeculativeConstrainedDecodingIsLossless([Values(0f, 0.8f)] float temperature)
    {
        foreach (var name in new[] { "person", "nested", "recursive-tree", "int-list", "empty-schema" })
        {
            var constraint = OutputConstraint.JsonSchema(_schemas.Single(s => s.Name == name).Schema);
            var plain = await Generate("Data:", Options(constraint, speculative: false, temperature, seed: 3));
            var spec = await Generate("Data:", Options(constraint, speculative: true, temperature, seed: 3));
            int first = 0;
            while (first < Math.Min(spec.Ids.Length, plain.Ids.Length) && spec.Ids[first] == plain.Ids[first]) first++;
            string Around(IReadOnlyList<int> ids) =>
                string.Join(",", ids.Skip(Math.Max(0, first - 3)).Take(8).Select(i => _model.Tokenizer.IdToToken(i)));
            Assert.That(spec.Ids, Is.EqualTo(plain.Ids),
                $"{name}: speculative tokens differ from plain constrained decoding at {first}: " +
                $"plain {Around(plain.Ids)} spec {Around(spec.Ids)} " +
                $"all {string.Join(",", plain.Ids.Take(30).Select(i => _model.Tokenizer.IdToToken(i)))}; " +
                $"plain text {plain.Text[..Math.Min(300, plain.Text.Length)]} ||| " +
                $"spec text {spec.Text[..Math.Min(300, spec.Text.Length)]}");
            Assert.That(spec.Text, Is.EqualTo(plain.Text));
        }
    }

    [Test]
    public async Task ForcedTokensFillWhatTheConstraintDictates()
    {
        // One choice: after the first token everything is forced; the output is exactly the choice.
        const string only = "The quick brown fox jumps over the lazy dog";
        var (text, ids, finish) = await Generate("Once", Options(OutputConstraint.Choice([only]), speculative: true));
        Assert.That(text, Is.EqualTo(only));
        Assert.That(finish, Is.EqualTo(FinishReason.Stop));
        // The forced tokens still count toward MaxTokens.
        using var session = _model.CreateSession(new SessionOptions { ContextLength = 256 });
        var capped =
            await session.GenerateTextAsync("Once",
            Options(OutputConstraint.Choice([only]), false) with { MaxTokens = 3 });
        Assert.That(capped.TokenIds, Has.Count.EqualTo(3));
        Assert.That(capped.FinishReason, Is.EqualTo(FinishReason.Length));
        Assert.That(only, Does.StartWith(capped.Text));
    }

    [Test]
    public async Task RegexChoiceAndGrammarConstraints([Values(false, true)] bool speculative)
    {
        var regex = OutputConstraint.Regex("[A-Z][a-z]+ [0-9]{2,4}");
        var (text, _, _) = await Generate("Name and year:", Options(regex, speculative, 0.9f, 5));
        Assert.That(text, Does.Match("^[A-Z][a-z]+ [0-9]{2,4}$"));

        var choice = OutputConstraint.Choice(["red", "green", "blue"]);
        (text, _, _) = await Generate("The sky is", Options(choice, speculative, 0.9f, 6));
        Assert.That(new[] { "red", "green", "blue" }, Does.Contain(text));

        var grammar = OutputConstraint.Grammar("""
            start: expr
            expr: term (("+" | "-") term)*
            term: NUMBER | "(" expr ")"
            NUMBER: /[0-9]{1,3}/
            """);
        (text, _, _) = await Generate("Compute:", Options(grammar, speculative, 0.9f, 8) with { MaxTokens = 40 });
        Assert.That(text, Does.Match(@"^[0-9()+\-]+$"));
    }

    [Test]
    public void AnUnenforceableSchemaFailsWhenCompiledNamingKeywordAndPointer()
    {
        var e = Assert.Throws<ConstraintCompileException>(() =>
            OutputConstraint.JsonSchema("""{"type":"object","properties":{"a":{"type":"array","items":{"type":"object"},"uniqueItems":true}}}"""));
        Assert.That(e!.Keyword, Is.EqualTo("uniqueItems"));
        Assert.That(e.Pointer, Is.EqualTo("/properties/a"));
        Assert.That(e.Message, Does.Contain("uniqueItems").And.Contain("/properties/a"));
        Assert.Throws<ConstraintCompileException>(() => OutputConstraint.JsonSchema("{not json"));
        // Unsatisfiable: the root's additionalProperties does not see the properties declared inside allOf.
        var unsat = Assert.Throws<ConstraintCompileException>(() => OutputConstraint.JsonSchema(
            """{"type":"object","allOf":[{"properties":{"a":{}},"required":["a"]}],"additionalProperties":false}"""));
        Assert.That(unsat!.Message, Does.Contain("accepts no output"));
        Assert.Throws<ConstraintCompileException>(() => OutputConstraint.Regex("(a)\\1"));
    }
}
