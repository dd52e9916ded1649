using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using MiniCPM4.Constraints.Regex;

namespace MiniCPM4.Constraints.Grammars;

/// <summary>
/// Turns a parsed <see cref="LarkFile"/> into a <see cref="Grammar"/>: checks names, terminal recursion and
/// productivity on the syntax tree first (so those errors point at the source), then compiles every terminal to one
/// regex and every rule reachable from <c>start</c> to productions. Inline strings and regexes in rules become
/// anonymous lexemes; lexemes are interned by regex, so the same literal written twice is one terminal.
/// </summary>
internal sealed class LarkCompiler
{
    private readonly LarkFile _file;
    private readonly RegexBuilder _rb = new();
    private readonly GrammarBuilder _gb;
    private readonly Dictionary<string, int> _terminalRegex = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Symbol> _ruleSymbols = new(StringComparer.Ordinal);
    private readonly Queue<LarkDefinition> _pending = new();
    private readonly HashSet<int> _checkedLexemes = [];

    public LarkCompiler(LarkFile file)
    {
        _file = file;
        _gb = new GrammarBuilder(_rb);
    }

    public Grammar Compile()
    {
        if (!_file.ByName.TryGetValue("start", out var start) || start.IsTerminal)
            throw new LarkPos(1, 1).Error("start", "the grammar has no 'start' rule");
        CheckReferences();
        CheckTerminalRecursion();
        CheckProductive();

        // Every terminal compiles, used or not, so that a bad pattern never hides in an unused definition.
        foreach (var def in _file.Definitions)
            if (def.IsTerminal) TerminalRegex(def);
        if (_file.Ignores.Count > 0)
        {
            var ignored = _file.Ignores.Select(RegexOf).ToArray();
            _gb.SkipRegex = _rb.Star(_rb.Or(ignored));
        }

        var startSymbol = RuleSymbol("start");
        while (_pending.TryDequeue(out var rule)) CompileRule(rule);
        return _gb.Build(startSymbol);
    }

    // ---- Checks on the syntax tree ----

    private static IEnumerable<LarkExpr> Children(LarkExpr e) => e switch
    {
        LarkSequence s => s.Items,
        LarkAlternatives a => a.Items,
        LarkRepeat r => [r.Item],
        _ => [],
    };

    private static IEnumerable<LarkRef> References(LarkExpr e)
    {
        if (e is LarkRef r) yield return r;
        foreach (var child in Children(e))
            foreach (var inner in References(child))
                yield return inner;
    }

    private void CheckReferences()
    {
        foreach (var def in _file.Definitions)
            foreach (var r in References(def.Body))
            {
                CheckDefined(r);
                if (def.IsTerminal && !r.IsTerminal)
                    throw r.Pos.Error(r.Name,
                        $"terminal '{def.Name}' uses rule '{r.Name}'; a terminal may only use strings, regexes and " +
                            $"other terminals");
            }
        foreach (var ignore in _file.Ignores)
            foreach (var r in References(ignore))
            {
                CheckDefined(r);
                if (!r.IsTerminal)
                    throw r.Pos.Error("%ignore", $"%ignore takes terminals, strings and regexes, not rule '{r.Name}'");
            }
    }

    private void CheckDefined(LarkRef r)
    {
        if (!_file.ByName.ContainsKey(r.Name))
            throw r.Pos.Error(r.Name, r.IsTerminal
                ? $"undefined terminal '{r.Name}' (define it, or %import common.{r.Name})"
                : $"undefined rule '{r.Name}'");
    }

    private void CheckTerminalRecursion()
    {
        var state = new Dictionary<string, int>(StringComparer.Ordinal); // 1: on the stack, 2: done
        var stack = new List<string>();

        void Visit(LarkDefinition def)
        {
            state[def.Name] = 1;
            stack.Add(def.Name);
            foreach (var r in References(def.Body))
            {
                state.TryGetValue(r.Name, out int s);
                if (s == 1)
                {
                    var cycle = stack.Skip(stack.IndexOf(r.Name)).Append(r.Name);
                    throw r.Pos.Error(r.Name,
                        $"recursion in terminals ({string.Join(" -> ", cycle)}): a terminal must be regular; write " +
                            $"it as a rule instead");
                }
                if (s == 0) Visit(_file.ByName[r.Name]);
            }
            stack.RemoveAt(stack.Count - 1);
            state[def.Name] = 2;
        }

        foreach (var def in _file.Definitions)
            if (def.IsTerminal && !state.ContainsKey(def.Name))
                Visit(def);
    }

