using System.Globalization;
using System.Text;

namespace MiniCPM4.Constraints.Grammars;

/// <summary>
/// Reads a grammar written in a subset of Lark's EBNF (see docs/grammar-format.md) into a <see cref="Grammar"/>.
/// <para>
/// Supported: rules <c>name: expansion | ...</c> (lower-case names; the <c>?</c> and <c>!</c> prefixes, a leading
/// <c>_</c>, priorities <c>.N</c> and aliases <c>-&gt; name</c> are accepted and do not change the language), terminals
/// <c>NAME: expansion</c> (upper-case names; the expansion must be regular and becomes one lexeme), sequences,
/// <c>|</c>, <c>( )</c>, <c>[ ]</c>, <c>? * +</c>, <c>~ n</c> and <c>~ n..m</c>, string literals (with the
/// <c>i</c> flag), regular expressions <c>/.../</c> (ECMAScript syntax, whole-lexeme match, the <c>i</c> flag),
/// literal ranges <c>"a".."z"</c>, <c>%ignore</c>, <c>%import common.NAME</c> and <c>// comments</c>.
/// </para>
/// <para>
/// Rejected with a <see cref="ConstraintCompileException"/> whose pointer is <c>line:column</c>: syntax errors,
/// undefined or duplicate names, a missing <c>start</c> rule, rules that can never derive a finite string, recursion
/// among terminals, rules inside terminals, terminals that match the empty string, templates, <c>%declare</c>,
/// <c>%override</c>, <c>%extend</c>, imports from modules other than <c>common</c>, and regex flags other than
/// <c>i</c>.
/// </para>
/// </summary>
public static class LarkGrammar
{
    /// <summary>Parses and compiles <paramref name="text"/>; the rule named <c>start</c> is the start symbol.</summary>
    /// <exception cref="ConstraintCompileException">The grammar is malformed or uses an unsupported
    /// construct.</exception>
    public static Grammar Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var file = new LarkParser(text).ParseFile();
        return new LarkCompiler(file).Compile();
    }
}

/// <summary>A position in the grammar text (1-based line and column, columns in UTF-16 units).</summary>
internal readonly record struct LarkPos(int Line, int Column)
{
    public override string ToString() => Line.ToString(CultureInfo.InvariantCulture) + ":" +
                                         Column.ToString(CultureInfo.InvariantCulture);

    public ConstraintCompileException Error(string keyword, string message) =>
        new(message, keyword, ToString());
}

// ---- Syntax tree ----------------------------------------------------------------------------------------------

internal abstract record LarkExpr(LarkPos Pos);
/// <summary>A string literal; <paramref name="IgnoreCase"/> for <c>"..."i</c>.</summary>
internal sealed record LarkLiteral(LarkPos Pos, string Text, bool IgnoreCase) : LarkExpr(Pos);
/// <summary>A regular expression <c>/Pattern/Flags</c> (the pattern with <c>\/</c> already unescaped).</summary>
internal sealed record LarkRegex(LarkPos Pos, string Pattern, bool IgnoreCase) : LarkExpr(Pos);
/// <summary>A code point range <c>"a".."z"</c>.</summary>
internal sealed record LarkRange(LarkPos Pos, int From, int To) : LarkExpr(Pos);
/// <summary>A reference to a rule or a terminal.</summary>
internal sealed record LarkRef(LarkPos Pos, string Name, bool IsTerminal) : LarkExpr(Pos);
internal sealed record LarkSequence(LarkPos Pos, LarkExpr[] Items) : LarkExpr(Pos);
internal sealed record LarkAlternatives(LarkPos Pos, LarkExpr[] Items) : LarkExpr(Pos);
/// <summary><paramref name="Item"/> repeated <paramref name="Min"/>..<paramref name="Max"/> times (-1:
/// unbounded).</summary>
internal sealed record LarkRepeat(LarkPos Pos, LarkExpr Item, int Min, int Max) : LarkExpr(Pos);

/// <summary>A rule or terminal definition.</summary>
internal sealed record LarkDefinition(string Name, bool IsTerminal, LarkExpr Body, LarkPos Pos);

/// <summary>A parsed grammar file: definitions in source order, and the <c>%ignore</c> expansions.</summary>
internal sealed class LarkFile
{
    public List<LarkDefinition> Definitions { get; } = [];
    public Dictionary<string, LarkDefinition> ByName { get; } = new(StringComparer.Ordinal);
    public List<LarkExpr> Ignores { get; } = [];
}

