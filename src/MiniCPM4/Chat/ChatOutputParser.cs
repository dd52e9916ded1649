using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MiniCPM4.Chat;

/// <summary>How a model writes function calls (chosen from what its chat template renders; see <see
/// cref="ModelChatTemplate"/>).</summary>
public enum ToolCallSyntax
{
    /// <summary>MiniCPM4-MCP / MiniCPM3: <c>&lt;|tool_call_start|&gt;\n```python\nname(key=literal,
    /// …)\n```\n&lt;|tool_call_end|&gt;</c>, one call per line.</summary>
    McpBlock,

    /// <summary>Hermes / Qwen style: <c>&lt;tool_call&gt;\n{"name": …, "arguments": {…}}\n&lt;/tool_call&gt;</c>, one
    /// call per block.</summary>
    HermesJson,

    /// <summary>
    /// The <c>&lt;|tool_call|&gt;</c> token of MiniCPM3's vocabulary (also Phi-4's): a JSON call object (or a list of
    /// them), or Python call lines, up to <c>&lt;|/tool_call|&gt;</c>, the next <c>&lt;|tool_call|&gt;</c> or the end
    /// of the reply.
    /// </summary>
    ToolCallToken,
}

/// <summary>What the output parser looks for in generated text.</summary>
public sealed record ChatOutputFormat
{
    /// <summary>The function-call syntax.</summary>
    public ToolCallSyntax ToolCalls { get; init; } = ToolCallSyntax.McpBlock;

    /// <summary>Reasoning between <c>&lt;think&gt;</c> and <c>&lt;/think&gt;</c> (MiniCPM4.1, Qwen3, DeepSeek-R1
    /// style).</summary>
    public bool ThinkTags { get; init; }

    /// <summary>Reasoning between <c>&lt;|thought_start|&gt;</c> and <c>&lt;|thought_end|&gt;</c> (MiniCPM3 /
    /// MiniCPM4-MCP).</summary>
    public bool ThoughtTags { get; init; } = true;

    /// <summary>MiniCPM4's format: MCP tool-call blocks and thought blocks.</summary>
    public static ChatOutputFormat MiniCpm4 { get; } = new();
}

/// <summary>The kind of a piece of parsed output.</summary>
public enum ChatOutputKind { Text, Reasoning, ToolCalls }

/// <summary>A piece of parsed output: text, reasoning text, or the calls of one tool-call block.</summary>
public readonly record struct ChatOutputSegment(ChatOutputKind Kind, string Text,
    IReadOnlyList<ChatToolCall>? Calls = null);

/// <summary>
/// Splits streamed model output into plain text, reasoning and function calls. Text that may be the start of a marker
/// is held back until the next piece decides; a tool-call block is held back whole until it closes. A block that does
/// not parse stays in the text as it was. Argument values are read by small parsers (Python literals, JSON), never
/// evaluated.
/// </summary>
public sealed class ChatOutputParser
{
    private enum State { Normal, Reasoning, ToolCall }

    private const string ThinkStart = "<think>", ThinkEnd = "</think>";
    private const string ThoughtStart = "<|thought_start|>", ThoughtEnd = "<|thought_end|>";
    private const string McpStart = "<|tool_call_start|>", McpEnd = "<|tool_call_end|>";
    private const string HermesStart = "<tool_call>", HermesEnd = "</tool_call>";
    private const string TokenStart = "<|tool_call|>", TokenEnd = "<|/tool_call|>";

    private readonly ChatOutputFormat _format;
    private readonly string[] _openers;
    private readonly string _callStart, _callEnd;
    private State _state;
    private string _reasoningEnd = ThinkEnd;
    private string _buffer = "";
    private bool _skipNewlines;

