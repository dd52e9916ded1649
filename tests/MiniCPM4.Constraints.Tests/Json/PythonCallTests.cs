using System.Text;
using MiniCPM4.Constraints.Grammars;
using MiniCPM4.Constraints.Json;
using NUnit.Framework;

namespace MiniCPM4.Constraints.Tests.Json;

/// <summary>JsonSchemaOptions.PythonCall: tool arguments as a Python keyword-argument call, MiniCPM4's tool-call
/// syntax.</summary>
public class PythonCallTests
{
    private const string Weather = """
        {"type":"object","properties":{"location":{"type":"string"},"days":{"type":"integer","minimum":1,"maximum":7},
         "metric":{"type":"boolean"},"extra":{"type":["object","null"]}},"required":["location"]}
        """;

    private static bool Accepts(Grammar g, string text) => GrammarMatcher.Accepts(g, Encoding.UTF8.GetBytes(text));

    [Test]
    public void ArgumentsAreKeywordsWithPythonLiterals()
    {
        var g = JsonSchemaCompiler.Compile(Weather, new JsonSchemaOptions { PythonCall = "get_weather" });
        Assert.That(Accepts(g, "get_weather(location=\"Paris\")"), Is.True);
        Assert.That(Accepts(g, "get_weather(location=\"Paris\", days=3, metric=True, extra=None)"), Is.True);
        Assert.That(Accepts(g, "get_weather(location=\"Paris\", extra={\"a\": [False, None, 1.5]})"), Is.True);
        Assert.That(Accepts(g, "get_weather(days=3)"), Is.False, "location is required");
        Assert.That(Accepts(g, "get_weather(location=\"Paris\", days=9)"), Is.False, "days <= 7");
        Assert.That(Accepts(g, "get_weather(location=\"Paris\", metric=true)"), Is.False, "JSON's true is not Python");
        Assert.That(Accepts(g, "get_weather(location=\"Paris\", other=1)"), Is.False,
            "undeclared arguments are not written");
        Assert.That(Accepts(g, "get_time(location=\"Paris\")"), Is.False);
        Assert.That(Accepts(g, "{\"location\": \"Paris\"}"), Is.False);
    }

    [Test]
    public void NonIdentifiersAndNonObjectsFail()
    {
        Assert.Throws<ConstraintCompileException>(() =>
            JsonSchemaCompiler.Compile("""{"type":"object","properties":{"a-b":{}}}""",
                new JsonSchemaOptions { PythonCall = "f" }));
        Assert.Throws<ConstraintCompileException>(() =>
            JsonSchemaCompiler.Compile("""{"type":"string"}""", new JsonSchemaOptions { PythonCall = "f" }));
        Assert.Throws<ConstraintCompileException>(() =>
            JsonSchemaCompiler.Compile("""{"type":"object"}""", new JsonSchemaOptions { PythonCall = "not valid" }));
    }
}

/// <summary>OutputConstraint.JsonSchemaDeclaredProperties: declared properties only, unless that is
/// unsatisfiable.</summary>
public class DeclaredPropertiesTests
{
    [Test]
    public void UndeclaredPropertiesAreLeftOutUnlessNothingWouldRemain()
    {
        var closed =
            OutputConstraint.JsonSchemaDeclaredProperties(
            """{"type":"object","properties":{"a":{"type":"integer"}}}""");
        Assert.That(closed.Accepts("{\"a\": 1}"), Is.True);
        Assert.That(closed.Accepts("{\"a\": 1, \"b\": 2}"), Is.False);
        // "a" is declared only inside allOf, so closing the root object would forbid the required "a".
        const string split =
            """{"type":"object","properties":{"b":{}},"allOf":[{"properties":{"a":{}},"required":["a"]}]}""";
        var e = Assert.Throws<ConstraintCompileException>(() =>
            OutputConstraint.JsonSchema(split, new JsonSchemaOptions { AllowUndeclaredProperties = false }));
        Assert.That(e!.Unsatisfiable, Is.True);
        Assert.That(OutputConstraint.JsonSchemaDeclaredProperties(split).Accepts("{\"a\": 1}"), Is.True);
    }
}
