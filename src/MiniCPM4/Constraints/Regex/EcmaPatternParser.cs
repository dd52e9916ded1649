namespace MiniCPM4.Constraints.Regex;

/// <summary>
/// Parses an ECMAScript regular expression (the JSON Schema <c>pattern</c> subset, with the <c>u</c> flag's
/// code point semantics) straight into byte-level terms of a <see cref="RegexBuilder"/>.
/// <para>Grammar accepted:</para>
/// <code>
/// Pattern      := ['^'] Alternative ['$'] ('|' ['^'] Alternative ['$'])*   (anchors only here)
/// Alternative  := (Atom Quantifier?)*
/// Atom := literal | '.' | '\' Escape | Class | '(' Disjunction ')' | '(?:' Disjunction ')' | '(?&lt;name&gt;'
/// Disjunction ')'
/// Quantifier   := ('*' | '+' | '?' | '{n}' | '{n,}' | '{n,m}') '?'?          (lazy = same language)
/// Class        := '[' '^'? (ClassAtom ('-' ClassAtom)?)* ']'
/// Escape       := d D w W s S | p{..} P{..} | t n r f v 0 | cX | xHH | uHHHH | u{H..} | identity escape of a
///                 non-alphanumeric character; in a class also \b (U+0008)
/// </code>
/// <para>Lone <c>{</c>, <c>}</c> and <c>]</c> that do not form syntax are literals (Annex B, as Python and browsers
/// read them). A class range with a class escape at one end (<c>[\w-.]</c>) is the union of both ends and
/// <c>-</c> (Annex B). Back-references, look-around, word boundaries, inline flags, anchors elsewhere: throw.</para>
/// </summary>
internal sealed class EcmaPatternParser(RegexBuilder b, string pattern, CharEncoding encoding)
{
    /// <summary>The largest counted repetition bound accepted.</summary>
    public const int MaxRepeat = 1_000_000;

    private readonly string _p = pattern;
    private int _pos;

    private static readonly CodePointSet Digit = CodePointSet.Range('0', '9');
    private static readonly CodePointSet Word =
        CodePointSet.FromRanges([('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')]);
    private static readonly CodePointSet Space = CodePointSet.FromRanges([
        (0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029),
        (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)]);
    private static readonly CodePointSet Dot =
        CodePointSet.FromRanges([('\n', '\n'), ('\r', '\r'), (0x2028, 0x2029)]).Complement();

    private RegexNotSupportedException Error(string what, int index)
        => new($"Regex /{_p}/: {what} at index {index} is not supported.");

    private bool AtEnd => _pos >= _p.Length;

    public int Parse(bool search)
    {
        var alternatives = new List<int>();
        int anyStar = search ? b.Star(b.AnyCodePoint(encoding)) : RegexBuilder.Empty;
        while (true)
        {
            bool startAnchor = false;
            if (!AtEnd && _p[_pos] == '^')
            {
                startAnchor = true;
                _pos++;
            }
            int body = ParseAlternative(topLevel: true, out bool endAnchor);
            if (search)
                body = b.Concat(startAnchor ? RegexBuilder.Empty : anyStar, body, endAnchor ? RegexBuilder.Empty
                    : anyStar);
            alternatives.Add(body);
            if (AtEnd) break;
            if (_p[_pos] == '|')
            {
                _pos++;
                continue;
            }
            throw Error("an unmatched ')'", _pos);
        }
        return b.Or(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(alternatives));
    }

    private int ParseDisjunction()
    {
        var alternatives = new List<int> { ParseAlternative(topLevel: false, out _) };
        while (!AtEnd && _p[_pos] == '|')
        {
            _pos++;
            alternatives.Add(ParseAlternative(topLevel: false, out _));
        }
        return b.Or(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(alternatives));
    }