    private void CheckProductive()
    {
        var productive = new HashSet<string>(StringComparer.Ordinal);

        bool Derives(LarkExpr e) => e switch
        {
            LarkRef { IsTerminal: false } r => productive.Contains(r.Name),
            LarkSequence s => s.Items.All(Derives),
            LarkAlternatives a => a.Items.Any(Derives),
            LarkRepeat r => r.Min == 0 || Derives(r.Item),
            _ => true,
        };

        var rules = _file.Definitions.Where(d => !d.IsTerminal).ToList();
        for (bool changed = true; changed;)
        {
            changed = false;
            foreach (var rule in rules)
                if (!productive.Contains(rule.Name) && Derives(rule.Body))
                    changed = productive.Add(rule.Name) | changed;
        }
        var stuck = rules.Where(r => !productive.Contains(r.Name)).ToList();
        if (stuck.Count > 0)
            throw stuck[0].Pos.Error(stuck[0].Name,
                $"rule '{stuck[0].Name}' can never derive a finite string: every alternative needs one of these " +
                    $"rules again: " +
                string.Join(", ", stuck.Select(r => $"{r.Name} ({r.Pos})")));
    }

    // ---- Terminals ----

    private int TerminalRegex(LarkDefinition def)
    {
        if (!_terminalRegex.TryGetValue(def.Name, out int id))
        {
            id = RegexOf(def.Body);
            _terminalRegex.Add(def.Name, id);
        }
        return id;
    }

    /// <summary>The regex of a terminal expansion (regular by the checks above).</summary>
    private int RegexOf(LarkExpr e)
    {
        switch (e)
        {
            case LarkLiteral l:
                return l.IgnoreCase ? CaselessLiteral(l.Text) : _rb.Literal(l.Text);
            case LarkRegex r:
                return PatternRegex(r);
            case LarkRange g:
                return CodePointRange(g.From, g.To);
            case LarkRef r:
                return TerminalRegex(_file.ByName[r.Name]);
            case LarkSequence s:
            {
                if (s.Items.Length == 0) return RegexBuilder.Empty;
                var parts = s.Items.Select(RegexOf).ToArray();
                return _rb.Concat(parts);
            }
            case LarkAlternatives a:
            {
                var parts = a.Items.Select(RegexOf).ToArray();
                return _rb.Or(parts);
            }
            case LarkRepeat p:
            {
                int item = RegexOf(p.Item);
                return (p.Min, p.Max) switch
                {
                    (0, 1) => _rb.Optional(item),
                    (0, -1) => _rb.Star(item),
                    (1, -1) => _rb.Plus(item),
                    _ => _rb.Repeat(item, p.Min, p.Max),
                };
            }
            default:
                throw new InvalidOperationException("unknown grammar expression " + e.GetType().Name);
        }
    }

    private int PatternRegex(LarkRegex r)
    {
        try
        {
            return _rb.Pattern(LarkPatterns.Translate(r.Pattern, r.IgnoreCase), CharEncoding.Utf8, search: false);
        }
        catch (RegexNotSupportedException ex)
        {
            throw new ConstraintCompileException($"regular expression /{r.Pattern}/: {ex.Message}",
                "/" + r.Pattern + "/" + (r.IgnoreCase ? "i" : ""), r.Pos.ToString(), ex);
        }
    }

