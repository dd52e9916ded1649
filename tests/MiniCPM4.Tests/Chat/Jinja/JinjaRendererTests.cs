using System.Diagnostics;
using System.Text.Json;
using MiniCPM4.Chat.Jinja;
using NUnit.Framework;

namespace MiniCPM4.Tests.Chat.Jinja;

/// <summary>Renderer behaviour the corpus does not pin down: errors, limits, Undefined, and fuzzed input.</summary>
[TestFixture]
public class JinjaRendererTests
{
    private static string Render(string template, object? vars = null, JinjaRenderOptions? options = null)
    {
        var variables = vars is null
            ? new Dictionary<string, object?>()
            : JsonSerializer.Deserialize<Dictionary<string,
                JsonElement>>(vars as string ?? JsonSerializer.Serialize(vars))!
                .ToDictionary(kv => kv.Key, kv => (object?)kv.Value);
        return JinjaTemplate.Parse(template).Render(variables, options);
    }

    [Test]
    public void RaiseExceptionIsATypedErrorWithTheTemplatesMessage()
    {
        const string template =
            "{% for m in messages %}\n{% if m.role == 'tool' %}{{ raise_exception('Tool role \"' ~ m.role ~ '\" is " +
            "not supported') }}{% endif %}{% endfor %}";
        var e = Assert.Throws<TemplateRaisedException>(() =>
            Render(template, new { messages = new[] { new { role = "tool" } } }))!;
        Assert.That(e.Message, Is.EqualTo("Tool role \"tool\" is not supported"));
        Assert.That(e.Line, Is.EqualTo(2));
    }

    [TestCase("{% for x in y %}", 1, 1, "never closed")]
    [TestCase("a\n  {% frobnicate %}", 2, 6, "unknown tag 'frobnicate'")]
    [TestCase("{% include 'x.jinja' %}", 1, 4, "'include' tag is not supported")]
    [TestCase("{% extends 'base' %}", 1, 4, "'extends' tag is not supported")]
    [TestCase("{{ x | no_such_filter }}", 1, 8, "no filter named 'no_such_filter'")]
    [TestCase("{{ x is no_such_test }}", 1, 9, "no test named 'no_such_test'")]
    [TestCase("line1\nline2 {{ 1 + }}", 2, 14, "unexpected '}}'")]
    [TestCase("{{ 'unterminated }}", 1, 4, "unterminated string")]
    [TestCase("{% for x in y recursive %}{% endfor %}", 1, 15, "recursive loops are not supported")]
    [TestCase("{% break %}", 1, 4, "'break' outside a loop")]
    [TestCase("{# never closed", 1, 1, "missing end of comment")]
    [TestCase("{{ (1 }}", 1, 7, "unexpected '}'")]
    public void UnsupportedOrInvalidTemplatesFailWhenParsedWithLineAndColumn(string template, int line, int column,
        string reason)
    {
        var e = Assert.Throws<TemplateSyntaxException>(() => JinjaTemplate.Parse(template))!;
        Assert.That(e.Reason, Does.Contain(reason));
        Assert.That((e.Line, e.Column), Is.EqualTo((line, column)), e.Message);
        Assert.That(e.Message, Does.Contain($"line {line}, column {column}"));
    }

    [Test]
    public void AnUnknownFilterInsideAnIfFailsOnlyWhenReached()
    {
        // Jinja2 compiles unknown filters in if-statements and conditional expressions and fails when they run.
        var template = JinjaTemplate.Parse("{% if x %}{{ x | from_json }}{% endif %}ok");
        Assert.That(template.Render(new Dictionary<string, object?>()), Is.EqualTo("ok"));
        var e = Assert.Throws<TemplateRenderException>(() =>
            template.Render(new Dictionary<string, object?> { ["x"] = "1" }))!;
        Assert.That(e.Reason, Does.Contain("no filter named 'from_json'"));
    }

    [Test]
    public void UndefinedBehavesAsInJinja2()
    {
        Assert.That(
            Render("[{{ missing }}][{{ missing | length }}][{{ missing is defined }}][{{ missing | default('d') " +
            "}}][{% for x in missing %}x{% endfor %}][{{ missing ~ 'a' }}]"),
            Is.EqualTo("[][0][False][d][][a]"));
        Assert.That(
            Render("{{ m.nope is defined }}|{{ m.nope }}|{{ m['nope'] | default('x') }}", new { m = new { a = 1 } }),
            Is.EqualTo("False||x"));
        var e = Assert.Throws<TemplateRenderException>(() => Render("{{ m.nope.deeper }}", new { m = new { a = 1 } }))!;
        Assert.That(e.Reason, Is.EqualTo("'dict object' has no attribute 'nope'"));
        e = Assert.Throws<TemplateRenderException>(() => Render("{{ missing.attr }}"))!;
        Assert.That(e.Reason, Is.EqualTo("'missing' is undefined"));
        Assert.Throws<TemplateRenderException>(() => Render("{{ missing + 1 }}"));
        Assert.Throws<TemplateRenderException>(() => Render("{{ missing | tojson }}"));
        Assert.That(Render("{{ missing == other }}|{{ missing is none }}|{{ none is none }}"),
            Is.EqualTo("True|False|True"));
    }