    private int ParseAlternative(bool topLevel, out bool endAnchor)
    {
        endAnchor = false;
        var items = new List<int>();
        while (!AtEnd)
        {
            char c = _p[_pos];
            if (c is '|' or ')') break;
            if (c == '^')
                throw Error("the anchor '^' anywhere but at the start of the pattern (or of a top-level alternative)",
                    _pos);
            if (c == '$')
            {
                if (topLevel && (_pos + 1 == _p.Length || _p[_pos + 1] == '|'))
                {
                    _pos++;
                    endAnchor = true;
                    break;
                }
                throw Error("the anchor '$' anywhere but at the end of the pattern (or of a top-level alternative)",
                    _pos);
            }
            int atom = ParseAtom();
            items.Add(ParseQuantifier(atom));
        }
        return b.Concat(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(items));
    }

    private int ParseQuantifier(int atom)
    {
        if (!TryQuantifier(out int min, out int max)) return atom;
        if (!AtEnd && _p[_pos] == '?') _pos++; // lazy: same language
        int again = _pos;
        if (TryQuantifier(out _, out _)) throw Error("a quantifier with nothing to repeat (a quantified quantifier)",
            again);
        return b.Repeat(atom, min, max);
    }

    /// <summary>Consumes a quantifier at the position if there is one.</summary>
    private bool TryQuantifier(out int min, out int max)
    {
        min = 0;
        max = -1;
        if (AtEnd) return false;
        switch (_p[_pos])
        {
            case '*':
                _pos++;
                return true;
            case '+':
                _pos++;
                min = 1;
                return true;
            case '?':
                _pos++;
                max = 1;
                return true;
            case '{':
                if (!TryBraces(_pos, out min, out max, out int end)) return false;
                _pos = end;
                return true;
            default:
                return false;
        }
    }

    /// <summary>Whether <c>{n}</c>, <c>{n,}</c> or <c>{n,m}</c> starts at <paramref name="at"/>.</summary>
    private bool TryBraces(int at, out int min, out int max, out int end)
    {
        min = max = end = 0;
        int i = at + 1;
        if (!ReadNumber(ref i, out min)) return false;
        if (i < _p.Length && _p[i] == '}')
        {
            max = min;
        }
        else if (i < _p.Length && _p[i] == ',')
        {
            i++;
            if (i < _p.Length && _p[i] == '}') max = -1;
            else if (!ReadNumber(ref i, out max) || i >= _p.Length || _p[i] != '}') return false;
        }
        else return false;
        end = i + 1;
        if (min > MaxRepeat || max > MaxRepeat) throw Error($"a repetition count above {MaxRepeat}", at);
        if (max >= 0 && max < min) throw Error("a repetition {n,m} with n > m", at);
        return true;
    }

    private bool ReadNumber(ref int i, out int value)
    {
        value = 0;
        int start = i;
        long v = 0;
        while (i < _p.Length && char.IsAsciiDigit(_p[i]))
        {
            v = Math.Min(v * 10 + (_p[i] - '0'), int.MaxValue);
            i++;
        }
        value = (int)v;
        return i > start;
    }

    private int ParseAtom()
    {
        int start = _pos;
        char c = _p[_pos];
        switch (c)
        {
            case '(':
                return ParseGroup();
            case '[':
                return b.LowerSet(ParseClass(), encoding);
            case '.':
                _pos++;
                return b.LowerNamed("dot", Dot, encoding);
            case '\\':
            {
                var set = ParseEscape(inClass: false, out int cp, out string? name);
                if (set is null) return b.LowerCodePoint(cp, encoding);
                return name is null ? b.LowerSet(set, encoding) : b.LowerNamed(name, set, encoding);
            }
            case '*' or '+' or '?':
                throw Error($"a quantifier '{c}' with nothing to repeat", start);
            case '{':
                if (TryBraces(_pos, out _, out _, out _)) throw Error("a quantifier '{' with nothing to repeat", start);
                _pos++;
                return b.LowerCodePoint('{', encoding);
            default:
                return b.LowerCodePoint(ReadCodePoint(), encoding);
        }
    }

