using System.Globalization;
using System.Text;

namespace MiniCPM4.Chat.Jinja;

internal enum TokenType { Data, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float,
    Operator, Eof }

internal readonly record struct Token(TokenType Type, string Value, int Position, object? Literal = null)
{
    public override string ToString() => Type switch
    {
        TokenType.Eof => "end of template",
        TokenType.Data => "template data",
        TokenType.VariableBegin => "'{{'",
        TokenType.VariableEnd => "'}}'",
        TokenType.BlockBegin => "'{%'",
        TokenType.BlockEnd => "'%}'",
        _ => $"'{Value}'",
    };
}

/// <summary>Line and column of source offsets (1-based).</summary>
internal sealed class SourceMap
{
    private readonly List<int> _lineStarts = [0];

    public SourceMap(string source)
    {
        for (int i = 0; i < source.Length; i++)
            if (source[i] == '\n') _lineStarts.Add(i + 1);
    }

    public (int Line, int Column) At(int position)
    {
        int index = _lineStarts.BinarySearch(position);
        if (index < 0) index = ~index - 1;
        return (index + 1, position - _lineStarts[index] + 1);
    }
}

/// <summary>
/// Splits a template into tokens the way Jinja2's lexer does with the settings Hugging Face uses
/// (<c>trim_blocks</c> and <c>lstrip_blocks</c> on, <c>keep_trailing_newline</c> off): line breaks normalised to
/// <c>\n</c>, one trailing newline dropped, <c>-</c>/<c>+</c> whitespace control, comments dropped, raw blocks kept
/// verbatim, and <c>}}</c> / <c>%}</c> only closing a tag while no bracket is open inside it.
/// </summary>
internal sealed class Lexer
{
    private readonly string _src;
    private readonly SourceMap _map;
    private readonly bool _trimBlocks, _lstripBlocks;
    private readonly List<Token> _tokens = [];
    private int _pos;
    private bool _lineStarting = true;

    private Lexer(string source, bool trimBlocks, bool lstripBlocks)
    {
        _src = source;
        _map = new SourceMap(source);
        _trimBlocks = trimBlocks;
        _lstripBlocks = lstripBlocks;
    }

    public static string NormalizeSource(string source)
    {
        var sb = new StringBuilder(source.Length);
        for (int i = 0; i < source.Length; i++)
        {
            char c = source[i];
            if (c == '\r')
            {
                sb.Append('\n');
                if (i + 1 < source.Length && source[i + 1] == '\n') i++;
            }
            else
            {
                sb.Append(c);
            }
        }
        if (sb.Length > 0 && sb[^1] == '\n') sb.Length--;
        return sb.ToString();
    }

    /// <summary>Tokenizes an already normalised source (see <see cref="NormalizeSource"/>).</summary>
    public static List<Token> Tokenize(string normalizedSource, SourceMap map, bool trimBlocks = true,
        bool lstripBlocks = true)
    {
        var lexer = new Lexer(normalizedSource, trimBlocks, lstripBlocks);
        lexer.Run();
        return lexer._tokens;
    }

    private TemplateSyntaxException Error(string message, int position)
    {
        var (line, column) = _map.At(position);
        return new TemplateSyntaxException(message, line, column);
    }

    private void Run()
    {
        while (_pos < _src.Length)
        {
            int start = FindTagStart(_pos);
            if (start < 0)
            {
                _tokens.Add(new Token(TokenType.Data, _src[_pos..], _pos));
                _pos = _src.Length;
                break;
            }
            char kind = _src[start + 1];
            char sign = start + 2 < _src.Length && _src[start + 2] is '-' or '+' ? _src[start + 2] : '\0';
            int rawEnd = kind == '%' ? MatchRawBegin(start) : -1;
            string text = ApplyStrip(_src[_pos..start], sign, kind != '{');
            if (text.Length > 0) _tokens.Add(new Token(TokenType.Data, text, _pos));
            int afterOpen = start + 2 + (sign != '\0' ? 1 : 0);

            if (rawEnd >= 0)
            {
                LexRaw(start, rawEnd);
                continue;
            }
            switch (kind)
            {
                case '#':
                    LexComment(start, afterOpen);
                    break;
                case '{':
                    _tokens.Add(new Token(TokenType.VariableBegin, "{{", start));
                    LexInside(afterOpen, variable: true);
                    break;
                default:
                    _tokens.Add(new Token(TokenType.BlockBegin, "{%", start));
                    LexInside(afterOpen, variable: false);
                    break;
            }
        }
        _tokens.Add(new Token(TokenType.Eof, "", _src.Length));
    }