    [Test]
    public void PythonValuesPrintAsPythonPrintsThem()
    {
        Assert.That(Render("{{ [1, 2.5, 'x', none, true, (1,), {'a': (1, 2)}] }}"),
            Is.EqualTo("[1, 2.5, 'x', None, True, (1,), {'a': (1, 2)}]"));
        Assert.That(
            Render("{{ 1e-5 }} {{ 1e16 }} {{ 1.5e15 }} {{ 0.1 + 0.2 }} {{ 10 / 4 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 " +
            "% 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}"),
            Is.EqualTo("1e-05 1e+16 1500000000000000.0 0.30000000000000004 2.5 3 -4 2 1024 0.5"));
        Assert.That(Render("{{ \"it's\" }} {{ [\"it's\", 'say \"hi\"'] }}"),
            Is.EqualTo("it's [\"it's\", 'say \"hi\"']"));
    }

    [Test]
    public void ToJsonFollowsTransformers()
    {
        const string vars = """{"v": {"name": "Grüße 😀", "n": 1.0, "list": [1, "a\n\"b\""], "empty": {}}}""";
        Assert.That(Render("{{ v | tojson }}", vars),
            Is.EqualTo("{\"name\": \"Grüße 😀\", \"n\": 1.0, \"list\": [1, \"a\\n\\\"b\\\"\"], \"empty\": {}}"));
        Assert.That(Render("{{ v.name | tojson(ensure_ascii=true) }}", vars),
            Is.EqualTo("\"Gr\\u00fc\\u00dfe \\ud83d\\ude00\""));
        Assert.That(Render("{{ v.list | tojson(indent=2) }}", vars), Is.EqualTo("[\n  1,\n  \"a\\n\\\"b\\\"\"\n]"));
        Assert.That(Render("{{ v.list | tojson(separators=(',', ':')) }}", vars), Is.EqualTo("[1,\"a\\n\\\"b\\\"\"]"));
    }

    [Test]
    public void NamespacesLoopsAndMacros()
    {
        const string template =
            "{% set ns = namespace(count=0) %}{% for x in items if x > 1 %}{% set ns.count = ns.count + x %}" +
            "{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %};{{ ns.count }};" +
            "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', " +
                "punct='?') }};" +
            "{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}inner{% endcall %};" +
            "{% for x in items %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x " +
                "}}{% endfor %}";
        Assert.That(Render(template, new { items = new[] { 1, 2, 3, 4, 5 } }),
            Is.EqualTo("1/4,2/4,3/4,4/4;14;Hi a! Hi b?;[inner];13"));
    }

    [Test]
    public void WhitespaceControlAsTransformersConfiguresIt()
    {
        // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it; '-' strips all
        // whitespace on its side, '+' keeps it.
        Assert.That(Render("  {% if true %}\n    a\n  {% endif %}\nb"), Is.EqualTo("    a\nb"));
        Assert.That(Render("x  {%- if true -%}  \n y {%- endif %}"), Is.EqualTo("xy"));
        Assert.That(Render("  {%+ if true %}a{% endif +%}\nb"), Is.EqualTo("  a\nb"));
        Assert.That(Render("a\n  {{ 'v' }}\n"), Is.EqualTo("a\n  v"),
            "variables are not lstripped; one trailing newline is dropped");
        Assert.That(Render("{% raw %}{{ not rendered }}{% endraw %}"), Is.EqualTo("{{ not rendered }}"));
    }

    [Test]
    public void StrftimeNowUsesTheGivenClock()
    {
        var options = new JinjaRenderOptions { Now = new DateTime(2026, 1, 5, 9, 3, 7) };
        Assert.That(
            Render("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%-d %B, %A %H:%M:%S') }}", options: options),
            Is.EqualTo("05 Jan 2026|5 January, Monday 09:03:07"));
    }

