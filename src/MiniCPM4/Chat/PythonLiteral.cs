using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MiniCPM4.Chat;

/// <summary>
/// A small hand-written reader and writer of Python literals as they appear in MiniCPM4 tool calls:
/// strings (single, double or triple quoted, with escapes, optional r/u prefix), integers, floats, True/False/None,
/// lists, tuples and dicts. Nothing is evaluated: anything else is a syntax error.
/// </summary>
internal ref struct PythonLiteralReader
{
    private const int MaxDepth = 64;
    private readonly ReadOnlySpan<char> _s;
    private int _pos;

    public PythonLiteralReader(ReadOnlySpan<char> text)
    {
        _s = text;
        _pos = 0;
    }

    public int Position => _pos;
    public bool AtEnd => _pos >= _s.Length;

    /// <summary>Skips spaces, tabs, and (when <paramref name="newlines"/>) line breaks.</summary>
    public void SkipSpace(bool newlines = true)
    {
        while (_pos < _s.Length && (_s[_pos] is ' ' or '\t' or '\r' || (newlines && _s[_pos] == '\n'))) _pos++;
    }

    public bool TryConsume(char c)
    {
        SkipSpace();
        if (_pos < _s.Length && _s[_pos] == c)
        {
            _pos++;
            return true;
        }
        return false;
    }

    public char PeekRaw() => _pos < _s.Length ? _s[_pos] : '\0';

    public char Peek()
    {
        SkipSpace();
        return _pos < _s.Length ? _s[_pos] : '\0';
    }

    /// <summary>A function or keyword name: letters, digits, '_', and '.'/'-' inside (MCP tool names).</summary>
    public string? ReadName()
    {
        SkipSpace();
        int start = _pos;
        if (_pos >= _s.Length || !(char.IsLetter(_s[_pos]) || _s[_pos] == '_')) return null;
        _pos++;
        while (_pos < _s.Length && (char.IsLetterOrDigit(_s[_pos]) || _s[_pos] is '_' or '.' or '-')) _pos++;
        while (_pos > start + 1 && _s[_pos - 1] is '.' or '-') _pos--;
        return _s[start.._pos].ToString();
    }

    /// <summary>Reads one literal; throws <see cref="FormatException"/> on anything that is not one.</summary>
    public object? ReadValue(int depth = 0)
    {
        if (depth > MaxDepth) throw new FormatException("literal nested too deeply");
        SkipSpace();
        if (_pos >= _s.Length) throw new FormatException("expected a value");
        char c = _s[_pos];
        switch (c)
        {
            case '\'' or '"':
                return ReadString(raw: false);
            case '[':
                _pos++;
                return ReadSequence(']', depth);
            case '(':
                _pos++;
                return ReadSequence(')', depth);
            case '{':
                _pos++;
                return ReadDict(depth);
            case '-' or '+' or '.' or (>= '0' and <= '9'):
                return ReadNumber();
        }
        if ((c is 'r' or 'R' or 'u' or 'U') && _pos + 1 < _s.Length && _s[_pos + 1] is '\'' or '"')
        {
            _pos++;
            return ReadString(raw: c is 'r' or 'R');
        }
        var word = ReadName();
        return word switch
        {
            "True" or "true" => true,
            "False" or "false" => false,
            "None" or "null" => null,
            _ => throw new FormatException($"unexpected '{word ?? c.ToString()}'"),
        };
    }

    private List<object?> ReadSequence(char close, int depth)
    {
        var items = new List<object?>();
        while (true)
        {
            if (TryConsume(close)) return items;
            items.Add(ReadValue(depth + 1));
            if (TryConsume(',')) continue;
            if (TryConsume(close)) return items;
            throw new FormatException($"expected ',' or '{close}'");
        }
    }

    private Dictionary<string, object?> ReadDict(int depth)
    {
        var dict = new Dictionary<string, object?>();
        while (true)
        {
            if (TryConsume('}')) return dict;
            var key = ReadValue(depth + 1);
            if (!TryConsume(':')) throw new FormatException("expected ':'");
            dict[Convert.ToString(key, CultureInfo.InvariantCulture) ?? "None"] = ReadValue(depth + 1);
            if (TryConsume(',')) continue;
            if (TryConsume('}')) return dict;
            throw new FormatException("expected ',' or '}'");
        }
    }

    private object ReadNumber()
    {
        int start = _pos;
        if (_s[_pos] is '-' or '+') _pos++;
        bool isFloat = false;
        while (_pos < _s.Length)
        {
            char c = _s[_pos];
            if (char.IsAsciiDigit(c) || c == '_') _pos++;
            else if (c is '.' or 'e' or 'E')
            {
                isFloat = true;
                _pos++;
                if (c is 'e' or 'E' && _pos < _s.Length && _s[_pos] is '-' or '+') _pos++;
            }
            else break;
        }
        var text = _s[start.._pos].ToString().Replace("_", "", StringComparison.Ordinal);
        if (!isFloat && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l))
            return l;
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double d)) return d;
        throw new FormatException($"bad number '{text}'");
    }

    private string ReadString(bool raw)
    {
        char quote = _s[_pos];
        bool triple = _pos + 2 < _s.Length && _s[_pos + 1] == quote && _s[_pos + 2] == quote;
        _pos += triple ? 3 : 1;
        var sb = new StringBuilder();
        while (true)
        {
            if (_pos >= _s.Length) throw new FormatException("unterminated string");
            char c = _s[_pos];
            if (c == quote)
            {
                if (!triple)
                {
                    _pos++;
                    return sb.ToString();
                }
                if (_pos + 2 < _s.Length && _s[_pos + 1] == quote && _s[_pos + 2] == quote)
                {
                    _pos += 3;
                    return sb.ToString();
                }
            }
            if (c == '\n' && !triple) throw new FormatException("line break in a string");
            if (c == '\\' && _pos + 1 < _s.Length)
            {
                if (raw)
                {
                    sb.Append(c).Append(_s[_pos + 1]);
                    _pos += 2;
                    continue;
                }
                _pos++;
                char e = _s[_pos++];
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case '0': sb.Append('\0'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case '\\' or '\'' or '"': sb.Append(e); break;
                    case '\n': break; // line continuation
                    case 'x': sb.Append((char)ReadHex(2)); break;
                    case 'u': sb.Append((char)ReadHex(4)); break;
                    case 'U': sb.Append(char.ConvertFromUtf32(ReadHex(8))); break;
                    default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes
                }
                continue;
            }
            sb.Append(c);
            _pos++;
        }
    }

    private int ReadHex(int digits)
    {
        if (_pos + digits > _s.Length ||
            !int.TryParse(_s.Slice(_pos, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture,
                out int v))
            throw new FormatException("bad escape");
        _pos += digits;
        return v;
    }
}
