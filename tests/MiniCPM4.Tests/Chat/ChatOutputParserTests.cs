using MiniCPM4.Chat;
using NUnit.Framework;

namespace MiniCPM4.Tests.Chat;

[TestFixture]
public class ChatOutputParserTests
{
    private static readonly ChatOutputFormat Think = new() { ThinkTags = true };

    /// <summary>Parses the text whole and again one character at a time; both must agree.</summary>
    private static (string Text, string? Reasoning, IReadOnlyList<ChatToolCall> Calls) Parse(string text,
        ChatOutputFormat format, bool startInReasoning = false)
    {
        var whole = ChatOutputParser.ParseAll(text, format, startInReasoning);
        var parser = new ChatOutputParser(format, startInReasoning);
        var segments = new List<ChatOutputSegment>();
        foreach (char c in text) segments.AddRange(parser.Push(c.ToString()));
        segments.AddRange(parser.Flush());
        Assert.That(string.Concat(segments.Where(s => s.Kind == ChatOutputKind.Text).Select(s => s.Text)),
            Is.EqualTo(whole.Text));
        Assert.That(
            segments.Where(s => s.Kind == ChatOutputKind.Reasoning).Select(s => s.Text).DefaultIfEmpty().Aggregate(
            (a, b) => a + b),
            Is.EqualTo(whole.Reasoning));
        Assert.That(
            segments.Where(s => s.Kind == ChatOutputKind.ToolCalls).SelectMany(s => s.Calls!).Select(c => c.Name),
            Is.EqualTo(whole.Calls.Select(c => c.Name)));
        return whole;
    }

    [Test]
    public void ThinkBlocksBecomeReasoning()
    {
        var (text, reasoning, calls) = Parse("<think>\nTwo and two.\n</think>\n\nThe answer is 4.", Think);
        Assert.That((text, reasoning, calls.Count), Is.EqualTo(("The answer is 4.", "Two and two.", 0)));
    }

    [Test]
    public void ThinkTagsAreTextWhenTheTemplateDoesNotUseThem()
    {
        var (text, reasoning, _) = Parse("<think>x</think>y", ChatOutputFormat.MiniCpm4);
        Assert.That((text, reasoning), Is.EqualTo(("<think>x</think>y", (string?)null)));
    }

    [Test]
    public void APromptThatOpenedThinkStartsInReasoning()
    {
        var (text, reasoning, _) = Parse("Let me see.\n</think>\n\n4.", Think, startInReasoning: true);
        Assert.That((text, reasoning), Is.EqualTo(("4.", "Let me see.")));
    }

    [Test]
    public void McpBlockWithThought()
    {
        var (text, reasoning, calls) = Parse(
            "<|thought_start|>\nNeed " +
                "weather.\n<|thought_end|>\n<|tool_call_start|>\n```python\nget_weather(city=\"Paris\", " +
                    "days=2)\nsearch(q='x')\n```\n<|tool_call_end|>\nDone.",
            Think);
        Assert.That((text, reasoning), Is.EqualTo(("Done.", "Need weather.")));
        Assert.That(calls.Select(c => c.Name), Is.EqualTo(new[] { "get_weather", "search" }));
        Assert.That(calls[0].Arguments["days"], Is.EqualTo(2L));
    }

    [Test]
    public void HermesJsonCalls()
    {
        var format = new ChatOutputFormat { ToolCalls = ToolCallSyntax.HermesJson, ThinkTags = true };
        var (text, reasoning, calls) = Parse(
            "<think>\nplan\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": " +
                "\"Paris\", \"n\": 1.5}}\n</tool_call>\n<tool_call>\n{\"name\": \"search\", \"arguments\": " +
                    "\"{\\\"q\\\": \\\"x\\\"}\"}\n</tool_call>",
            format);
        Assert.That((text, reasoning), Is.EqualTo(("", "plan")));
        Assert.That(calls.Select(c => c.Name), Is.EqualTo(new[] { "get_weather", "search" }));
        Assert.That(calls[0].Arguments["n"], Is.EqualTo(1.5));
        Assert.That(calls[1].Arguments["q"], Is.EqualTo("x"));
    }

    [Test]
    public void ToolCallTokenCallsEndAtTheirCloserTheNextCallOrTheEnd()
    {
        var format = new ChatOutputFormat { ToolCalls = ToolCallSyntax.ToolCallToken };
        var (text, _, calls) = Parse(
            "<|tool_call|>{\"name\": \"a\", \"arguments\": {\"x\": 1}}<|/tool_call|><|tool_call|>{\"name\": \"b\", " +
                "\"arguments\": {}}<|tool_call|>c(y=2)",
            format);
        Assert.That(text, Is.Empty);
        Assert.That(calls.Select(c => c.Name), Is.EqualTo(new[] { "a", "b", "c" }));
        Assert.That(calls[2].Arguments["y"], Is.EqualTo(2L));
    }

    [Test]
    public void ABlockThatDoesNotParseStaysText()
    {
        var (text, _, calls) =
            Parse("Hi <tool_call>not json</tool_call>!",
            new ChatOutputFormat { ToolCalls = ToolCallSyntax.HermesJson });
        Assert.That(text, Is.EqualTo("Hi <tool_call>not json</tool_call>!"));
        Assert.That(calls, Is.Empty);
        (text, _, calls) = Parse("<|tool_call_start|>\nrm -rf /\n<|tool_call_end|>", ChatOutputFormat.MiniCpm4);
        Assert.That(text, Is.EqualTo("<|tool_call_start|>\nrm -rf /\n<|tool_call_end|>"));
        Assert.That(calls, Is.Empty);
    }
}
