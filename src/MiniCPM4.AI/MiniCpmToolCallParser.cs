using System.Text;
using Microsoft.Extensions.AI;

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
        calls = [];
        var body = block.Trim();
        if (body.StartsWith("```", StringComparison.Ordinal))
        {
            int eol = body.IndexOf('\n');
            if (eol < 0) return false;
            var lang = body[3..eol].Trim();
            if (lang.Length > 0 && !lang.Equals("python", StringComparison.OrdinalIgnoreCase) &&
                !lang.Equals("py", StringComparison.OrdinalIgnoreCase)) return false;
            body = body[(eol + 1)..];
            int close = body.LastIndexOf("```", StringComparison.Ordinal);
            if (close < 0) return false;
            if (body[(close + 3)..].Trim().Length > 0) return false;
            body = body[..close];
        }
        try
        {
            var reader = new PythonLiteralReader(body);
            while (true)
            {
                reader.SkipSpace();
                while (reader.Peek() == ';') reader.TryConsume(';');
                if (reader.AtEnd) break;
                var name = reader.ReadName() ?? throw new FormatException("expected a function name");
                if (!reader.TryConsume('(')) throw new FormatException("expected '('");
                var args = new Dictionary<string, object?>();
                while (!reader.TryConsume(')'))
                {
                    var key = reader.ReadName() ?? throw new FormatException("expected a keyword argument");
                    if (!reader.TryConsume('=')) throw new FormatException("positional arguments are not supported");
                    args[key] = reader.ReadValue();
                    if (reader.TryConsume(',')) continue;
                    if (reader.TryConsume(')')) break;
                    throw new FormatException("expected ',' or ')'");
                }
                calls.Add(new FunctionCallContent(NewCallId(), name, args));
                reader.SkipSpace(newlines: false);
                if (!reader.AtEnd && reader.PeekRaw() is not ('\n' or ';'))
                    throw new FormatException("unexpected text after a call");
            }
            return calls.Count > 0;
        }
        catch (FormatException)
        {
            calls = [];
            return false;
        }
    }

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
/// Splits streamed text into plain text, thought text and parsed tool calls. Text that may be the start of a marker
/// is held back until the next piece decides; a tool-call block is held back whole until it closes.
/// </summary>
internal sealed class ToolCallStreamFilter
{
    private enum State { Normal, Thought, ToolCall }

    private static readonly string[] NormalMarkers = [MiniCpmToolCallParser.ThoughtStart, MiniCpmToolCallParser.ToolCallStart];
    private static readonly string[] ThoughtMarkers = ["\n" + MiniCpmToolCallParser.ThoughtEnd, MiniCpmToolCallParser.ThoughtEnd];

    private State _state = State.Normal;
    private string _buffer = "";
    private bool _skipNewline;

    public bool ProducedCalls { get; private set; }

    public List<Segment> Push(string text)
    {
        var output = new List<Segment>();
        _buffer += text;
        while (true)
        {
            if (_skipNewline && _buffer.Length > 0)
            {
                if (_buffer[0] == '\n') _buffer = _buffer[1..];
                _skipNewline = false;
            }
            switch (_state)
            {
                case State.Normal:
                {
                    int at = IndexOfAny(_buffer, NormalMarkers, out var marker);
                    if (at >= 0)
                    {
                        Emit(output, SegmentKind.Text, _buffer[..at]);
                        _buffer = _buffer[(at + marker!.Length)..];
                        _state = marker == MiniCpmToolCallParser.ThoughtStart ? State.Thought : State.ToolCall;
                        _skipNewline = _state == State.Thought;
                        continue;
                    }
                    int hold = HeldSuffix(_buffer, NormalMarkers);
                    Emit(output, SegmentKind.Text, _buffer[..^hold]);
                    _buffer = _buffer[^hold..];
                    return output;
                }
                case State.Thought:
                {
                    int at = IndexOfAny(_buffer, ThoughtMarkers, out var marker);
                    if (at >= 0)
                    {
                        Emit(output, SegmentKind.Reasoning, _buffer[..at]);
                        _buffer = _buffer[(at + marker!.Length)..];
                        _state = State.Normal;
                        _skipNewline = true;
                        continue;
                    }
                    int hold = HeldSuffix(_buffer, ThoughtMarkers);
                    Emit(output, SegmentKind.Reasoning, _buffer[..^hold]);
                    _buffer = _buffer[^hold..];
                    return output;
                }
                default:
                {
                    int at = _buffer.IndexOf(MiniCpmToolCallParser.ToolCallEnd, StringComparison.Ordinal);
                    if (at < 0) return output;
                    var block = _buffer[..at];
                    _buffer = _buffer[(at + MiniCpmToolCallParser.ToolCallEnd.Length)..];
                    _state = State.Normal;
                    if (MiniCpmToolCallParser.TryParseBlock(block, out var calls))
                    {
                        ProducedCalls = true;
                        output.Add(new Segment(SegmentKind.Calls, "", calls));
                        _skipNewline = true;
                    }
                    else
                    {
                        Emit(output, SegmentKind.Text,
                            MiniCpmToolCallParser.ToolCallStart + block + MiniCpmToolCallParser.ToolCallEnd);
                    }
                    continue;
                }
            }
        }
    }

    /// <summary>Releases what is held at the end of the generation; an unclosed tool-call block is plain text.</summary>
    public List<Segment> Flush()
    {
        var output = new List<Segment>();
        switch (_state)
        {
            case State.Normal: Emit(output, SegmentKind.Text, _buffer); break;
            case State.Thought: Emit(output, SegmentKind.Reasoning, _buffer); break;
            default: Emit(output, SegmentKind.Text, MiniCpmToolCallParser.ToolCallStart + _buffer); break;
        }
        _buffer = "";
        _state = State.Normal;
        return output;
    }

    private static void Emit(List<Segment> output, SegmentKind kind, string text)
    {
        if (text.Length > 0) output.Add(new Segment(kind, text));
    }

    private static int IndexOfAny(string s, string[] markers, out string? found)
    {
        int best = -1;
        found = null;
        foreach (var m in markers)
        {
            int at = s.IndexOf(m, StringComparison.Ordinal);
            if (at >= 0 && (best < 0 || at < best))
            {
                best = at;
                found = m;
            }
        }
        return best;
    }

    private static int HeldSuffix(string s, string[] markers)
    {
        int best = 0;
        foreach (var m in markers)
        {
            for (int len = Math.Min(m.Length - 1, s.Length); len > best; len--)
            {
                if (s.AsSpan(s.Length - len).SequenceEqual(m.AsSpan(0, len)))
                {
                    best = len;
                    break;
                }
            }
        }
        return best;
    }
}