    private int FindTagStart(int from)
    {
        for (int i = _src.IndexOf('{', from); i >= 0 && i + 1 < _src.Length; i = _src.IndexOf('{', i + 1))
            if (_src[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>Text before a tag: <c>-</c> strips all trailing whitespace; otherwise, for blocks and comments
    /// (not <c>{{</c>) and without <c>+</c>, lstrip_blocks removes spaces between the line start and the tag.</summary>
    private string ApplyStrip(string text, char sign, bool lstripApplies)
    {
        if (sign == '-') return PyText.RStrip(text);
        if (sign != '+' && _lstripBlocks && lstripApplies)
        {
            int lineStart = text.LastIndexOf('\n') + 1;
            if ((lineStart > 0 || _lineStarting) && lineStart < text.Length)
            {
                bool blank = true;
                for (int i = lineStart; i < text.Length && blank; i++) blank = PyText.IsSpace(text[i]);
                if (blank) return text[..lineStart];
            }
        }
        return text;
    }

    /// <summary>If a raw block starts at <paramref name="start"/> (<c>{% raw %}</c>), the offset after its tag; else
    /// -1.</summary>
    private int MatchRawBegin(int start)
    {
        int i = start + 2;
        if (i < _src.Length && _src[i] is '-' or '+') i++;
        while (i < _src.Length && PyText.IsSpace(_src[i])) i++;
        if (string.CompareOrdinal(_src, i, "raw", 0, 3) != 0) return -1;
        i += 3;
        if (i < _src.Length && (char.IsLetterOrDigit(_src[i]) || _src[i] == '_')) return -1;
        while (i < _src.Length && PyText.IsSpace(_src[i])) i++;
        if (string.CompareOrdinal(_src, i, "-%}", 0, 3) == 0)
        {
            i += 3;
            while (i < _src.Length && PyText.IsSpace(_src[i])) i++;
            return i;
        }
        if (string.CompareOrdinal(_src, i, "%}", 0, 2) == 0) return i + 2;
        return -1;
    }

    private void LexRaw(int start, int contentStart)
    {
        // Find {% endraw %} (with optional whitespace control).
        for (int i = _src.IndexOf("{%", contentStart, StringComparison.Ordinal); i >= 0; i =
            _src.IndexOf("{%", i + 2, StringComparison.Ordinal))
        {
            int j = i + 2;
            char sign = j < _src.Length && _src[j] is '-' or '+' ? _src[j] : '\0';
            if (sign != '\0') j++;
            while (j < _src.Length && PyText.IsSpace(_src[j])) j++;
            if (string.CompareOrdinal(_src, j, "endraw", 0, 6) != 0) continue;
            j += 6;
            while (j < _src.Length && PyText.IsSpace(_src[j])) j++;
            int end = MatchBlockEnd(j);
            if (end < 0) continue;
            _lineStarting = true; // the raw content is text; what precedes endraw decides lstrip
            string text = ApplyStripRawEnd(_src[contentStart..i], sign);
            if (text.Length > 0) _tokens.Add(new Token(TokenType.Data, text, contentStart));
            _lineStarting = _src[end - 1] == '\n';
            _pos = end;
            return;
        }
        throw Error("missing end of raw directive", start);
    }

    private string ApplyStripRawEnd(string text, char sign)
    {
        bool saved = _lineStarting;
        _lineStarting = false; // the raw content follows the raw tag on the same line unless it has a newline
        var result = ApplyStrip(text, sign, true);
        _lineStarting = saved;
        return result;
    }

    /// <summary>At <paramref name="i"/>: <c>+%}</c>, <c>-%}</c> plus whitespace, or <c>%}</c> plus one newline when
    /// trim_blocks; returns the offset after it, or -1.</summary>
    private int MatchBlockEnd(int i)
    {
        if (string.CompareOrdinal(_src, i, "+%}", 0, 3) == 0) return i + 3;
        if (string.CompareOrdinal(_src, i, "-%}", 0, 3) == 0)
        {
            i += 3;
            while (i < _src.Length && PyText.IsSpace(_src[i])) i++;
            return i;
        }
        if (string.CompareOrdinal(_src, i, "%}", 0, 2) == 0)
        {
            i += 2;
            if (_trimBlocks && i < _src.Length && _src[i] == '\n') i++;
            return i;
        }
        return -1;
    }

    private void LexComment(int start, int contentStart)
    {
        int close = _src.IndexOf("#}", contentStart, StringComparison.Ordinal);
        if (close < 0) throw Error("missing end of comment tag", start);
        int end = close + 2;
        if (close > contentStart && _src[close - 1] == '-')
        {
            while (end < _src.Length && PyText.IsSpace(_src[end])) end++;
        }
        else if (!(close > contentStart && _src[close - 1] == '+') && _trimBlocks && end < _src.Length
            && _src[end] == '\n')
        {
            end++;
        }
        _lineStarting = _src[end - 1] == '\n';
        _pos = end;
    }

    private void LexInside(int i, bool variable)
    {
        var brackets = new Stack<(char Close, int Position)>();
        while (true)
        {
            while (i < _src.Length && PyText.IsSpace(_src[i])) i++;
            if (i >= _src.Length)
                throw Error(variable ? "unexpected end of template, expected '}}'"
                    : "unexpected end of template, expected '%}'", i);

            if (brackets.Count == 0)
            {
                if (variable)
                {
                    if (string.CompareOrdinal(_src, i, "-}}", 0, 3) == 0)
                    {
                        _tokens.Add(new Token(TokenType.VariableEnd, "}}", i));
                        i += 3;
                        while (i < _src.Length && PyText.IsSpace(_src[i])) i++;
                        Close(i);
                        return;
                    }
                    if (string.CompareOrdinal(_src, i, "}}", 0, 2) == 0)
                    {
                        _tokens.Add(new Token(TokenType.VariableEnd, "}}", i));
                        Close(i + 2);
                        return;
                    }
                }
                else
                {
                    int end = MatchBlockEnd(i);
                    if (end >= 0)
                    {
                        _tokens.Add(new Token(TokenType.BlockEnd, "%}", i));
                        Close(end);
                        return;
                    }
                }
            }

            char c = _src[i];
            if (char.IsAsciiDigit(c))
            {
                i = LexNumber(i);
                continue;
            }
            if (c == '_' || char.IsLetter(c))
            {
                int s = i;
                while (i < _src.Length && (_src[i] == '_' || char.IsLetterOrDigit(_src[i]))) i++;
                _tokens.Add(new Token(TokenType.Name, _src[s..i], s));
                continue;
            }
            if (c is '\'' or '"')
            {
                i = LexString(i);
                continue;
            }
            string op = MatchOperator(i);
            if (op.Length == 0) throw Error($"unexpected character '{c}'", i);
            switch (op)
            {
                case "(": brackets.Push((')', i)); break;
                case "[": brackets.Push((']', i)); break;
                case "{": brackets.Push(('}', i)); break;
                case ")" or "]" or "}":
                    if (brackets.Count == 0) throw Error($"unexpected '{op}'", i);
                    var (expected, _) = brackets.Pop();
                    if (expected != op[0]) throw Error($"unexpected '{op}', expected '{expected}'", i);
                    break;
            }
            _tokens.Add(new Token(TokenType.Operator, op, i));
            i += op.Length;
        }
    }

    private void Close(int end)
    {
        _lineStarting = end > 0 && _src[end - 1] == '\n';
        _pos = end;
    }

    private static readonly string[] Operators2 = ["//", "**", "==", "!=", ">=", "<="];
    private const string Operators1 = "+-/*%~[](){}<>=.:|,;";

    private string MatchOperator(int i)
    {
        if (i + 1 < _src.Length)
            foreach (var op in Operators2)
                if (_src[i] == op[0] && _src[i + 1] == op[1]) return op;
        return Operators1.Contains(_src[i]) ? _src[i].ToString() : "";
    }

    private int LexNumber(int i)
    {
        int s = i;
        // Integer prefixes.
        if (_src[i] == '0' && i + 1 < _src.Length && (_src[i + 1] | 0x20) is 'x' or 'o' or 'b')
        {
            char radix = (char)(_src[i + 1] | 0x20);
            int j = i + 2;
            var digits = new StringBuilder();
            while (j < _src.Length && (_src[j] == '_' || Uri.IsHexDigit(_src[j])))
            {
                if (_src[j] != '_') digits.Append(_src[j]);
                j++;
            }
            int radixValue = radix switch { 'x' => 16, 'o' => 8, _ => 2 };
            long value = 0;
            foreach (char d in digits.ToString())
            {
                int v = Convert.ToInt32(d.ToString(), 16);
                if (v >= radixValue) throw Error("invalid integer literal", s);
                value = checked(value * radixValue + v);
            }
            if (digits.Length == 0) throw Error("invalid integer literal", s);
            _tokens.Add(new Token(TokenType.Integer, _src[s..j], s, value));
            return j;
        }
        int k = i;
        while (k < _src.Length
            && (char.IsAsciiDigit(_src[k])
            || (_src[k] == '_' && k + 1 < _src.Length && char.IsAsciiDigit(_src[k + 1])))) k++;
        bool isFloat = false;
        int end = k;
        if (end + 1 < _src.Length && _src[end] == '.' && char.IsAsciiDigit(_src[end + 1]))
        {
            isFloat = true;
            end++;
            while (end < _src.Length
                && (char.IsAsciiDigit(_src[end])
                || (_src[end] == '_' && end + 1 < _src.Length && char.IsAsciiDigit(_src[end + 1])))) end++;
        }
        if (end < _src.Length && (_src[end] | 0x20) == 'e')
        {
            int e = end + 1;
            if (e < _src.Length && _src[e] is '+' or '-') e++;
            if (e < _src.Length && char.IsAsciiDigit(_src[e]))
            {
                while (e < _src.Length
                    && (char.IsAsciiDigit(_src[e])
                    || (_src[e] == '_' && e + 1 < _src.Length && char.IsAsciiDigit(_src[e + 1])))) e++;
                isFloat = true;
                end = e;
            }
        }
        string text = _src[s..end].Replace("_", "", StringComparison.Ordinal);
        if (isFloat)
        {
            _tokens.Add(
                new Token(TokenType.Float, _src[s..end], s,
                double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture)));
        }
        else
        {
            if (text.Length > 1 && text[0] == '0' && text.Trim('0').Length > 0) throw Error(
                "invalid integer literal (leading zeros)", s);
            if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value))
                throw Error("integer literal too large", s);
            _tokens.Add(new Token(TokenType.Integer, _src[s..end], s, value));
        }
        return end;
    }

