using Microsoft.Extensions.AI;
using NUnit.Framework;

namespace MiniCPM4.AI.Tests;

[TestFixture]
public class ToolCallParserTests
{
    private const string Start = "<|tool_call_start|>\n```python\n";
    private const string End = "\n```\n<|tool_call_end|>\n";

    [Test]
    public void SingleCall()
    {
        var (text, thought, calls) = MiniCpmToolCallParser.Parse(Start + "get_weather(city=\"Paris\", days=3)" + End);
        Assert.That(text, Is.Empty);
        Assert.That(thought, Is.Null);
        Assert.That(calls, Has.Count.EqualTo(1));
        Assert.That(calls[0].Name, Is.EqualTo("get_weather"));
        Assert.That(calls[0].CallId, Is.Not.Empty);
        Assert.That(calls[0].Arguments!["city"], Is.EqualTo("Paris"));
        Assert.That(calls[0].Arguments!["days"], Is.EqualTo(3L));
    }

    [Test]
    public void MultipleCallsInOneBlockAndTextAround()
    {
        var (text, _, calls) = MiniCpmToolCallParser.Parse(
            "Let me check.\n" + Start + "add(a=1, b=2)\nmultiply(x=1.5, y=-2e3)" + End + "Done.");
        Assert.That(text, Is.EqualTo("Let me check.\nDone."));
        Assert.That(calls.Select(c => c.Name), Is.EqualTo(new[] { "add", "multiply" }));
        Assert.That(calls[1].Arguments!["x"], Is.EqualTo(1.5));
        Assert.That(calls[1].Arguments!["y"], Is.EqualTo(-2000.0));
        Assert.That(calls[0].CallId, Is.Not.EqualTo(calls[1].CallId));
    }

    [Test]
    public void TwoBlocks()
    {
        var (_, _, calls) = MiniCpmToolCallParser.Parse(Start + "a()" + End + Start + "b(k=None)" + End);
        Assert.That(calls.Select(c => c.Name), Is.EqualTo(new[] { "a", "b" }));
        Assert.That(calls[1].Arguments!["k"], Is.Null);
    }

    [Test]
    public void ThoughtBlock()
    {
        var (text, thought, calls) = MiniCpmToolCallParser.Parse(
            "<|thought_start|>\nThe user wants the time.\n<|thought_end|>\n" + Start + "get_time(zone='UTC')" + End);
        Assert.That(thought, Is.EqualTo("The user wants the time."));
        Assert.That(text, Is.Empty);
        Assert.That(calls.Single().Arguments!["zone"], Is.EqualTo("UTC"));
    }

    [Test]
    public void NestedLiterals()
    {
        var (_, _, calls) = MiniCpmToolCallParser.Parse(
            Start + "f(items=[1, 'two', [3.0, None]], opts={'deep': {'flag': True, 'off': False}, 'n': (1, 2)}, " +
                "s=r'a\\b')" + End);
        var args = calls.Single().Arguments!;
        var items = (List<object?>)args["items"]!;
        Assert.That(items[0], Is.EqualTo(1L));
        Assert.That(items[1], Is.EqualTo("two"));
        Assert.That((List<object?>)items[2]!, Is.EqualTo(new object?[] { 3.0, null }));
        var opts = (Dictionary<string, object?>)args["opts"]!;
        var deep = (Dictionary<string, object?>)opts["deep"]!;
        Assert.That(deep["flag"], Is.EqualTo(true));
        Assert.That(deep["off"], Is.EqualTo(false));
        Assert.That((List<object?>)opts["n"]!, Is.EqualTo(new object?[] { 1L, 2L }));
        Assert.That(args["s"], Is.EqualTo("a\\b"));
    }

    [Test]
    public void StringEscapes()
    {
        var (_, _, calls) = MiniCpmToolCallParser.Parse(
            Start + "say(text=\"line1\\nline2 \\\"quoted\\\" \\u00e9\\t\\\\\", other='it\\'s', tri=\"\"\"a\nb\"\"\")"
                + End);
        var args = calls.Single().Arguments!;
        Assert.That(args["text"], Is.EqualTo("line1\nline2 \"quoted\" é\t\\"));
        Assert.That(args["other"], Is.EqualTo("it's"));
        Assert.That(args["tri"], Is.EqualTo("a\nb"));
    }