// ---- Tokens ---------------------------------------------------------------------------------------------------

internal enum LarkTokenKind
{
    RuleName, TerminalName, String, Regex, Number,
    Colon, Bar, LParen, RParen, LBracket, RBracket, LBrace, RBrace,
    Question, Star, Plus, Bang, Tilde, Dot, DotDot, Arrow, Comma, Directive,
    Newline, End,
}

/// <summary>One token. For strings <see cref="Value"/> is the decoded text, for regexes the pattern; <see
/// cref="IgnoreCase"/> is the <c>i</c> flag of either.</summary>
internal readonly record struct LarkToken(LarkTokenKind Kind, string Text, LarkPos Pos, string Value = "",
    bool IgnoreCase = false);

/// <summary>Splits grammar text into tokens. A newline ends a statement, except inside brackets and before a line
/// that starts with <c>|</c> (which continues the previous definition's alternatives).</summary>
internal sealed class LarkLexer(string text)
{
    private readonly string _text = text;
    private int _pos;
    private int _line = 1;
    private int _lineStart;
    private int _depth;
    private readonly List<LarkToken> _tokens = [];

    private LarkPos Here => new(_line, _pos - _lineStart + 1);
    private LarkPos At(int index) => new(_line, index - _lineStart + 1);

    public List<LarkToken> Tokenize()
    {
        while (_pos < _text.Length)
        {
            char c = _text[_pos];
            if (c is ' ' or '\t' or '\f' or '\r' or '\v')
            {
                _pos++;
                continue;
            }
            if (c == '/' && Peek(1) == '/')
            {
                SkipComment();
                continue;
            }
            if (c == '\n')
            {
                if (_depth == 0 && !NextLineContinues() && _tokens.Count > 0 &&
                    _tokens[^1].Kind != LarkTokenKind.Newline)
                    _tokens.Add(new LarkToken(LarkTokenKind.Newline, "newline", Here));
                NewLine();
                continue;
            }
            var start = Here;
            switch (c)
            {
                case '"': _tokens.Add(ReadString()); continue;
                case '/': _tokens.Add(ReadRegex()); continue;
                case '%': _tokens.Add(ReadDirective()); continue;
                case ':': Add(LarkTokenKind.Colon, 1); continue;
                case '|': Add(LarkTokenKind.Bar, 1); continue;
                case '(': _depth++; Add(LarkTokenKind.LParen, 1); continue;
                case ')': _depth = Math.Max(0, _depth - 1); Add(LarkTokenKind.RParen, 1); continue;
                case '[': _depth++; Add(LarkTokenKind.LBracket, 1); continue;
                case ']': _depth = Math.Max(0, _depth - 1); Add(LarkTokenKind.RBracket, 1); continue;
                case '{': _depth++; Add(LarkTokenKind.LBrace, 1); continue;
                case '}': _depth = Math.Max(0, _depth - 1); Add(LarkTokenKind.RBrace, 1); continue;
                case '?': Add(LarkTokenKind.Question, 1); continue;
                case '*': Add(LarkTokenKind.Star, 1); continue;
                case '+': Add(LarkTokenKind.Plus, 1); continue;
                case '!': Add(LarkTokenKind.Bang, 1); continue;
                case '~': Add(LarkTokenKind.Tilde, 1); continue;
                case ',': Add(LarkTokenKind.Comma, 1); continue;
                case '.':
                    if (Peek(1) == '.') Add(LarkTokenKind.DotDot, 2);
                    else Add(LarkTokenKind.Dot, 1);
                    continue;
                case '-':
                    if (Peek(1) == '>')
                    {
                        Add(LarkTokenKind.Arrow, 2);
                        continue;
                    }
                    // A signed number is only meaningful as a priority (".-1").
                    if (_tokens.Count > 0 && _tokens[^1].Kind == LarkTokenKind.Dot && char.IsAsciiDigit(Peek(1)))
                    {
                        _tokens.Add(ReadNumber());
                        continue;
                    }
                    throw start.Error("-", "unexpected '-' (only '->' and negative priorities use it)");
            }
            if (char.IsAsciiDigit(c))
            {
                _tokens.Add(ReadNumber());
                continue;
            }
            if (char.IsAsciiLetter(c) || c == '_')
            {
                _tokens.Add(ReadName());
                continue;
            }
            throw start.Error(char.ConvertFromUtf32(char.IsSurrogate(c) && _pos + 1 < _text.Length
                    ? char.ConvertToUtf32(_text, _pos) : c),
                "unexpected character in grammar");
        }
        if (_tokens.Count > 0 && _tokens[^1].Kind != LarkTokenKind.Newline)
            _tokens.Add(new LarkToken(LarkTokenKind.Newline, "newline", Here));
        _tokens.Add(new LarkToken(LarkTokenKind.End, "end of grammar", Here));
        return _tokens;
    }