    /// <summary>The literal with each character matching its upper- and lower-case forms (simple case mapping,
    /// code point by code point).</summary>
    private int CaselessLiteral(string text)
    {
        var parts = new List<int>();
        foreach (var rune in text.EnumerateRunes())
        {
            var forms = new HashSet<Rune> { rune, Rune.ToLowerInvariant(rune), Rune.ToUpperInvariant(rune) };
            if (forms.Count == 1) parts.Add(_rb.Literal(rune.ToString()));
            else parts.Add(_rb.Or(forms.Select(f => _rb.Literal(f.ToString())).ToArray()));
        }
        return parts.Count == 0 ? RegexBuilder.Empty : _rb.Concat(CollectionsMarshal.AsSpan(parts));
    }

    /// <summary>The UTF-8 encodings of the code points <paramref name="from"/>..<paramref name="to"/>
    /// (surrogates excluded).</summary>
    private int CodePointRange(int from, int to)
    {
        var parts = new List<int>();
        foreach (
            var (lo, hi) in new[] { (0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF) })
        {
            int a = Math.Max(lo, from), b = Math.Min(hi, to);
            if (a <= b) parts.Add(Utf8Span(Encode(a), Encode(b), 0));
        }
        return parts.Count == 0 ? RegexBuilder.Nothing : _rb.Or(CollectionsMarshal.AsSpan(parts));
    }

    private static byte[] Encode(int codePoint)
    {
        var bytes = new byte[4];
        int n = new Rune(codePoint).EncodeToUtf8(bytes);
        return bytes[..n];
    }

    /// <summary>Byte strings s (same length as <paramref name="a"/> and <paramref name="b"/>) with a[i..] ≤ s[i..] ≤
    /// b[i..] in byte order, every byte after position i a continuation byte.</summary>
    private int Utf8Span(byte[] a, byte[] b, int i)
    {
        int last = a.Length - 1;
        if (i == last) return _rb.ByteRange(a[i], b[i]);
        if (a[i] == b[i]) return _rb.Concat(_rb.ByteRange(a[i], a[i]), Utf8Span(a, b, i + 1));
        var aTop = (byte[])a.Clone();
        var bBottom = (byte[])b.Clone();
        for (int j = i + 1; j <= last; j++)
        {
            aTop[j] = 0xBF;
            bBottom[j] = 0x80;
        }
        var parts = new List<int> { _rb.Concat(_rb.ByteRange(a[i], a[i]), Utf8Span(a, aTop, i + 1)) };
        if (a[i] + 1 <= b[i] - 1)
            parts.Add(_rb.Concat(_rb.ByteRange((byte)(a[i] + 1), (byte)(b[i] - 1)),
                _rb.Repeat(_rb.ByteRange(0x80, 0xBF), last - i, last - i)));
        parts.Add(_rb.Concat(_rb.ByteRange(b[i], b[i]), Utf8Span(bBottom, b, i + 1)));
        return _rb.Or(CollectionsMarshal.AsSpan(parts));
    }

    // ---- Rules ----

    private Symbol RuleSymbol(string name)
    {
        if (!_ruleSymbols.TryGetValue(name, out var symbol))
        {
            symbol = _gb.Nonterminal(name);
            _ruleSymbols.Add(name, symbol);
            _pending.Enqueue(_file.ByName[name]);
        }
        return symbol;
    }

    private static LarkExpr[] Alternatives(LarkExpr e) => e is LarkAlternatives a ? a.Items : [e];

    private void CompileRule(LarkDefinition rule)
    {
        var nt = _ruleSymbols[rule.Name];
        foreach (var alternative in Alternatives(rule.Body))
            _gb.AddRule(nt, Flatten(alternative, rule.Name));
    }

    private Symbol[] Flatten(LarkExpr e, string context)
    {
        var symbols = new List<Symbol>();
        void Add(LarkExpr x)
        {
            if (x is LarkSequence s)
                foreach (var item in s.Items) Add(item);
            else symbols.Add(Item(x, context));
        }
        Add(e);
        return symbols.ToArray();
    }