    private int LexString(int i)
    {
        char quote = _src[i];
        int s = i;
        i++;
        var sb = new StringBuilder();
        while (true)
        {
            if (i >= _src.Length) throw Error("unterminated string literal", s);
            char c = _src[i];
            if (c == quote)
            {
                i++;
                break;
            }
            if (c != '\\')
            {
                sb.Append(c);
                i++;
                continue;
            }
            if (i + 1 >= _src.Length) throw Error("unterminated string literal", s);
            char e = _src[i + 1];
            i += 2;
            switch (e)
            {
                case '\n': break; // line continuation
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'v': sb.Append('\v'); break;
                case 'x': i = AppendHex(sb, i, 2, s); break;
                case 'u': i = AppendHex(sb, i, 4, s); break;
                case 'U': i = AppendHex(sb, i, 8, s); break;
                case >= '0' and <= '7':
                {
                    int value = e - '0';
                    for (int n = 0; n < 2 && i < _src.Length && _src[i] is >= '0' and <= '7'; n++, i++) value =
                        value * 8 + (_src[i] - '0');
                    sb.Append((char)value);
                    break;
                }
                case 'N': throw Error("\\N{...} escapes are not supported", i - 2);
                default: sb.Append('\\').Append(e); break;
            }
        }
        _tokens.Add(new Token(TokenType.String, _src[s..i], s, sb.ToString()));
        return i;
    }

    private int AppendHex(StringBuilder sb, int i, int digits, int stringStart)
    {
        if (i + digits > _src.Length) throw Error("truncated \\x/\\u escape in a string literal", stringStart);
        if (!int.TryParse(_src.AsSpan(i, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture,
            out int code) ||
            code > 0x10FFFF)
            throw Error("invalid \\x/\\u escape in a string literal", stringStart);
        sb.Append(PyText.FromCodePoint(code));
        return i + digits;
    }
}