    /// <param name="format">The markers to look for.</param>
    /// <param name="startInReasoning">The prompt ends inside an open <c>&lt;think&gt;</c> block (the template opened
    /// it),
    /// so the output starts as reasoning until <c>&lt;/think&gt;</c>.</param>
    public ChatOutputParser(ChatOutputFormat? format = null, bool startInReasoning = false)
    {
        _format = format ?? ChatOutputFormat.MiniCpm4;
        (_callStart, _callEnd) = _format.ToolCalls switch
        {
            ToolCallSyntax.HermesJson => (HermesStart, HermesEnd),
            ToolCallSyntax.ToolCallToken => (TokenStart, TokenEnd),
            _ => (McpStart, McpEnd),
        };
        var openers = new List<string> { _callStart };
        if (_format.ThinkTags) openers.Add(ThinkStart);
        if (_format.ThoughtTags) openers.Add(ThoughtStart);
        _openers = [.. openers];
        if (startInReasoning)
        {
            _state = State.Reasoning;
            _reasoningEnd = ThinkEnd;
            _skipNewlines = true;
        }
    }

    /// <summary>Whether a tool-call block has been parsed.</summary>
    public bool ProducedCalls { get; private set; }

    /// <summary>Feeds the next piece of output; returns what is decided so far.</summary>
    public List<ChatOutputSegment> Push(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<ChatOutputSegment>();
        _buffer += text;
        while (true)
        {
            if (_skipNewlines)
            {
                int n = 0;
                while (n < _buffer.Length && _buffer[n] == '\n') n++;
                _buffer = _buffer[n..];
                if (_buffer.Length == 0) return output;
                _skipNewlines = false;
            }
            switch (_state)
            {
                case State.Normal:
                {
                    int at = IndexOfAny(_buffer, _openers, out var marker);
                    if (at >= 0)
                    {
                        Emit(output, ChatOutputKind.Text, _buffer[..at]);
                        _buffer = _buffer[(at + marker!.Length)..];
                        if (marker == _callStart)
                        {
                            _state = State.ToolCall;
                        }
                        else
                        {
                            _state = State.Reasoning;
                            _reasoningEnd = marker == ThinkStart ? ThinkEnd : ThoughtEnd;
                            _skipNewlines = true;
                        }
                        continue;
                    }
                    int hold = HeldSuffix(_buffer, _openers);
                    Emit(output, ChatOutputKind.Text, _buffer[..^hold]);
                    _buffer = _buffer[^hold..];
                    return output;
                }
                case State.Reasoning:
                {
                    string[] closers = ["\n" + _reasoningEnd, _reasoningEnd];
                    int at = IndexOfAny(_buffer, closers, out var marker);
                    if (at >= 0)
                    {
                        Emit(output, ChatOutputKind.Reasoning, _buffer[..at]);
                        _buffer = _buffer[(at + marker!.Length)..];
                        _state = State.Normal;
                        _skipNewlines = true;
                        continue;
                    }
                    int hold = HeldSuffix(_buffer, closers);
                    Emit(output, ChatOutputKind.Reasoning, _buffer[..^hold]);
                    _buffer = _buffer[^hold..];
                    return output;
                }
                default:
                {
                    int at = _buffer.IndexOf(_callEnd, StringComparison.Ordinal);
                    int endLength = _callEnd.Length;
                    if (_format.ToolCalls == ToolCallSyntax.ToolCallToken)
                    {
                        // A <|tool_call|> block also ends where the next one starts.
                        int next = _buffer.IndexOf(TokenStart, StringComparison.Ordinal);
                        if (next >= 0 && (at < 0 || next < at))
                        {
                            at = next;
                            endLength = 0;
                        }
                    }
                    if (at < 0) return output;
                    var block = _buffer[..at];
                    var closing = _buffer.Substring(at, endLength);
                    _buffer = _buffer[(at + endLength)..];
                    _state = State.Normal;
                    CloseBlock(output, block, closing);
                    continue;
                }
            }
        }
    }