    [Test]
    public void ARenderThatNeverEndsStopsAtTheStepLimit()
    {
        var options = new JinjaRenderOptions { MaxSteps = 100_000 };
        var watch = Stopwatch.StartNew();
        Assert.Throws<TemplateLimitException>(() => Render(
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
                options: options));
        Assert.Throws<TemplateLimitException>(() => Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"));
        Assert.Throws<TemplateLimitException>(() => Render("{{ 'x' * 100000000 }}"));
        Assert.Throws<TemplateLimitException>(() => Render(
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s " +
                "| length }}"));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)));
    }

    [Test]
    public void DeepNestingIsASyntaxErrorNotACrash()
    {
        Assert.Throws<TemplateSyntaxException>(() =>
            JinjaTemplate.Parse("{{ " + new string('(', 5000) + "1" + new string(')', 5000) + " }}"));
        Assert.Throws<TemplateSyntaxException>(() =>
            JinjaTemplate.Parse(string.Concat(Enumerable.Repeat("{% if x %}", 5000))));
        Assert.Throws<TemplateSyntaxException>(() =>
            JinjaTemplate.Parse("{{ " + string.Concat(Enumerable.Repeat("not ", 5000)) + "x }}"));
        Assert.Throws<TemplateSyntaxException>(() =>
            JinjaTemplate.Parse("{{ " + string.Concat(Enumerable.Repeat("-", 5000)) + "x }}"));
    }

    [Test]
    public void ASelfContainingNamespaceFailsInsteadOfOverflowingTheStack()
    {
        Assert.Throws<TemplateLimitException>(() => Render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"));
    }

    /// <summary>
    /// Random edits of the corpus templates (deleted, duplicated and inserted characters and Jinja fragments), rendered
    /// over a corpus conversation: every outcome is a result or a TemplateException, never another exception, a
    /// renderer defect ("internal error"), a crash or a hang.
    /// </summary>
    [Test]
    public void FuzzedTemplatesNeverCrashOrHang()
    {
        var spec = ChatTemplateCorpus.LoadSpec();
        var sources = ChatTemplateCorpus.TemplateNames().Select(ChatTemplateCorpus.TemplateSource).ToList();
        string[] fragments =
        [
            "{%", "%}", "{{", "}}", "{#", "#}", "{%-", "-%}", "(", ")", "[", "]", "{", "}", "'", "\"", "|", ".", ",",
                ":",
            " if ", " else ", " for ", " in ", " not ", " is ", " and ", " or ", "{% endfor %}", "{% endif %}",
                "{% else %}",
            "{% for x in messages %}", "{% if loop.last %}", "{{ x }}", "| tojson", "| length", "| join(',')",
                "* 999999",
            "range(99999)", "loop.index", "messages[-1]", "ns.x", "{% set ns = namespace(x=1) %}", "caller()", "~",
                "**",
            "{% macro m(a) %}{{ m(a) }}{% endmacro %}{{ m(1) }}", "{% break %}", "{% continue %}", "\n", "  ",
        ];
        var rng = new Random(20260115);
        var options = new JinjaRenderOptions { MaxSteps = 200_000, MaxOutputLength = 1 << 20, Now = spec.Now };
        int parsed = 0, rendered = 0, iterations = 1500;
        var watch = Stopwatch.StartNew();
        for (int n = 0; n < iterations; n++)
        {
            var text = new System.Text.StringBuilder(sources[rng.Next(sources.Count)]);
            int edits = 1 + rng.Next(6);
            for (int e = 0; e < edits && text.Length > 0; e++)
            {
                int at = rng.Next(text.Length);
                switch (rng.Next(4))
                {
                    case 0: text.Remove(at, Math.Min(1 + rng.Next(8), text.Length - at)); break;
                    case 1: text.Insert(at, fragments[rng.Next(fragments.Length)]); break;
                    case 2: text.Insert(at, text.ToString(at, Math.Min(1 + rng.Next(40), text.Length - at))); break;
                    default: text[at] = (char)rng.Next(32, 127); break;
                }
            }
            var c = spec.Cases[rng.Next(spec.Cases.Count)];
            try
            {
                var template = JinjaTemplate.Parse(text.ToString());
                parsed++;
                template.Render(ChatTemplateCorpus.Variables(spec, c), options);
                rendered++;
            }
            catch (TemplateException e)
            {
                Assert.That(e.Message, Does.Not.StartWith("internal error"), $"renderer defect on:\n{text}");
            }
        }
        TestContext.Out.WriteLine(
            $"{iterations} fuzzed templates: {parsed} parsed, {rendered} rendered, {watch.Elapsed.TotalSeconds:F1} s");
        Assert.That(parsed, Is.GreaterThan(iterations / 10),
            "the fuzzer should reach the renderer, not only the parser");
    }
}