    private char Peek(int offset) => _pos + offset < _text.Length ? _text[_pos + offset] : '\0';

    private void Add(LarkTokenKind kind, int length)
    {
        _tokens.Add(new LarkToken(kind, _text.Substring(_pos, length), Here));
        _pos += length;
    }

    private void NewLine()
    {
        _pos++;
        _line++;
        _lineStart = _pos;
    }

    private void SkipComment()
    {
        while (_pos < _text.Length && _text[_pos] != '\n') _pos++;
    }

    /// <summary>Whether the next line with content (blank and comment-only lines skipped) starts with '|'.</summary>
    private bool NextLineContinues()
    {
        int i = _pos + 1;
        while (i < _text.Length)
        {
            char c = _text[i];
            if (c is ' ' or '\t' or '\f' or '\r' or '\v' or '\n') i++;
            else if (c == '/' && i + 1 < _text.Length && _text[i + 1] == '/')
                while (i < _text.Length && _text[i] != '\n') i++;
            else return c == '|';
        }
        return false;
    }

    private LarkToken ReadNumber()
    {
        var start = Here;
        int begin = _pos;
        if (_text[_pos] == '-') _pos++;
        while (_pos < _text.Length && char.IsAsciiDigit(_text[_pos])) _pos++;
        var digits = _text[begin.._pos];
        return new LarkToken(LarkTokenKind.Number, digits, start, digits);
    }

    private LarkToken ReadName()
    {
        var start = Here;
        int begin = _pos;
        while (_pos < _text.Length && (char.IsAsciiLetterOrDigit(_text[_pos]) || _text[_pos] == '_')) _pos++;
        var name = _text[begin.._pos];
        var letters = name.TrimStart('_');
        if (letters.Length == 0 || !char.IsAsciiLetter(letters[0]))
            throw start.Error(name, "a name must start with a letter (after any leading '_')");
        bool terminal = char.IsAsciiLetterUpper(letters[0]);
        foreach (char ch in letters)
            if (char.IsAsciiLetter(ch) && char.IsAsciiLetterUpper(ch) != terminal)
                throw start.Error(name, terminal
                    ? "a terminal name must be all upper-case (rule names are lower-case)"
                    : "a rule name must be all lower-case (terminal names are upper-case)");
        return new LarkToken(terminal ? LarkTokenKind.TerminalName : LarkTokenKind.RuleName, name, start, name);
    }

    private LarkToken ReadDirective()
    {
        var start = Here;
        int begin = _pos++;
        while (_pos < _text.Length && char.IsAsciiLetter(_text[_pos])) _pos++;
        var name = _text[begin.._pos];
        if (name.Length == 1) throw start.Error("%", "expected a directive name after '%'");
        return new LarkToken(LarkTokenKind.Directive, name, start, name);
    }