    /// <summary>Releases what is held at the end of the generation. An unclosed block is text, except a
    /// <c>&lt;|tool_call|&gt;</c> block, which the end of the reply closes.</summary>
    public List<ChatOutputSegment> Flush()
    {
        var output = new List<ChatOutputSegment>();
        switch (_state)
        {
            case State.Normal: Emit(output, ChatOutputKind.Text, _buffer); break;
            case State.Reasoning: Emit(output, ChatOutputKind.Reasoning, _buffer); break;
            default:
                if (_format.ToolCalls == ToolCallSyntax.ToolCallToken) CloseBlock(output, _buffer, "");
                else Emit(output, ChatOutputKind.Text, _callStart + _buffer);
                break;
        }
        _buffer = "";
        _state = State.Normal;
        return output;
    }

    private void CloseBlock(List<ChatOutputSegment> output, string block, string closing)
    {
        if (TryParseCalls(_format.ToolCalls, block, out var calls))
        {
            ProducedCalls = true;
            output.Add(new ChatOutputSegment(ChatOutputKind.ToolCalls, "", calls));
            _skipNewlines = true;
        }
        else
        {
            Emit(output, ChatOutputKind.Text, _callStart + block + closing);
        }
    }

    /// <summary>Parses a whole reply.</summary>
    public static (string Text, string? Reasoning, IReadOnlyList<ChatToolCall> Calls) ParseAll(string text,
        ChatOutputFormat? format = null,
        bool startInReasoning = false)
    {
        var parser = new ChatOutputParser(format, startInReasoning);
        var segments = parser.Push(text);
        segments.AddRange(parser.Flush());
        var plain = new StringBuilder();
        StringBuilder? reasoning = null;
        var calls = new List<ChatToolCall>();
        foreach (var s in segments)
        {
            switch (s.Kind)
            {
                case ChatOutputKind.Text: plain.Append(s.Text); break;
                case ChatOutputKind.Reasoning: (reasoning ??= new StringBuilder()).Append(s.Text); break;
                default: calls.AddRange(s.Calls!); break;
            }
        }
        return (plain.ToString(), reasoning?.ToString(), calls);
    }

    /// <summary>Parses the inside of a tool-call block in the given syntax. False when anything does not
    /// parse.</summary>
    public static bool TryParseCalls(ToolCallSyntax syntax, string block, out List<ChatToolCall> calls)
    {
        ArgumentNullException.ThrowIfNull(block);
        switch (syntax)
        {
            case ToolCallSyntax.HermesJson:
                return TryParseJsonCalls(block, out calls);
            case ToolCallSyntax.ToolCallToken:
                return TryParseJsonCalls(block, out calls) || TryParsePythonCalls(block, out calls);
            default:
                return TryParsePythonCalls(block, out calls);
        }
    }

