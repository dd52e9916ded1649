using System.Text.Json;
using MiniCPM4.Chat.Jinja;
using NUnit.Framework;

namespace MiniCPM4.Tests.Chat.Jinja;

/// <summary>
/// The committed corpus: real chat templates (TestData/ChatTemplates/templates, sources in SOURCES.md), the fixed
/// conversations of cases.json, and what Python's Jinja2 rendered for each pair (expected/, made by
/// render_expected.py; Python is not needed to run the tests).
/// </summary>
internal static class ChatTemplateCorpus
{
    public static string Root => Path.Combine(TestContext.CurrentContext.TestDirectory, "TestData", "ChatTemplates");

    public static IEnumerable<string> TemplateNames()
    {
        var dir = Path.Combine(AppContext.BaseDirectory, "TestData", "ChatTemplates", "templates");
        return Directory.GetFiles(dir, "*.jinja").Select(p => Path.GetFileNameWithoutExtension(p)).Order(
            StringComparer.Ordinal);
    }

    public static string TemplatePath(string name) => Path.Combine(Root, "templates", name + ".jinja");

    public static string TemplateSource(string name) => File.ReadAllText(TemplatePath(name));

    public sealed record Case(string Name, JsonElement Messages, JsonElement? Tools, bool AddGenerationPrompt,
        JsonElement? Kwargs);

    public sealed record Spec(string BosToken, string EosToken, DateTime Now, List<Case> Cases);

    public static Spec LoadSpec()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "cases.json")));
        var root = doc.RootElement;
        var cases = new List<Case>();
        foreach (var c in root.GetProperty("cases").EnumerateArray())
        {
            cases.Add(new Case(
                c.GetProperty("name").GetString()!,
                c.GetProperty("messages").Clone(),
                c.TryGetProperty("tools", out var tools) ? tools.Clone() : null,
                c.GetProperty("add_generation_prompt").GetBoolean(),
                c.TryGetProperty("kwargs", out var kwargs) ? kwargs.Clone() : null));
        }
        return new Spec(root.GetProperty("bos_token").GetString()!, root.GetProperty("eos_token").GetString()!,
            DateTime.Parse(root.GetProperty("now").GetString()!, System.Globalization.CultureInfo.InvariantCulture),
                cases);
    }

    /// <summary>The variables transformers passes for a case (tools and documents are None when absent).</summary>
    public static Dictionary<string, object?> Variables(Spec spec, Case c)
    {
        var variables = new Dictionary<string, object?>
        {
            ["messages"] = c.Messages,
            ["tools"] = c.Tools,
            ["documents"] = null,
            ["add_generation_prompt"] = c.AddGenerationPrompt,
            ["bos_token"] = spec.BosToken,
            ["eos_token"] = spec.EosToken,
        };
        if (c.Kwargs is { } kwargs)
            foreach (var p in kwargs.EnumerateObject()) variables[p.Name] = p.Value.Clone();
        return variables;
    }

    public sealed record Expected(string? Output, string? Error, string? Message);

    public static Dictionary<string, Expected> LoadExpected(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "expected", name + ".json")));
        var result = new Dictionary<string, Expected>(StringComparer.Ordinal);
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            var v = p.Value;
            result[p.Name] = new Expected(
                v.TryGetProperty("output", out var o) ? o.GetString() : null,
                v.TryGetProperty("error", out var e) ? e.GetString() : null,
                v.TryGetProperty("message", out var m) ? m.GetString() : null);
        }
        return result;
    }

    private static readonly JsonSerializerOptions Readable =
        new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The first position where two strings differ, with context, for failure messages.</summary>
    public static string Difference(string expected, string actual)
    {
        int i = 0;
        while (i < expected.Length && i < actual.Length && expected[i] == actual[i]) i++;
        int from = Math.Max(0, i - 40);
        string Excerpt(string s) =>
            JsonSerializer.Serialize(s.Substring(Math.Min(from, s.Length), Math.Min(100, Math.Max(0, s.Length - from))),
            Readable);
        return $"first difference at {i} (expected length {expected.Length}, actual {actual.Length}):\n  expected " +
            $"…{Excerpt(expected)}\n  actual   …{Excerpt(actual)}";
    }
}
