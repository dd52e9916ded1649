using MiniCPM4.Constraints.Regex;

namespace MiniCPM4.Constraints.Grammars;

/// <summary>A grammar symbol: a terminal (a lexeme, by index) or a nonterminal (by index).</summary>
public readonly record struct Symbol(int Value)
{
    public bool IsTerminal => Value < 0;
    /// <summary>The lexeme index of a terminal.</summary>
    public int Lexeme => ~Value;
    /// <summary>The nonterminal index of a nonterminal.</summary>
    public int Nonterminal => Value;
    public static Symbol Terminal(int lexeme) => new(~lexeme);
    public static Symbol Rule(int nonterminal) => new(nonterminal);
}

/// <summary>One production: <see cref="Lhs"/> → <see cref="Rhs"/> (empty: ε).</summary>
public sealed record Production(int Lhs, Symbol[] Rhs);

/// <summary>
/// A context-free grammar over lexemes. Each lexeme is a byte-level regular expression of the grammar's
/// <see cref="RegexBuilder"/>; the lexer matches lexemes greedily (the longest match, no backtracking), and
/// <see cref="SkipRegex"/> (whitespace, say) may come before every lexeme. Immutable once built.
/// </summary>
public sealed class Grammar
{
    internal Grammar(RegexBuilder regex, int[] lexemeRegexes, string[] lexemeNames, string[] nonterminalNames,
        Production[] productions, int start, int skipRegex)
    {
        Regex = regex;
        LexemeRegexes = lexemeRegexes;
        LexemeNames = lexemeNames;
        NonterminalNames = nonterminalNames;
        Productions = productions;
        Start = start;
        SkipRegex = skipRegex;
        var byLhs = new List<int>[nonterminalNames.Length];
        for (int i = 0; i < byLhs.Length; i++) byLhs[i] = [];
        for (int p = 0; p < productions.Length; p++) byLhs[productions[p].Lhs].Add(p);
        ProductionsOf = byLhs.Select(l => l.ToArray()).ToArray();
        Nullable = ComputeNullable();
    }

    public RegexBuilder Regex { get; }
    /// <summary>The regex of each lexeme.</summary>
    public IReadOnlyList<int> LexemeRegexes { get; }
    public IReadOnlyList<string> LexemeNames { get; }
    public IReadOnlyList<string> NonterminalNames { get; }
    public IReadOnlyList<Production> Productions { get; }
    /// <summary>Production indices by left-hand side.</summary>
    public int[][] ProductionsOf { get; }
    /// <summary>Which nonterminals derive ε.</summary>
    public bool[] Nullable { get; }
    /// <summary>The start nonterminal.</summary>
    public int Start { get; }
    /// <summary>What may precede every lexeme (<see cref="RegexBuilder.Empty"/>: nothing).</summary>
    public int SkipRegex { get; }

    /// <summary>Whether the grammar has any sentence (the builder keeps only productions that can complete, so
    /// the start symbol has one exactly when it derives some string).</summary>
    public bool HasSentence() => ProductionsOf[Start].Length > 0;

    private bool[] ComputeNullable()
    {
        var nullable = new bool[NonterminalNames.Count];
        for (bool changed = true; changed;)
        {
            changed = false;
            foreach (var p in Productions)
            {
                if (nullable[p.Lhs]) continue;
                if (p.Rhs.All(s => !s.IsTerminal && nullable[s.Nonterminal]))
                {
                    nullable[p.Lhs] = true;
                    changed = true;
                }
            }
        }
        return nullable;
    }
}

/// <summary>Builds a <see cref="Grammar"/>. Lexemes are interned by regex, so equal regexes share a terminal.</summary>
public sealed class GrammarBuilder(RegexBuilder regex)
{
    private readonly List<int> _lexemeRegexes = [];
    private readonly List<string> _lexemeNames = [];
    private readonly Dictionary<int, int> _lexemeByRegex = [];
    private readonly List<string> _nonterminalNames = [];
    private readonly List<Production> _productions = [];
    private readonly HashSet<int> _defined = [];

    public RegexBuilder Regex { get; } = regex;

    /// <summary>What may precede every lexeme; default nothing (<see cref="RegexBuilder.Empty"/>).</summary>
    public int SkipRegex { get; set; } = RegexBuilder.Empty;

    /// <summary>The terminal matching <paramref name="regexId"/> (one per distinct regex).</summary>
    public Symbol Lexeme(int regexId, string? name = null)
    {
        if (!_lexemeByRegex.TryGetValue(regexId, out int index))
        {
            index = _lexemeRegexes.Count;
            _lexemeRegexes.Add(regexId);
            _lexemeNames.Add(name ?? Regex.Describe(regexId));
            _lexemeByRegex.Add(regexId, index);
        }
        return Symbol.Terminal(index);
    }

    /// <summary>The terminal matching exactly the UTF-8 bytes of <paramref name="text"/>.</summary>
    public Symbol Literal(string text) => Lexeme(Regex.Literal(text), "\"" + text + "\"");

