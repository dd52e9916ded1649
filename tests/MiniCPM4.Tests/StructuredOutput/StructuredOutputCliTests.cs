using System.Text.Json;
using MiniCPM4.Tests.Cli;
using NUnit.Framework;

namespace MiniCPM4.Tests.StructuredOutput;

/// <summary>The CLI's constraint options (generate --json-schema/--regex/--grammar/--choice) and
/// constraint-check.</summary>
[TestFixture]
public class StructuredOutputCliTests
{
    private string _temp = null!;

    [OneTimeSetUp]
    public void Setup() => _temp = Directory.CreateTempSubdirectory("minicpm4-constraint-cli-").FullName;

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_temp, recursive: true);

    private static string Demo => MiniCPM4.Tests.Demo.DemoModelDirectory.Find();

    private string WriteFile(string name, string text)
    {
        var path = Path.Combine(_temp, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Test]
    public void GenerateWithAJsonSchemaPrintsValidJson()
    {
        var schema = WriteFile("person.json", """{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":99}},"required":["name","age"],"additionalProperties":false}""");
        var (code, output, err) =
            CliTests.Run("generate", "-m", Demo, "-p", "A person:", "--json-schema", schema, "--max-tokens", "200",
            "--temperature", "0.8", "--seed", "3", "--json");
        Assert.That(code, Is.EqualTo(0), err);
        using var result = JsonDocument.Parse(output);
        Assert.That(result.RootElement.GetProperty("finish_reason").GetString(), Is.EqualTo("stop"));
        using var person = JsonDocument.Parse(result.RootElement.GetProperty("text").GetString()!);
        Assert.That(person.RootElement.GetProperty("name").ValueKind, Is.EqualTo(JsonValueKind.String));
        Assert.That(person.RootElement.GetProperty("age").GetInt32(), Is.InRange(0, 99));
    }

    [Test]
    public void GenerateWithRegexChoiceAndGrammar()
    {
        var (code, output, err) =
            CliTests.Run("generate", "-m", Demo, "-p", "Code:", "--regex", "[A-Z]{3}-[0-9]{4}", "--max-tokens", "30");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output.Trim(), Does.Match("^[A-Z]{3}-[0-9]{4}$"));
        (code, output, err) =
            CliTests.Run("generate", "-m", Demo, "-p", "Answer:", "--choice", "yes,no,maybe", "--temperature", "1",
            "--seed", "2");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(new[] { "yes", "no", "maybe" }, Does.Contain(output.Trim()));
        var grammar = WriteFile("list.lark", "start: \"[\" WORD (\", \" WORD)~0..3 \"]\"\nWORD: /[a-z]{1,8}/\n");
        (code, output, err) =
            CliTests.Run("generate", "-m", Demo, "-p", "Words:", "--grammar", grammar, "--max-tokens", "60",
            "--temperature", "0.7");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output.Trim(), Does.Match(@"^\[[a-z]{1,8}(, [a-z]{1,8}){0,3}\]$"));
    }

    [Test]
    public void BadConstraintsAreUsageErrorsNamingTheProblem()
    {
        var schema = WriteFile("unique.json", """{"type":"array","items":{"type":"string"},"uniqueItems":true}""");
        var (code, _, err) = CliTests.Run("generate", "-m", Demo, "-p", "x", "--json-schema", schema);
        Assert.That(code, Is.EqualTo(2), err);
        Assert.That(err, Does.Contain("--json-schema").And.Contain("uniqueItems"));
        (code, _, err) =
            CliTests.Run("generate", "-m", Demo, "-p", "x", "--json-schema", Path.Combine(_temp, "missing.json"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("missing.json"));
        (code, _, err) = CliTests.Run("generate", "-m", Demo, "-p", "x", "--regex", "(?=a)b");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--regex"));
        (code, _, err) = CliTests.Run("generate", "-m", Demo, "-p", "x", "--regex", "a", "--choice", "a,b");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("at most one"));
    }

    [Test]
    public void ConstraintCheckReportsAcceptanceCompletionAndTimes()
    {
        var cases = WriteFile("cases.jsonl", string.Join('\n',
            """{"id": 1, "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, "instances": ["{\"a\": 5}", "{\"a\": \"x\"}", "{\"a\": 5"], "valid": [true, false, false]}""",
            """{"id": "u", "schema": {"type": "array", "uniqueItems": true, "items": {"type": "object"}}, "instances": ["[]"]}"""));
        var tokenizer = Path.Combine(TestContext.CurrentContext.TestDirectory, "TestData", "llama-sp-bpe-32k.model");
        var (code, output, err) = CliTests.Run("constraint-check", "--tokenizer", tokenizer, "--input", cases);
        Assert.That(code, Is.EqualTo(0), err);
        var lines =
            output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)
            .ToArray();
        Assert.That(lines, Has.Length.EqualTo(2));
        var first = lines[0];
        Assert.That(first.GetProperty("id").GetInt32(), Is.EqualTo(1));
        Assert.That(first.GetProperty("compile_error").ValueKind, Is.EqualTo(JsonValueKind.Null));
        var instances = first.GetProperty("instances").EnumerateArray().ToArray();
        Assert.That(instances[0].GetProperty("accepted").GetBoolean()
            && instances[0].GetProperty("complete").GetBoolean(), Is.True);
        Assert.That(instances[0].GetProperty("mask_us").GetArrayLength(),
            Is.EqualTo(instances[0].GetProperty("tokens").GetInt32() + 1));
        Assert.That(instances[1].GetProperty("accepted").GetBoolean(), Is.False);
        Assert.That(instances[2].GetProperty("accepted").GetBoolean(), Is.True);
        Assert.That(instances[2].GetProperty("complete").GetBoolean(), Is.False);
        Assert.That(lines[1].GetProperty("compile_error").GetString(), Does.Contain("uniqueItems"));
        Assert.That(err, Does.Contain("passing: 1").And.Contain("invalid instances accepted: 0"));
    }
}
