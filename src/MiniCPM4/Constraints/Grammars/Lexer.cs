using MiniCPM4.Constraints.Regex;

namespace MiniCPM4.Constraints.Grammars;

/// <summary>
/// The lexer of a <see cref="Grammar"/> as a lazily built DFA. A lexer state is the set of lexemes still alive,
/// each with its regex derivative (a regex term is itself a DFA state, see <see cref="RegexBuilder"/>); states are
/// interned to small ids and their byte transitions cached, so after warm-up a step is one array lookup. State 0
/// is dead (no lexeme can match). A start state (<see cref="StartState"/>) holds the lexemes the parser expects,
/// each preceded by the grammar's skip regex.
/// Lexing is greedy: a lexeme ends when the next byte continues no alive lexeme; the lexemes accepting at that point
/// are the matched terminals (several when their regexes overlap; the parser scans them all).
/// Not thread-safe.
/// </summary>
internal sealed class Lexer
{
    public const int Dead = 0;

    private readonly Grammar _grammar;
    private readonly RegexBuilder _regex;
    private readonly int[] _startTerms;   // per lexeme: Concat(skip, regex)
    private readonly List<State> _states = [];
    private readonly Dictionary<StateKey, int> _ids = [];

    private sealed class State(long[] pairs, int[] accepting, bool isStart)
    {
        public readonly long[] Pairs = pairs;          // (lexeme << 32) | term, sorted
        public readonly int[] Accepting = accepting;   // lexemes whose term is nullable (never in a start state)
        public readonly bool IsStart = isStart;
        public readonly int[] Next = CreateNext();

        private static int[] CreateNext()
        {
            var next = new int[256];
            Array.Fill(next, -1);
            return next;
        }
    }

    private readonly struct StateKey(long[] pairs, bool isStart) : IEquatable<StateKey>
    {
        public readonly long[] Pairs = pairs;
        public readonly bool IsStart = isStart;

        public bool Equals(StateKey other) => IsStart == other.IsStart && Pairs.AsSpan().SequenceEqual(other.Pairs);
        public override bool Equals(object? obj) => obj is StateKey k && Equals(k);

        public override int GetHashCode()
        {
            var h = new HashCode();
            h.Add(IsStart);
            foreach (long p in Pairs) h.Add(p);
            return h.ToHashCode();
        }
    }

    public Lexer(Grammar grammar)
    {
        _grammar = grammar;
        _regex = grammar.Regex;
        _startTerms = new int[grammar.LexemeRegexes.Count];
        for (int i = 0; i < _startTerms.Length; i++)
        {
            int lexeme = grammar.LexemeRegexes[i];
            if (_regex.IsNullable(lexeme))
                throw new ConstraintCompileException($"lexeme {grammar.LexemeNames[i]} matches the empty string",
                    "lexeme");
            _startTerms[i] = _regex.Concat(grammar.SkipRegex, lexeme);
        }
        _states.Add(new State([], [], false));  // Dead
        _ids.Add(new StateKey([], false), Dead);
    }

    public Grammar Grammar => _grammar;

    /// <summary>The start state for the expected lexemes (sorted, distinct).</summary>
    public int StartState(ReadOnlySpan<int> expectedLexemes)
    {
        var pairs = new long[expectedLexemes.Length];
        for (int i = 0; i < pairs.Length; i++)
            pairs[i] = ((long)expectedLexemes[i] << 32) | (uint)_startTerms[expectedLexemes[i]];
        return Intern(pairs, isStart: true);
    }

    /// <summary>The state after byte <paramref name="b"/>; <see cref="Dead"/> when no lexeme continues.</summary>
    public int Next(int state, byte b)
    {
        var s = _states[state];
        int next = s.Next[b];
        if (next >= 0) return next;
        next = Compute(s, b);
        s.Next[b] = next;
        return next;
    }

    /// <summary>The lexemes that would end here if the next byte continued none (empty in start states).</summary>
    public ReadOnlySpan<int> Accepting(int state) => _states[state].Accepting;

    public bool IsStart(int state) => _states[state].IsStart;

    private int Compute(State s, byte b)
    {
        if (s.Pairs.Length == 0) return Dead;
        var pairs = new List<long>(s.Pairs.Length);
        foreach (long p in s.Pairs)
        {
            int d = _regex.Derivative((int)p, b);
            if (d == RegexBuilder.Nothing || _regex.IsDead(d)) continue;
            pairs.Add((p & unchecked((long)0xFFFFFFFF00000000)) | (uint)d);
        }
        if (pairs.Count == 0) return Dead;
        pairs.Sort();
        return Intern(pairs.ToArray(), isStart: false);
    }

    private int Intern(long[] pairs, bool isStart)
    {
        if (pairs.Length == 0) return Dead;
        var key = new StateKey(pairs, isStart);
        if (_ids.TryGetValue(key, out int id)) return id;
        int[] accepting = [];
        if (!isStart)
        {
            var acc = new List<int>();
            foreach (long p in pairs)
                if (_regex.IsNullable((int)p)) acc.Add((int)(p >> 32));
            accepting = acc.ToArray();
        }
        id = _states.Count;
        _states.Add(new State(pairs, accepting, isStart));
        _ids.Add(key, id);
        return id;
    }
}