    /// <summary>One or more <c>name(key=literal, …)</c> calls separated by line breaks or ';', with or without a
    /// <c>```python</c> fence; positional arguments are not accepted.</summary>
    public static bool TryParsePythonCalls(string block, out List<ChatToolCall> calls)
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
        else if (body.StartsWith('[') && body.EndsWith(']'))
        {
            body = body[1..^1]; // [a(x=1), b(y=2)]: a bracketed list of calls
        }
        try
        {
            var reader = new PythonLiteralReader(body);
            while (true)
            {
                reader.SkipSpace();
                while (reader.Peek() is ';' or ',') reader.TryConsume(reader.Peek());
                if (reader.AtEnd) break;
                var name = reader.ReadName() ?? throw new FormatException("expected a function name");
                if (!reader.TryConsume('(')) throw new FormatException("expected '('");
                var args = new Dictionary<string, object?>(StringComparer.Ordinal);
                while (!reader.TryConsume(')'))
                {
                    var key = reader.ReadName() ?? throw new FormatException("expected a keyword argument");
                    if (!reader.TryConsume('=')) throw new FormatException("positional arguments are not supported");
                    args[key] = reader.ReadValue();
                    if (reader.TryConsume(',')) continue;
                    if (reader.TryConsume(')')) break;
                    throw new FormatException("expected ',' or ')'");
                }
                calls.Add(new ChatToolCall(name, args));
                reader.SkipSpace(newlines: false);
                if (!reader.AtEnd && reader.PeekRaw() is not ('\n' or ';' or ','))
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

    /// <summary>A JSON call object <c>{"name": …, "arguments": {…}}</c> (arguments may be a JSON string of an object;
    /// <c>parameters</c> is accepted for <c>arguments</c>), or a JSON list of them.</summary>
    public static bool TryParseJsonCalls(string block, out List<ChatToolCall> calls)
    {
        calls = [];
        var body = block.Trim();
        if (body.StartsWith("```", StringComparison.Ordinal))
        {
            int eol = body.IndexOf('\n');
            int close = body.LastIndexOf("```", StringComparison.Ordinal);
            if (eol < 0 || close <= eol) return false;
            body = body[(eol + 1)..close].Trim();
        }
        if (body.Length == 0 || body[0] is not ('{' or '[')) return false;
        try
        {
            using var doc = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 64 });
            var items = doc.RootElement.ValueKind == JsonValueKind.Array ? doc.RootElement.EnumerateArray().ToList()
                : [doc.RootElement];
            foreach (var item in items)
            {
                if (item.ValueKind != JsonValueKind.Object) return Fail(out calls);
                var call = item.TryGetProperty("function", out var fn) && fn.ValueKind == JsonValueKind.Object ? fn
                    : item;
                if (!call.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String
                    || name.GetString()!.Length == 0)
                    return Fail(out calls);
                Dictionary<string, object?> args;
                if (call.TryGetProperty("arguments", out var a) || call.TryGetProperty("parameters", out a))
                {
                    if (a.ValueKind == JsonValueKind.String)
                    {
                        using var inner = JsonDocument.Parse(a.GetString()!, new JsonDocumentOptions { MaxDepth = 64 });
                        if (inner.RootElement.ValueKind != JsonValueKind.Object) return Fail(out calls);
                        args = (Dictionary<string, object?>)PlainJson(inner.RootElement)!;
                    }
                    else if (a.ValueKind == JsonValueKind.Object)
                    {
                        args = (Dictionary<string, object?>)PlainJson(a)!;
                    }
                    else if (a.ValueKind == JsonValueKind.Null)
                    {
                        args = new Dictionary<string, object?>(StringComparer.Ordinal);
                    }
                    else
                    {
                        return Fail(out calls);
                    }
                }
                else
                {
                    args = new Dictionary<string, object?>(StringComparer.Ordinal);
                }
                calls.Add(new ChatToolCall(name.GetString()!, args,
                    item.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String ? id.GetString()
                        : null));
            }
            return calls.Count > 0;
        }
        catch (JsonException)
        {
            return Fail(out calls);
        }
    }

    private static bool Fail(out List<ChatToolCall> calls)
    {
        calls = [];
        return false;
    }

    /// <summary>JSON as plain .NET values: dictionaries, lists, strings, long or double, bool, null.</summary>
    internal static object? PlainJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().Aggregate(new Dictionary<string, object?>(StringComparer.Ordinal),
            (d, p) => { d[p.Name] = PlainJson(p.Value); return d; }),
        JsonValueKind.Array => e.EnumerateArray().Select(PlainJson).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.GetRawText().IndexOfAny(['.', 'e', 'E']) < 0 && e.TryGetInt64(out long l)
            ? l : double.Parse(e.GetRawText(), NumberStyles.Float, CultureInfo.InvariantCulture),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    private static void Emit(List<ChatOutputSegment> output, ChatOutputKind kind, string text)
    {
        if (text.Length > 0) output.Add(new ChatOutputSegment(kind, text));
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