    private LarkToken ReadString()
    {
        var start = Here;
        int begin = _pos++;
        var value = new StringBuilder();
        while (true)
        {
            if (_pos >= _text.Length || _text[_pos] == '\n')
                throw start.Error("string", "unterminated string literal");
            char c = _text[_pos];
            if (c == '"')
            {
                _pos++;
                break;
            }
            if (c != '\\')
            {
                value.Append(c);
                _pos++;
                continue;
            }
            var escapePos = Here;
            char e = Peek(1);
            _pos += 2;
            switch (e)
            {
                case 'n': value.Append('\n'); break;
                case 't': value.Append('\t'); break;
                case 'r': value.Append('\r'); break;
                case 'f': value.Append('\f'); break;
                case 'v': value.Append('\v'); break;
                case '0': value.Append('\0'); break;
                case '\\': value.Append('\\'); break;
                case '"': value.Append('"'); break;
                case '\'': value.Append('\''); break;
                case '/': value.Append('/'); break;
                case 'x': AppendCodePoint(value, ReadHex(2, escapePos), escapePos); break;
                case 'u': AppendCodePoint(value, ReadHex(4, escapePos), escapePos); break;
                case 'U': AppendCodePoint(value, ReadHex(8, escapePos), escapePos); break;
                default:
                    throw escapePos.Error("\\" + e,
                        "unknown escape in string literal (supported: \\n \\t \\r \\f \\v \\0 \\\\ \\\" \\' \\/ " +
                            "\\xXX \\uXXXX \\UXXXXXXXX)");
            }
        }
        bool ignoreCase = false;
        if (_pos < _text.Length && _text[_pos] == 'i' &&
            !(_pos + 1 < _text.Length && (char.IsAsciiLetterOrDigit(_text[_pos + 1]) || _text[_pos + 1] == '_')))
        {
            ignoreCase = true;
            _pos++;
        }
        var s = value.ToString();
        // Pairs of \uXXXX surrogates have combined into one code point; a lone surrogate has no UTF-8 form.
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            else if (char.IsSurrogate(s[i]))
                throw start.Error("string", "string literal contains an unpaired surrogate (no UTF-8 encoding)");
        }
        return new LarkToken(LarkTokenKind.String, _text[begin.._pos], start, s, ignoreCase);
    }

    private int ReadHex(int digits, LarkPos escapePos)
    {
        if (_pos + digits > _text.Length)
            throw escapePos.Error("escape", $"expected {digits} hexadecimal digits");
        var hex = _text.AsSpan(_pos, digits);
        if (!int.TryParse(hex, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int value) ||
            hex.ContainsAny('+', '-', ' '))
            throw escapePos.Error("escape", $"expected {digits} hexadecimal digits");
        _pos += digits;
        return value;
    }

    private static void AppendCodePoint(StringBuilder sb, int cp, LarkPos escapePos)
    {
        if (cp is < 0 or > 0x10FFFF) throw escapePos.Error("escape", "code point above U+10FFFF");
        if (cp <= 0xFFFF) sb.Append((char)cp); // surrogates are checked once the literal is complete
        else sb.Append(char.ConvertFromUtf32(cp));
    }

    private LarkToken ReadRegex()
    {
        var start = Here;
        int begin = _pos++;
        var pattern = new StringBuilder();
        while (true)
        {
            if (_pos >= _text.Length || _text[_pos] == '\n')
                throw start.Error("regex", "unterminated regular expression");
            char c = _text[_pos];
            if (c == '/')
            {
                _pos++;
                break;
            }
            if (c == '\\' && _pos + 1 < _text.Length && _text[_pos + 1] != '\n')
            {
                // "\/" is a slash; every other escape is the pattern's business.
                if (_text[_pos + 1] == '/') pattern.Append('/');
                else pattern.Append(c).Append(_text[_pos + 1]);
                _pos += 2;
                continue;
            }
            pattern.Append(c);
            _pos++;
        }
        bool ignoreCase = false;
        while (_pos < _text.Length && "imslux".Contains(_text[_pos]))
        {
            if (_text[_pos] != 'i')
                throw Here.Error("/" + _text[_pos], $"regex flag '{_text[_pos]}' is not supported (only 'i' is)");
            ignoreCase = true;
            _pos++;
        }
        return new LarkToken(LarkTokenKind.Regex, _text[begin.._pos], start, pattern.ToString(), ignoreCase);
    }
}

// ---- Parser ---------------------------------------------------------------------------------------------------

/// <summary>Recursive-descent parser for the statement and expansion syntax.</summary>
internal sealed class LarkParser
{
    private readonly List<LarkToken> _tokens;
    private int _index;
    private readonly LarkFile _file = new();

    public LarkParser(string text) => _tokens = new LarkLexer(text).Tokenize();

    private LarkToken Current => _tokens[_index];
    private LarkToken PeekAt(int offset) => _tokens[Math.Min(_index + offset, _tokens.Count - 1)];
    private LarkToken Next() => _tokens[_index < _tokens.Count - 1 ? _index++ : _index];
    private bool At(LarkTokenKind kind) => Current.Kind == kind;

    private static string Describe(LarkToken t) => t.Kind switch
    {
        LarkTokenKind.Newline => "end of line",
        LarkTokenKind.End => "end of grammar",
        _ => "'" + t.Text + "'",
    };