    private Symbol Item(LarkExpr e, string context)
    {
        switch (e)
        {
            case LarkLiteral or LarkRegex or LarkRange:
                return Lexeme(RegexOf(e), AnonymousName(e), e.Pos);
            case LarkRef { IsTerminal: true } r:
                return Lexeme(TerminalRegex(_file.ByName[r.Name]), r.Name, r.Pos);
            case LarkRef r:
                return RuleSymbol(r.Name);
            case LarkSequence s:
                return _gb.Sequence(context + ".group", Flatten(s, context));
            case LarkAlternatives a:
            {
                var nt = _gb.Nonterminal(context + ".choice");
                foreach (var alternative in a.Items) _gb.AddRule(nt, Flatten(alternative, context));
                return nt;
            }
            case LarkRepeat { Min: 0, Max: 1 } p:
            {
                var nt = _gb.Nonterminal(context + ".optional");
                _gb.AddRule(nt);
                foreach (var alternative in Alternatives(p.Item)) _gb.AddRule(nt, Flatten(alternative, context));
                return nt;
            }
            case LarkRepeat p:
                return _gb.Repeat(context + ".repeat", Item(p.Item, context), null, p.Min, p.Max);
            default:
                throw new InvalidOperationException("unknown grammar expression " + e.GetType().Name);
        }
    }

    private Symbol Lexeme(int regex, string name, LarkPos pos)
    {
        if (_checkedLexemes.Add(regex))
        {
            if (_rb.IsNullable(regex))
                throw pos.Error(name,
                    $"terminal {name} matches the empty string; a terminal must match at least one character (make " +
                        $"it optional in a rule instead)");
            if (_rb.IsDead(regex))
                throw pos.Error(name, $"terminal {name} matches no string at all");
        }
        return _gb.Lexeme(regex, name);
    }

    private static string AnonymousName(LarkExpr e) => e switch
    {
        LarkLiteral l => Quote(l.Text) + (l.IgnoreCase ? "i" : ""),
        LarkRegex r => "/" + r.Pattern + "/" + (r.IgnoreCase ? "i" : ""),
        LarkRange g => Quote(char.ConvertFromUtf32(g.From)) + ".." + Quote(char.ConvertFromUtf32(g.To)),
        _ => e.GetType().Name,
    };

    private static string Quote(string text)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in text)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\t': sb.Append("\\t"); break;
                case '\r': sb.Append("\\r"); break;
                default:
                    if (c < 0x20) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }
}

/// <summary>
/// Rewrites a Lark regex into the ECMAScript pattern <see cref="RegexBuilder.Pattern"/> reads: Python's named groups
/// <c>(?P&lt;name&gt;</c> become <c>(?&lt;name&gt;</c>, and with the <c>i</c> flag every literal letter matches its
/// other
/// case (outside classes <c>a</c> becomes <c>[aA]</c>; inside a class its other-case forms, ranges included, are
/// added). Letters written as escapes (<c>\x41</c>, <c>\u0041</c>) and property classes are not case-folded.
/// </summary>
internal static class LarkPatterns
{
    public static string Translate(string pattern, bool ignoreCase)
    {
        var sb = new StringBuilder(pattern.Length + 8);
        int i = 0;
        while (i < pattern.Length)
        {
            char c = pattern[i];
            if (c == '\\')
            {
                int n = EscapeLength(pattern, i);
                sb.Append(pattern, i, n);
                i += n;
            }
            else if (c == '[')
            {
                i = TranslateClass(pattern, i, ignoreCase, sb);
            }
            else if (c == '(' && At(pattern, i + 1, '?'))
            {
                if (At(pattern, i + 2, 'P') && At(pattern, i + 3, '<'))
                {
                    sb.Append("(?");
                    i = CopyGroupName(pattern, i + 3, sb);
                }
                else if (At(pattern, i + 2, '<') && !At(pattern, i + 3, '=') && !At(pattern, i + 3, '!'))
                {
                    sb.Append("(?");
                    i = CopyGroupName(pattern, i + 2, sb);
                }
                else
                {
                    // (?: (?= (?! (?<= (?<! carry no letters; inline flags like (?i) are copied unchanged and
                    // rejected by the pattern compiler.
                    sb.Append("(?");
                    i += 2;
                    while (i < pattern.Length && char.IsAsciiLetter(pattern[i])) sb.Append(pattern[i++]);
                }
            }
            else if (ignoreCase && Forms(c) is { Count: > 1 } forms)
            {
                sb.Append('[');
                foreach (char f in forms) sb.Append(f);
                sb.Append(']');
                i++;
            }
            else
            {
                sb.Append(c);
                i++;
            }
        }
        return sb.ToString();
    }