    /// <summary>A fresh nonterminal (names need not be unique; they are for messages).</summary>
    public Symbol Nonterminal(string name)
    {
        _nonterminalNames.Add(name);
        return Symbol.Rule(_nonterminalNames.Count - 1);
    }

    /// <summary>Adds <paramref name="lhs"/> → <paramref name="rhs"/> (no symbols: ε).</summary>
    public void AddRule(Symbol lhs, params ReadOnlySpan<Symbol> rhs)
    {
        if (lhs.IsTerminal) throw new ArgumentException("a rule's left-hand side must be a nonterminal", nameof(lhs));
        _productions.Add(new Production(lhs.Nonterminal, rhs.ToArray()));
        _defined.Add(lhs.Nonterminal);
    }

    /// <summary>A nonterminal for the sequence <paramref name="items"/>.</summary>
    public Symbol Sequence(string name, params ReadOnlySpan<Symbol> items)
    {
        var nt = Nonterminal(name);
        AddRule(nt, items);
        return nt;
    }

    /// <summary>A nonterminal for any one of <paramref name="alternatives"/>.</summary>
    public Symbol Choice(string name, params ReadOnlySpan<Symbol> alternatives)
    {
        var nt = Nonterminal(name);
        foreach (var a in alternatives) AddRule(nt, a);
        return nt;
    }

    /// <summary>A nonterminal for <paramref name="item"/> or nothing.</summary>
    public Symbol Optional(Symbol item)
    {
        var nt = Nonterminal("optional");
        AddRule(nt);
        AddRule(nt, item);
        return nt;
    }

    /// <summary>
    /// A nonterminal for <paramref name="min"/> to <paramref name="max"/> (-1: unbounded) copies of
    /// <paramref name="item"/>, with <paramref name="separator"/> (if given) between copies.
    /// </summary>
    public Symbol Repeat(string name, Symbol item, Symbol? separator, int min, int max)
    {
        if (min < 0 || (max >= 0 && max < min)) throw new ArgumentOutOfRangeException(nameof(max));
        // tail(k): up to k more (separator item) pairs; unbounded: a right-recursive list.
        Symbol SepItem()
        {
            if (separator is not Symbol sep) return item;
            return Sequence(name + ".next", sep, item);
        }
        var result = Nonterminal(name);
        if (max == 0)
        {
            AddRule(result);
            return result;
        }
        var next = SepItem();
        // More(k) = ε | next More(k-1) (bounded) or More = ε | next More (unbounded).
        Symbol more;
        int optionalCount = max < 0 ? -1 : max - Math.Max(min, 1);
        if (optionalCount < 0)
        {
            more = Nonterminal(name + ".more");
            AddRule(more);
            AddRule(more, next, more);
        }
        else
        {
            more = Nonterminal(name + ".more0");
            AddRule(more);
            for (int k = 1; k <= optionalCount; k++)
            {
                var m = Nonterminal(name + ".more" + k);
                AddRule(m);
                AddRule(m, next, more);
                more = m;
            }
        }
        // Required part: item (next){min-1}, then more.
        var required = new List<Symbol> { item };
        for (int i = 1; i < min; i++) required.Add(next);
        required.Add(more);
        AddRule(result, required.ToArray());
        if (min == 0) AddRule(result);
        return result;
    }

    /// <summary>Builds the grammar. Throws <see cref="ArgumentException"/> when a nonterminal has no rule.</summary>
    public Grammar Build(Symbol start)
    {
        if (start.IsTerminal)
        {
            var s = Nonterminal("start");
            AddRule(s, start);
            start = s;
        }
        for (int i = 0; i < _nonterminalNames.Count; i++)
            if (!_defined.Contains(i))
                throw new ArgumentException($"nonterminal '{_nonterminalNames[i]}' has no rule");
        return new Grammar(Regex, _lexemeRegexes.ToArray(), _lexemeNames.ToArray(), _nonterminalNames.ToArray(),
            ProductiveProductions(), start.Nonterminal, SkipRegex);
    }

    // The productions whose every symbol derives some string (a lexeme that matches something, a productive
    // nonterminal). The others can never complete, so the parser never predicts them: every prefix the grammar
    // accepts then extends to a sentence, and a mask never leads into a dead end.
    private Production[] ProductiveProductions()
    {
        var productive = new bool[_nonterminalNames.Count];
        bool Derives(Symbol sym) => sym.IsTerminal ? !Regex.IsDead(_lexemeRegexes[sym.Lexeme])
            : productive[sym.Nonterminal];
        for (bool changed = true; changed;)
        {
            changed = false;
            foreach (var p in _productions)
            {
                if (productive[p.Lhs] || !p.Rhs.All(Derives)) continue;
                productive[p.Lhs] = true;
                changed = true;
            }
        }
        return _productions.Where(p => p.Rhs.All(Derives)).ToArray();
    }
}