    [TestCase("get_weather(city=")]
    [TestCase("get_weather(\"Paris\")")]
    [TestCase("import os; os.system('rm -rf /')")]
    [TestCase("f(x=__import__('os'))")]
    [TestCase("f(x=1) trailing")]
    public void MalformedBlockStaysText(string body)
    {
        var raw = "<|tool_call_start|>\n```python\n" + body + "\n```\n<|tool_call_end|>";
        var (text, _, calls) = MiniCpmToolCallParser.Parse("before " + raw + " after");
        Assert.That(calls, Is.Empty);
        Assert.That(text, Is.EqualTo("before " + raw + " after"));
    }

    [Test]
    public void UnclosedBlockStaysText()
    {
        var raw = "Hi <|tool_call_start|>\n```python\nf(a=1)\n";
        var (text, _, calls) = MiniCpmToolCallParser.Parse(raw);
        Assert.That(calls, Is.Empty);
        Assert.That(text, Is.EqualTo(raw));
    }

    [Test]
    public void StreamingInTinyPiecesGivesTheSameResult()
    {
        var full = "Sure.<|thought_start|>\nthink\n<|thought_end|>\n" + Start + "add(a=2, b=3)" + End + "<|tool_ca";
        var filter = new ToolCallStreamFilter();
        var segments = new List<Segment>();
        foreach (char c in full) segments.AddRange(filter.Push(c.ToString()));
        segments.AddRange(filter.Flush());
        Assert.That(string.Concat(segments.Where(s => s.Kind == SegmentKind.Text).Select(s => s.Text)),
            Is.EqualTo("Sure.<|tool_ca"));
        Assert.That(string.Concat(segments.Where(s => s.Kind == SegmentKind.Reasoning).Select(s => s.Text)),
            Is.EqualTo("think"));
        var call = segments.Single(s => s.Kind == SegmentKind.Calls).Calls!.Single();
        Assert.That(call.Name, Is.EqualTo("add"));
        Assert.That(filter.ProducedCalls, Is.True);
    }

    [Test]
    public void FormatterRendersCallsAndResultsBack()
    {
        var call =
            new FunctionCallContent("c1", "add", new Dictionary<string,
            object?> { ["a"] = 2, ["s"] = "x\"y", ["l"] = new[] { 1, 2 } });
        var prompt = MiniCpmPromptFormatter.Format(
        [
            new ChatMessage(ChatRole.User, "2+3?"),
            new ChatMessage(ChatRole.Assistant, [call]),
            new ChatMessage(ChatRole.Tool, [new FunctionResultContent("c1", 5)]),
        ]);
        Assert.That(prompt,
            Does.Contain(
            "<|im_start|>assistant\n<|tool_call_start|>\n```python\nadd(a=2, s=\"x\\\"y\", l=[1, " +
            "2])\n```\n<|tool_call_end|>\n<|im_end|>\n"));
        Assert.That(prompt, Does.Contain("<|im_start|>tool\n5<|im_end|>\n"));
        Assert.That(prompt, Does.EndWith("<|im_start|>assistant\n"));
        // What the formatter writes, the parser reads back.
        var block = prompt[prompt.IndexOf("<|tool_call_start|>", StringComparison.Ordinal)..];
        var parsed =
            MiniCpmToolCallParser.Parse(block[..(block.IndexOf("<|tool_call_end|>", StringComparison.Ordinal) + 17)])
            .Calls.Single();
        Assert.That(parsed.Arguments!["s"], Is.EqualTo("x\"y"));
    }

    [Test]
    public void InstructionsAndToolsGoIntoTheSystemTurn()
    {
        var tool = AIFunctionFactory.Create((int a, int b) => a + b, "add", "Adds two numbers.");
        var prompt = MiniCpmPromptFormatter.Format(
            [new ChatMessage(ChatRole.System, "You are helpful."), new ChatMessage(ChatRole.User, "hi")],
            new ChatOptions { Instructions = "Be terse.", Tools = [tool] });
        Assert.That(prompt, Does.StartWith("<|im_start|>system\nYou are helpful.\n\nBe terse.\n\n# Tools"));
        Assert.That(prompt, Does.Contain("\"name\":\"add\""));
        Assert.That(prompt, Does.Contain("Adds two numbers."));
        Assert.That(prompt, Does.Contain("<|tool_call_start|>"));
        Assert.That(prompt.Split("<|im_start|>system").Length, Is.EqualTo(2), "one system turn");
        Assert.That(prompt, Does.EndWith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
    }
}