    private ConstraintCompileException Unexpected(string expected)
    {
        var t = Current;
        return t.Pos.Error(t.Kind is LarkTokenKind.Newline or LarkTokenKind.End ? "syntax" : t.Text,
            $"syntax error: expected {expected}, found {Describe(t)}");
    }

    private LarkToken Expect(LarkTokenKind kind, string expected)
    {
        if (!At(kind)) throw Unexpected(expected);
        return Next();
    }

    private void EndOfStatement()
    {
        if (At(LarkTokenKind.End)) return;
        Expect(LarkTokenKind.Newline, "end of line");
    }

    public LarkFile ParseFile()
    {
        while (!At(LarkTokenKind.End))
        {
            if (At(LarkTokenKind.Newline)) Next();
            else if (At(LarkTokenKind.Directive)) ParseDirective();
            else ParseDefinition();
        }
        return _file;
    }

    private void ParseDefinition()
    {
        var first = Current;
        bool prefixed = false;
        while (At(LarkTokenKind.Question) || At(LarkTokenKind.Bang))
        {
            Next();
            prefixed = true;
        }
        if (!At(LarkTokenKind.RuleName) && !At(LarkTokenKind.TerminalName))
            throw Unexpected("a rule or terminal definition ('name: ...' or 'NAME: ...') or a directive");
        var name = Next();
        bool terminal = name.Kind == LarkTokenKind.TerminalName;
        if (terminal && prefixed)
            throw first.Pos.Error(first.Text, "the '?' and '!' prefixes apply to rules, not terminals");
        if (At(LarkTokenKind.LBrace))
            throw Current.Pos.Error("template", $"templates ('{name.Text}{{...}}') are not supported");
        if (At(LarkTokenKind.Dot))
        {
            // A priority: accepted and ignored (it steers Lark's parse-tree choices, not the language).
            Next();
            Expect(LarkTokenKind.Number, "a priority number after '.'");
        }
        Expect(LarkTokenKind.Colon, "':'");
        var body = ParseAlternatives(topLevel: true, name.Pos);
        EndOfStatement();
        Define(new LarkDefinition(name.Text, terminal, body, name.Pos));
    }

    private void Define(LarkDefinition def)
    {
        if (_file.ByName.TryGetValue(def.Name, out var previous))
            throw def.Pos.Error(def.Name,
                $"'{def.Name}' is defined twice (first at {previous.Pos}); %override and %extend are not supported");
        _file.ByName.Add(def.Name, def);
        _file.Definitions.Add(def);
    }

    private LarkExpr ParseAlternatives(bool topLevel, LarkPos pos)
    {
        var alternatives = new List<LarkExpr> { ParseAlternative(topLevel) };
        while (At(LarkTokenKind.Bar))
        {
            Next();
            alternatives.Add(ParseAlternative(topLevel));
        }
        return alternatives.Count == 1 ? alternatives[0] : new LarkAlternatives(pos, alternatives.ToArray());
    }

    private LarkExpr ParseAlternative(bool topLevel)
    {
        var pos = Current.Pos;
        var items = new List<LarkExpr>();
        while (Current.Kind is not (LarkTokenKind.Bar or LarkTokenKind.RParen or LarkTokenKind.RBracket
               or LarkTokenKind.Newline or LarkTokenKind.End or LarkTokenKind.Arrow))
            items.Add(ParseItem());
        if (At(LarkTokenKind.Arrow))
        {
            if (!topLevel) throw Current.Pos.Error("->", "an alias ('-> name') may only end a rule's alternative");
            // An alias renames the parse-tree node; it does not change the language.
            Next();
            if (!At(LarkTokenKind.RuleName) && !At(LarkTokenKind.TerminalName)) throw Unexpected("an alias name");
            Next();
        }
        return items.Count == 1 ? items[0] : new LarkSequence(pos, items.ToArray());
    }