    private static bool At(string s, int i, char c) => i < s.Length && s[i] == c;

    /// <summary>Copies "&lt;name&gt;" starting at <paramref name="i"/> (the '&lt;'); returns the index after
    /// it.</summary>
    private static int CopyGroupName(string p, int i, StringBuilder sb)
    {
        int end = p.IndexOf('>', i);
        end = end < 0 ? p.Length : end + 1;
        sb.Append(p, i, end - i);
        return end;
    }

    /// <summary>The length of the escape at <paramref name="i"/> (a backslash).</summary>
    private static int EscapeLength(string p, int i)
    {
        if (i + 1 >= p.Length) return 1;
        int n = p[i + 1] switch
        {
            'u' when At(p, i + 2, '{') => Through(p, i, '}'),
            'u' => 6,
            'x' => 4,
            'c' => 3,
            'p' or 'P' when At(p, i + 2, '{') => Through(p, i, '}'),
            'k' when At(p, i + 2, '<') => Through(p, i, '>'),
            _ => 2,
        };
        return Math.Min(n, p.Length - i);
    }

    private static int Through(string p, int i, char close)
    {
        int end = p.IndexOf(close, i);
        return end < 0 ? p.Length - i : end + 1 - i;
    }

    private static int TranslateClass(string p, int i, bool ignoreCase, StringBuilder sb)
    {
        sb.Append('[');
        i++;
        if (At(p, i, '^'))
        {
            sb.Append('^');
            i++;
        }
        var extra = new SortedSet<char>();
        while (i < p.Length && p[i] != ']')
        {
            bool literal = p[i] != '\\';
            int n = literal ? 1 : EscapeLength(p, i);
            int next = i + n;
            if (At(p, next, '-') && next + 1 < p.Length && p[next + 1] != ']')
            {
                int j = next + 1;
                bool literal2 = p[j] != '\\';
                int n2 = literal2 ? 1 : EscapeLength(p, j);
                sb.Append(p, i, j + n2 - i);
                if (ignoreCase && literal && literal2) AddOtherCases(p[i], p[j], extra);
                i = j + n2;
            }
            else
            {
                sb.Append(p, i, n);
                if (ignoreCase && literal) AddOtherCases(p[i], p[i], extra);
                i = next;
            }
        }
        // Other-case forms outside the class's own ranges, as \u ranges.
        var list = extra.ToList();
        for (int k = 0; k < list.Count;)
        {
            int run = k;
            while (run + 1 < list.Count && list[run + 1] == list[run] + 1) run++;
            sb.Append(CultureInfo.InvariantCulture, $"\\u{(int)list[k]:X4}");
            if (run > k) sb.Append(CultureInfo.InvariantCulture, $"-\\u{(int)list[run]:X4}");
            k = run + 1;
        }
        if (i < p.Length)
        {
            sb.Append(']');
            i++;
        }
        return i;
    }

    private static void AddOtherCases(char lo, char hi, SortedSet<char> extra)
    {
        for (int c = lo; c <= hi; c++)
            foreach (char f in Forms((char)c))
                if (f < lo || f > hi) extra.Add(f);
    }

    /// <summary>A character and its simple upper- and lower-case forms (surrogates: just itself).</summary>
    private static List<char> Forms(char c)
    {
        var forms = new List<char> { c };
        if (char.IsSurrogate(c)) return forms;
        char lower = char.ToLowerInvariant(c), upper = char.ToUpperInvariant(c);
        if (!forms.Contains(lower)) forms.Add(lower);
        if (!forms.Contains(upper)) forms.Add(upper);
        return forms;
    }
}
