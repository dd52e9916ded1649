namespace MiniCPM4.Constraints.Grammars;

/// <summary>
/// An Earley parser over lexemes with a stack discipline: each scanned set of terminals pushes one Earley set,
/// and <see cref="Pop"/> removes the newest, which is how the token-mask walk tries continuations and takes them
/// back. Nullable nonterminals are handled as Aycock and Horspool do (predicting a nullable symbol also moves the
/// dot over it). Each set also knows the lexemes it expects, as a lexer start state.
/// Not thread-safe.
/// </summary>
internal sealed class EarleyParser
{
    private readonly Grammar _g;
    private readonly Lexer _lexer;
    // LR(0) items: item id = _itemBase[production] + dot.
    private readonly int[] _itemBase;
    private readonly int[] _itemProduction;
    private readonly int[] _itemDot;
    private readonly Symbol[] _itemNext;     // the symbol after the dot; Value = int.MinValue when complete
    private readonly List<EarleySet> _sets = [];
    private readonly Stack<EarleySet> _pool = new();
    private readonly Dictionary<TerminalSetKey, int> _startStates = [];

    private static readonly Symbol Complete = new(int.MinValue);

    private sealed class EarleySet
    {
        public readonly List<long> Items = [];               // (origin << 32) | item id
        public readonly HashSet<long> Seen = [];
        public readonly Dictionary<int, List<int>> WaitingOn = [];  // nonterminal -> indices into Items
        public readonly List<int> Expected = [];             // lexemes after a dot, distinct
        public readonly HashSet<int> ExpectedSeen = [];
        public int LexerStart;
        public bool Accepts;

        public void Clear()
        {
            Items.Clear();
            Seen.Clear();
            foreach (var l in WaitingOn.Values) l.Clear();
            Expected.Clear();
            ExpectedSeen.Clear();
            LexerStart = Lexer.Dead;
            Accepts = false;
        }
    }

    private readonly struct TerminalSetKey(int[] lexemes) : IEquatable<TerminalSetKey>
    {
        public readonly int[] Lexemes = lexemes;
        public bool Equals(TerminalSetKey other) => Lexemes.AsSpan().SequenceEqual(other.Lexemes);
        public override bool Equals(object? obj) => obj is TerminalSetKey k && Equals(k);
        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (int l in Lexemes) h.Add(l);
            return h.ToHashCode();
        }
    }

    public EarleyParser(Grammar grammar, Lexer lexer)
    {
        _g = grammar;
        _lexer = lexer;
        var prods = grammar.Productions;
        _itemBase = new int[prods.Count];
        int total = 0;
        for (int p = 0; p < prods.Count; p++)
        {
            _itemBase[p] = total;
            total += prods[p].Rhs.Length + 1;
        }
        _itemProduction = new int[total];
        _itemDot = new int[total];
        _itemNext = new Symbol[total];
        for (int p = 0; p < prods.Count; p++)
        {
            var rhs = prods[p].Rhs;
            for (int d = 0; d <= rhs.Length; d++)
            {
                int id = _itemBase[p] + d;
                _itemProduction[id] = p;
                _itemDot[id] = d;
                _itemNext[id] = d < rhs.Length ? rhs[d] : Complete;
            }
        }
        Reset();
    }

    /// <summary>Earley sets on the stack (1 after <see cref="Reset"/>).</summary>
    public int Depth => _sets.Count;

    /// <summary>Whether the input so far is a complete sentence.</summary>
    public bool Accepts => _sets[^1].Accepts;

    /// <summary>The lexer start state of the newest set (<see cref="Lexer.Dead"/> when nothing can follow).</summary>
    public int LexerStart => _sets[^1].LexerStart;

    public void Reset()
    {
        while (_sets.Count > 0) Pop();
        var set0 = Rent();
        _sets.Add(set0);
        foreach (int p in _g.ProductionsOf[_g.Start]) Add(set0, _itemBase[p], 0);
        Close(set0, 0);
    }

    /// <summary>Scans the matched terminals: pushes a set and returns true, or returns false (nothing pushed) when
    /// no item expects any of them.</summary>
    public bool Scan(ReadOnlySpan<int> lexemes)
    {
        var current = _sets[^1];
        int k = _sets.Count;
        EarleySet? next = null;
        for (int i = 0; i < current.Items.Count; i++)
        {
            long item = current.Items[i];
            var sym = _itemNext[(int)item];
            if (!sym.IsTerminal || sym.Value == int.MinValue || lexemes.IndexOf(sym.Lexeme) < 0) continue;
            next ??= Rent();
            Add(next, (int)item + 1, (int)(item >> 32));
        }
        if (next is null) return false;
        _sets.Add(next);
        Close(next, k);
        return true;
    }

    /// <summary>Removes the newest set (never the first).</summary>
    public void Pop()
    {
        var set = _sets[^1];
        _sets.RemoveAt(_sets.Count - 1);
        set.Clear();
        _pool.Push(set);
    }

    /// <summary>Pops sets until <paramref name="depth"/> remain.</summary>
    public void PopTo(int depth)
    {
        while (_sets.Count > depth) Pop();
    }

    private EarleySet Rent() => _pool.Count > 0 ? _pool.Pop() : new EarleySet();

    private static void Add(EarleySet set, int item, int origin)
    {
        long key = ((long)origin << 32) | (uint)item;
        if (set.Seen.Add(key)) set.Items.Add(key);
    }

    // Predict and complete until nothing changes; then the set's expected lexemes and acceptance.
    private void Close(EarleySet set, int k)
    {
        for (int i = 0; i < set.Items.Count; i++)
        {
            long key = set.Items[i];
            int item = (int)key;
            int origin = (int)(key >> 32);
            var sym = _itemNext[item];
            if (sym.Value == int.MinValue)
            {
                // Complete: advance the items of the origin set that wait on this nonterminal.
                int lhs = _g.Productions[_itemProduction[item]].Lhs;
                if (origin == k)
                {
                    // An empty derivation: the waiting items were (or will be) advanced by the nullable rule.
                    if (lhs == _g.Start && origin == 0) set.Accepts = true;
                    continue;
                }
                if (lhs == _g.Start && origin == 0) set.Accepts = true;
                var originSet = _sets[origin];
                if (originSet.WaitingOn.TryGetValue(lhs, out var waiting))
                    foreach (int w in waiting)
                    {
                        long wk = originSet.Items[w];
                        Add(set, (int)wk + 1, (int)(wk >> 32));
                    }
            }
            else if (sym.IsTerminal)
            {
                if (set.ExpectedSeen.Add(sym.Lexeme)) set.Expected.Add(sym.Lexeme);
            }
            else
            {
                int nt = sym.Nonterminal;
                if (!set.WaitingOn.TryGetValue(nt, out var list))
                {
                    list = [];
                    set.WaitingOn.Add(nt, list);
                }
                bool firstWaiter = list.Count == 0;
                list.Add(i);
                if (firstWaiter)
                    foreach (int p in _g.ProductionsOf[nt]) Add(set, _itemBase[p], k);
                if (_g.Nullable[nt]) Add(set, item + 1, origin);
            }
        }
        if (set.Expected.Count == 0)
        {
            set.LexerStart = Lexer.Dead;
            return;
        }
        var lexemes = set.Expected.ToArray();
        Array.Sort(lexemes);
        var skey = new TerminalSetKey(lexemes);
        if (!_startStates.TryGetValue(skey, out int start))
        {
            start = _lexer.StartState(lexemes);
            _startStates.Add(skey, start);
        }
        set.LexerStart = start;
    }
}