    private LarkExpr ParseItem()
    {
        var atom = ParseAtom();
        var op = Current;
        switch (op.Kind)
        {
            case LarkTokenKind.Question:
                Next();
                return new LarkRepeat(op.Pos, atom, 0, 1);
            case LarkTokenKind.Star:
                Next();
                return new LarkRepeat(op.Pos, atom, 0, -1);
            case LarkTokenKind.Plus:
                Next();
                return new LarkRepeat(op.Pos, atom, 1, -1);
            case LarkTokenKind.Tilde:
            {
                Next();
                int min = ParseCount();
                int max = min;
                if (At(LarkTokenKind.DotDot))
                {
                    Next();
                    max = ParseCount();
                    if (max < min) throw op.Pos.Error("~", $"repetition range {min}..{max} is empty");
                }
                return new LarkRepeat(op.Pos, atom, min, max);
            }
            default:
                return atom;
        }
    }

    /// <summary>The largest count accepted by <c>~</c> (each copy costs grammar or regex size).</summary>
    internal const int MaxRepeatCount = 10_000;

    private int ParseCount()
    {
        var t = Expect(LarkTokenKind.Number, "a repetition count");
        if (t.Text.StartsWith('-') || !int.TryParse(t.Text, NumberStyles.None, CultureInfo.InvariantCulture,
                out int n) || n > MaxRepeatCount)
            throw t.Pos.Error("~", $"repetition count must be between 0 and {MaxRepeatCount}");
        return n;
    }

    private LarkExpr ParseAtom()
    {
        var t = Current;
        switch (t.Kind)
        {
            case LarkTokenKind.LParen:
            {
                Next();
                var inner = ParseAlternatives(topLevel: false, t.Pos);
                Expect(LarkTokenKind.RParen, "')'");
                return inner;
            }
            case LarkTokenKind.LBracket:
            {
                Next();
                var inner = ParseAlternatives(topLevel: false, t.Pos);
                Expect(LarkTokenKind.RBracket, "']'");
                return new LarkRepeat(t.Pos, inner, 0, 1);
            }
            case LarkTokenKind.String:
                Next();
                if (!At(LarkTokenKind.DotDot)) return new LarkLiteral(t.Pos, t.Value, t.IgnoreCase);
                {
                    Next();
                    var to = Expect(LarkTokenKind.String, "a string after '..'");
                    int from = RangeEnd(t), upTo = RangeEnd(to);
                    if (from > upTo) throw t.Pos.Error("..",
                        $"range {t.Text}..{to.Text} is empty (its start is above its end)");
                    return new LarkRange(t.Pos, from, upTo);
                }
            case LarkTokenKind.Regex:
                Next();
                return new LarkRegex(t.Pos, t.Value, t.IgnoreCase);
            case LarkTokenKind.RuleName:
            case LarkTokenKind.TerminalName:
                Next();
                if (At(LarkTokenKind.LBrace))
                    throw Current.Pos.Error("template", $"templates ('{t.Text}{{...}}') are not supported");
                return new LarkRef(t.Pos, t.Text, t.Kind == LarkTokenKind.TerminalName);
            default:
                throw Unexpected("a name, a string, a regular expression, '(' or '['");
        }
    }

    private static int RangeEnd(LarkToken t)
    {
        if (t.IgnoreCase) throw t.Pos.Error("..", "a range's ends take no 'i' flag");
        var s = t.Value;
        int cp = s.Length == 0 ? -1 : char.ConvertToUtf32(s, 0);
        if (cp < 0 || s.Length != (cp > 0xFFFF ? 2 : 1))
            throw t.Pos.Error("..", "each end of a range must be a single character");
        return cp;
    }

    // ---- Directives ----

    private void ParseDirective()
    {
        var d = Next();
        switch (d.Text)
        {
            case "%ignore":
            {
                if (Current.Kind is LarkTokenKind.Newline or LarkTokenKind.End)
                    throw Unexpected("a terminal, string or regex to ignore");
                _file.Ignores.Add(ParseAlternatives(topLevel: false, Current.Pos));
                EndOfStatement();
                break;
            }
            case "%import":
                ParseImport();
                break;
            case "%declare":
                throw d.Pos.Error("%declare",
                    "%declare is not supported: a declared terminal has no definition the engine could enforce");
            case "%override":
            case "%extend":
                throw d.Pos.Error(d.Text, $"{d.Text} is not supported (it only makes sense with imported grammars)");
            default:
                throw d.Pos.Error(d.Text, $"unknown directive {d.Text}");
        }
    }

