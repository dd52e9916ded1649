using System.Text;
using Microsoft.Extensions.AI;
using MiniCPM4.Chat;

namespace MiniCPM4.AI;

/// <summary>
/// Reads MiniCPM4 (MiniCPM4-MCP) function calls out of generated text. The format is an optional thought block
/// <c>&lt;|thought_start|&gt;\n…\n&lt;|thought_end|&gt;\n</c>, then
/// <c>&lt;|tool_call_start|&gt;\n```python\nname(arg1="text", arg2=5)\n```\n&lt;|tool_call_end|&gt;\n</c> with one or
/// more call lines. Argument values are Python literals, read by a small parser (never evaluated). A block that does
/// not parse stays in the text as it was.
/// </summary>
public static class MiniCpmToolCallParser
{
    /// <summary>Opens a thought block.</summary>
    public const string ThoughtStart = "<|thought_start|>";
    /// <summary>Closes a thought block.</summary>
    public const string ThoughtEnd = "<|thought_end|>";
    /// <summary>Opens a tool-call block.</summary>
    public const string ToolCallStart = "<|tool_call_start|>";
    /// <summary>Closes a tool-call block.</summary>
    public const string ToolCallEnd = "<|tool_call_end|>";

    /// <summary>
    /// Splits a complete generation into its plain text (tool-call blocks and thought blocks removed), its thought
    /// text (null when there was no thought block) and the calls, each with a fresh <c>CallId</c>.
    /// </summary>
    public static (string Text, string? Thought, IReadOnlyList<FunctionCallContent> Calls) Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var filter = new ToolCallStreamFilter();
        var segments = filter.Push(text);
        segments.AddRange(filter.Flush());
        var plain = new StringBuilder();
        StringBuilder? thought = null;
        var calls = new List<FunctionCallContent>();
        foreach (var s in segments)
        {
            switch (s.Kind)
            {
                case SegmentKind.Text: plain.Append(s.Text); break;
                case SegmentKind.Reasoning: (thought ??= new StringBuilder()).Append(s.Text); break;
                case SegmentKind.Calls: calls.AddRange(s.Calls!); break;
            }
        }
        return (plain.ToString(), thought?.ToString(), calls);
    }

    /// <summary>
    /// Parses the inside of a tool-call block (with or without the <c>```python</c> fence): one or more
    /// <c>name(key=literal, …)</c> calls separated by line breaks or ';'. False when anything does not parse.
    /// </summary>
    internal static bool TryParseBlock(string block, out List<FunctionCallContent> calls)
    {
        bool ok = ChatOutputParser.TryParsePythonCalls(block, out var parsed);
        calls = ok ? parsed.Select(ToContent).ToList() : [];
        return ok;
    }

    /// <summary>A parsed call as <see cref="FunctionCallContent"/> with a fresh <c>CallId</c>.</summary>
    internal static FunctionCallContent ToContent(ChatToolCall call) =>
        new(NewCallId(), call.Name, call.Arguments.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal));

    internal static string NewCallId() => "call_" + Guid.NewGuid().ToString("N")[..16];

    /// <summary>Renders calls in MiniCPM4's tool-call block (the inverse of <see cref="Parse"/>).</summary>
    internal static void FormatCalls(StringBuilder sb, IEnumerable<FunctionCallContent> calls)
    {
        sb.Append(ToolCallStart).Append("\n```python\n");
        foreach (var call in calls)
        {
            sb.Append(call.Name).Append('(');
            bool first = true;
            foreach (var (key, value) in call.Arguments ?? new Dictionary<string, object?>())
            {
                if (!first) sb.Append(", ");
                first = false;
                sb.Append(key).Append('=');
                PythonLiteralWriter.Write(sb, value);
            }
            sb.Append(")\n");
        }
        sb.Append("```\n").Append(ToolCallEnd).Append('\n');
    }
}

internal enum SegmentKind { Text, Reasoning, Calls }

internal readonly record struct Segment(SegmentKind Kind, string Text, List<FunctionCallContent>? Calls = null);

/// <summary>
/// Splits streamed text into plain text, reasoning and parsed tool calls (<see cref="ChatOutputParser"/>, in the format
/// the chat template implies), with calls as <see cref="FunctionCallContent"/>.
/// </summary>
internal sealed class ToolCallStreamFilter(ChatOutputFormat? format = null, bool startInReasoning = false)
{
    private readonly ChatOutputParser _parser = new(format, startInReasoning);

    public bool ProducedCalls => _parser.ProducedCalls;

    public List<Segment> Push(string text) => Convert(_parser.Push(text));

    /// <summary>Releases what is held at the end of the generation; an unclosed tool-call block is plain
    /// text.</summary>
    public List<Segment> Flush() => Convert(_parser.Flush());

    private static List<Segment> Convert(List<ChatOutputSegment> segments) => segments.Select(s => s.Kind switch
    {
        ChatOutputKind.Text => new Segment(SegmentKind.Text, s.Text),
        ChatOutputKind.Reasoning => new Segment(SegmentKind.Reasoning, s.Text),
        _ => new Segment(SegmentKind.Calls, "", s.Calls!.Select(MiniCpmToolCallParser.ToContent).ToList()),
    }).ToList();
}