    private int ReadCodePoint()
    {
        char c = _p[_pos++];
        if (char.IsHighSurrogate(c) && !AtEnd && char.IsLowSurrogate(_p[_pos]))
            return char.ConvertToUtf32(c, _p[_pos++]);
        return c; // a lone surrogate: lowers to ∅ (no UTF-8 text contains one)
    }

    private int ParseGroup()
    {
        int start = _pos;
        _pos++;
        if (!AtEnd && _p[_pos] == '?')
        {
            _pos++;
            char c = AtEnd ? '\0' : _p[_pos];
            if (c == ':') _pos++;
            else if (c is '=' or '!') throw Error($"the look-ahead '(?{c}'", start);
            else if (c == '<')
            {
                char d = _pos + 1 < _p.Length ? _p[_pos + 1] : '\0';
                if (d is '=' or '!') throw Error($"the look-behind '(?<{d}'", start);
                _pos++;
                int nameStart = _pos;
                while (!AtEnd && (char.IsLetterOrDigit(_p[_pos]) || _p[_pos] is '_' or '$')) _pos++;
                if (_pos == nameStart || AtEnd || _p[_pos] != '>' || char.IsAsciiDigit(_p[nameStart]))
                    throw Error("a malformed group name", start);
                _pos++;
            }
            else throw Error("the group modifier '(?" + (AtEnd ? "" : c.ToString())
                + "' (inline flags and other extensions)", start);
        }
        int body = ParseDisjunction();
        if (AtEnd || _p[_pos] != ')') throw Error("an unterminated group", start);
        _pos++;
        return body;
    }

    private CodePointSet ParseClass()
    {
        int start = _pos;
        _pos++;
        bool negate = false;
        if (!AtEnd && _p[_pos] == '^')
        {
            negate = true;
            _pos++;
        }
        var ranges = new List<(int, int)>();
        var set = CodePointSet.None;
        while (true)
        {
            if (AtEnd) throw Error("an unterminated character class", start);
            if (_p[_pos] == ']')
            {
                _pos++;
                break;
            }
            var s1 = ParseClassAtom(out int c1);
            if (!AtEnd && _p[_pos] == '-' && _pos + 1 < _p.Length && _p[_pos + 1] != ']')
            {
                int dash = _pos;
                _pos++;
                var s2 = ParseClassAtom(out int c2);
                if (s1 is null && s2 is null)
                {
                    if (c1 > c2) throw Error("a character class range out of order", dash);
                    ranges.Add((c1, c2));
                }
                else
                {
                    // Annex B: a class escape at either end makes '-' a literal.
                    if (s1 is null) ranges.Add((c1, c1)); else set = set.Union(s1);
                    if (s2 is null) ranges.Add((c2, c2)); else set = set.Union(s2);
                    ranges.Add(('-', '-'));
                }
            }
            else if (s1 is null) ranges.Add((c1, c1));
            else set = set.Union(s1);
        }
        set = set.Union(CodePointSet.FromRanges(ranges));
        return negate ? set.Complement() : set;
    }

    private CodePointSet? ParseClassAtom(out int cp)
    {
        if (_p[_pos] == '\\') return ParseEscape(inClass: true, out cp, out _);
        cp = ReadCodePoint();
        return null;
    }