    private void ParseImport()
    {
        if (At(LarkTokenKind.Dot)) throw Current.Pos.Error("%import", "relative imports are not supported");
        var path = new List<LarkToken> { ExpectName("a module name") };
        while (At(LarkTokenKind.Dot))
        {
            Next();
            path.Add(ExpectName("a name after '.'"));
        }
        var imports = new List<(LarkToken Name, LarkToken Alias)>();
        if (At(LarkTokenKind.LParen))
        {
            Next();
            do imports.Add((ExpectName("a name to import"), default));
            while (At(LarkTokenKind.Comma) && Next().Kind == LarkTokenKind.Comma);
            Expect(LarkTokenKind.RParen, "')' or ','");
        }
        else
        {
            if (path.Count < 2) throw Unexpected("'.NAME' or '(NAME, ...)' after the module name");
            var name = path[^1];
            path.RemoveAt(path.Count - 1);
            LarkToken alias = default;
            if (At(LarkTokenKind.Arrow))
            {
                Next();
                alias = ExpectName("a name after '->'");
            }
            imports.Add((name, alias));
        }
        EndOfStatement();
        var module = string.Join(".", path.Select(p => p.Text));
        if (module != "common")
            throw path[0].Pos.Error("%import",
                $"only the 'common' module can be imported (not '{module}')");
        foreach (var (name, alias) in imports)
        {
            if (!LarkCommon.Patterns.TryGetValue(name.Text, out var pattern))
                throw name.Pos.Error(name.Text,
                    $"'common' defines no terminal '{name.Text}' (available: " +
                        $"{string.Join(", ", LarkCommon.Patterns.Keys)})");
            var target = alias.Text ?? name.Text;
            if (alias.Text is not null && alias.Kind != LarkTokenKind.TerminalName)
                throw alias.Pos.Error(alias.Text, "an imported terminal needs an upper-case name");
            Define(new LarkDefinition(target, IsTerminal: true,
                new LarkRegex(name.Pos, pattern, IgnoreCase: false), alias.Text is null ? name.Pos : alias.Pos));
        }
    }

    private LarkToken ExpectName(string expected)
    {
        if (!At(LarkTokenKind.RuleName) && !At(LarkTokenKind.TerminalName)) throw Unexpected(expected);
        return Next();
    }
}

/// <summary>The terminals of Lark's <c>common</c> module that <c>%import</c> knows, as whole-lexeme ECMAScript
/// patterns with their usual meanings.</summary>
internal static class LarkCommon
{
    private const string Int = "[0-9]+";
    private const string Exp = "[eE][+-]?[0-9]+";
    private const string Decimal = "(?:[0-9]+\\.[0-9]*|\\.[0-9]+)";
    private const string Float = "(?:[0-9]+" + Exp + "|" + Decimal + "(?:" + Exp + ")?)";
    private const string Number = "(?:" + Float + "|" + Int + ")";

    public static readonly IReadOnlyDictionary<string, string> Patterns = new Dictionary<string, string>
    {
        ["DIGIT"] = "[0-9]",
        ["HEXDIGIT"] = "[0-9a-fA-F]",
        ["INT"] = Int,
        ["SIGNED_INT"] = "[+-]?" + Int,
        ["DECIMAL"] = Decimal,
        ["SIGNED_DECIMAL"] = "[+-]?" + Decimal,
        ["FLOAT"] = Float,
        ["SIGNED_FLOAT"] = "[+-]?" + Float,
        ["NUMBER"] = Number,
        ["SIGNED_NUMBER"] = "[+-]?" + Number,
        ["LCASE_LETTER"] = "[a-z]",
        ["UCASE_LETTER"] = "[A-Z]",
        ["LETTER"] = "[a-zA-Z]",
        ["WORD"] = "[a-zA-Z]+",
        ["CNAME"] = "[_a-zA-Z][_a-zA-Z0-9]*",
        // A double-quoted string: any character but a newline, a quote or a backslash, or a backslash and any
        // character but a newline.
        ["ESCAPED_STRING"] = "\"(?:[^\"\\\\\\n]|\\\\[^\\n])*\"",
        ["WS_INLINE"] = "[ \\t]+",
        ["WS"] = "[ \\t\\f\\r\\n]+",
        ["CR"] = "\\r",
        ["LF"] = "\\n",
        ["NEWLINE"] = "(?:\\r?\\n)+",
        ["SH_COMMENT"] = "#[^\\n]*",
        ["CPP_COMMENT"] = "//[^\\n]*",
        ["C_COMMENT"] = "/\\*(?:[^*]|\\*+[^*/])*\\*+/",
    };
}