    /// <summary>Parses an escape at the position (a backslash): a class escape returns its set (and a cache name
    /// when it has one), a character escape returns null and sets <paramref name="cp"/>.</summary>
    private CodePointSet? ParseEscape(bool inClass, out int cp, out string? name)
    {
        int start = _pos;
        cp = 0;
        name = null;
        _pos++;
        if (AtEnd) throw Error("a '\\' at the end of the pattern", start);
        char c = _p[_pos++];
        switch (c)
        {
            case 'd': name = "d"; return Digit;
            case 'D': name = "D"; return Digit.Complement();
            case 'w': name = "w"; return Word;
            case 'W': name = "W"; return Word.Complement();
            case 's': name = "s"; return Space;
            case 'S': name = "S"; return Space.Complement();
            case 'p' or 'P':
            {
                if (AtEnd || _p[_pos] != '{') throw Error($"a '\\{c}' without a '{{property}}'", start);
                int close = _p.IndexOf('}', _pos);
                if (close < 0) throw Error($"an unterminated '\\{c}{{'", start);
                string prop = _p[(_pos + 1)..close];
                _pos = close + 1;
                var set = UnicodeProperties.Lookup(prop)
                    ?? throw Error($"the Unicode property '\\{c}{{{prop}}}'", start);
                name = c + "{" + prop + "}";
                return c == 'P' ? set.Complement() : set;
            }
            case 'b':
                if (inClass)
                {
                    cp = 8;
                    return null;
                }
                throw Error("the word boundary '\\b'", start);
            case 'B': throw Error("the word boundary '\\B'", start);
            case 't': cp = '\t'; return null;
            case 'n': cp = '\n'; return null;
            case 'r': cp = '\r'; return null;
            case 'f': cp = '\f'; return null;
            case 'v': cp = '\v'; return null;
            case '0':
                if (!AtEnd && char.IsAsciiDigit(_p[_pos])) throw Error("the octal escape '\\0" + _p[_pos] + "'", start);
                cp = 0;
                return null;
            case >= '1' and <= '9':
                throw Error($"the back-reference '\\{c}'", start);
            case 'k':
                throw Error("the named back-reference '\\k'", start);
            case 'c':
                if (!AtEnd && char.IsAsciiLetter(_p[_pos]))
                {
                    cp = _p[_pos++] % 32;
                    return null;
                }
                throw Error("the control escape '\\c' without a letter", start);
            case 'x':
                cp = ReadHex(2, start, "\\x");
                return null;
            case 'u':
                cp = ReadUnicodeEscape(start);
                return null;
            default:
                if (char.IsAsciiLetterOrDigit(c)) throw Error($"the escape '\\{c}'", start);
                _pos--;
                cp = ReadCodePoint(); // identity escape
                return null;
        }
    }

    private int ReadHex(int digits, int start, string what)
    {
        if (_pos + digits > _p.Length) throw Error($"a malformed '{what}' escape", start);
        int v = 0;
        for (int i = 0; i < digits; i++)
        {
            int d = HexValue(_p[_pos + i]);
            if (d < 0) throw Error($"a malformed '{what}' escape", start);
            v = v * 16 + d;
        }
        _pos += digits;
        return v;
    }

    private static int HexValue(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => c - 'a' + 10,
        >= 'A' and <= 'F' => c - 'A' + 10,
        _ => -1,
    };

    private int ReadUnicodeEscape(int start)
    {
        if (!AtEnd && _p[_pos] == '{')
        {
            int close = _p.IndexOf('}', _pos);
            if (close < 0 || close == _pos + 1) throw Error("a malformed '\\u{...}' escape", start);
            long v = 0;
            for (int i = _pos + 1; i < close; i++)
            {
                int d = HexValue(_p[i]);
                if (d < 0) throw Error("a malformed '\\u{...}' escape", start);
                v = Math.Min(v * 16 + d, 0x7FFFFFFF);
            }
            if (v > CodePointSet.MaxCodePoint) throw Error("a '\\u{...}' escape above U+10FFFF", start);
            _pos = close + 1;
            return (int)v;
        }
        int cp = ReadHex(4, start, "\\u");
        // A surrogate pair written as two escapes is one code point.
        if (cp is >= 0xD800 and <= 0xDBFF && _pos + 6 <= _p.Length && _p[_pos] == '\\' && _p[_pos + 1] == 'u')
        {
            int save = _pos;
            _pos += 2;
            bool ok = true;
            int lo = 0;
            for (int i = 0; i < 4; i++)
            {
                int d = HexValue(_p[_pos + i]);
                if (d < 0) { ok = false; break; }
                lo = lo * 16 + d;
            }
            if (ok && lo is >= 0xDC00 and <= 0xDFFF)
            {
                _pos += 4;
                return char.ConvertToUtf32((char)cp, (char)lo);
            }
            _pos = save;
        }
        return cp;
    }
}
