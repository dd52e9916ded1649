using MiniCPM4.Constraints.Grammars;

namespace MiniCPM4.Constraints.TokenMasks;

/// <summary>
/// Computes token masks for a grammar over one vocabulary: the tokens whose bytes can continue the output from a
/// matcher's state. Shared by every generation that uses the same grammar and vocabulary (callers lock it).
/// </summary>
/// <remarks>
/// A mask has two parts. Tokens whose bytes all stay inside the current lexeme depend on the lexer state alone:
/// they are found once per lexer state by walking the trie with the lexer DFA (pruning a subtree as soon as no lexeme
/// can continue) and cached, together with the trie nodes where the lexeme could end ("exits"). Tokens that cross a
/// lexeme boundary depend on the parser too: from each exit the parser scans the finished lexeme and the walk goes
/// on below that node, scanning again at each further boundary and taking the scans back (the parser is a stack)
/// on the way out. JSON output spends most tokens inside strings, keys and numbers, so most of a mask is a cached
/// copy.
/// </remarks>
internal sealed class TokenMaskComputer
{
    private readonly Lexer _lexer;
    private readonly TokenVocabulary _vocab;
    private readonly Dictionary<int, LexerStateMasks>[] _cache = [new(), new()];
    private int[] _states = new int[64];
    private int[] _nodes = new int[64];

    private sealed class LexerStateMasks(uint[] within, (int Node, int State)[] exits)
    {
        public readonly uint[] Within = within;
        public readonly (int Node, int State)[] Exits = exits;
    }

    public TokenMaskComputer(Lexer lexer, TokenVocabulary vocabulary)
    {
        _lexer = lexer;
        _vocab = vocabulary;
    }

    public TokenVocabulary Vocabulary => _vocab;
    public Lexer Lexer => _lexer;

    /// <summary>
    /// Writes the mask for <paramref name="matcher"/>'s state into <paramref name="mask"/>
    /// (<see cref="TokenVocabulary.MaskWords"/> words), stop tokens not included. <paramref name="atOutputStart"/>: no
    /// byte has been produced
    /// yet (a first piece loses its leading space). The matcher's state is unchanged afterwards.
    /// </summary>
    public void Compute(GrammarMatcher matcher, bool atOutputStart, Span<uint> mask)
    {
        var trie = atOutputStart ? _vocab.FirstTrie : _vocab.Trie;
        var cache = _cache[atOutputStart ? 1 : 0];
        int state = matcher.LexerState;
        if (!cache.TryGetValue(state, out var entry))
        {
            entry = WalkWithinLexeme(trie, state);
            cache.Add(state, entry);
        }
        entry.Within.CopyTo(mask);
        var parser = matcher.Parser;
        foreach (var (node, exitState) in entry.Exits)
        {
            if (!parser.Scan(_lexer.Accepting(exitState))) continue;
            int start = parser.LexerStart;
            for (int c = node + 1; c < trie.SubtreeEnd[node]; c = trie.SubtreeEnd[c])
            {
                byte b = trie.NodeByte[c];
                if (_lexer.Next(exitState, b) != Lexer.Dead) continue;  // the lexeme goes on: not an exit for c
                int next = _lexer.Next(start, b);
                if (next != Lexer.Dead) WalkAcrossLexemes(trie, parser, c, next, mask);
            }
            parser.Pop();
        }
    }

    // Depth-first over the trie from the root with the lexer alone; no parser step.
    private LexerStateMasks WalkWithinLexeme(TokenTrie trie, int rootState)
    {
        var within = new uint[_vocab.MaskWords];
        var exits = new List<(int, int)>();
        EnsureDepth(trie.MaxDepth + 1);
        var states = _states;
        var nodes = _nodes;
        var exitRecorded = new bool[trie.MaxDepth + 1];
        states[0] = rootState;
        nodes[0] = 0;
        exitRecorded[0] = false;
        var nodeByte = trie.NodeByte;
        var depth = trie.Depth;
        var subtreeEnd = trie.SubtreeEnd;
        var tokenStart = trie.TokenStart;
        var tokenIds = trie.TokenIds;
        int count = trie.NodeCount;
        for (int i = 1; i < count;)
        {
            int d = depth[i];
            int parentState = states[d - 1];
            int next = _lexer.Next(parentState, nodeByte[i]);
            if (next == Lexer.Dead)
            {
                if (!exitRecorded[d - 1] && !_lexer.Accepting(parentState).IsEmpty)
                {
                    exitRecorded[d - 1] = true;
                    exits.Add((nodes[d - 1], parentState));
                }
                i = subtreeEnd[i];
                continue;
            }
            states[d] = next;
            nodes[d] = i;
            exitRecorded[d] = false;
            for (int t = tokenStart[i]; t < tokenStart[i + 1]; t++)
            {
                int id = tokenIds[t];
                within[id >> 5] |= 1u << (id & 31);
            }
            i++;
        }
        return new LexerStateMasks(within, exits.ToArray());
    }

    // Below `node` (whose byte took the lexer to `state`): every token allowed, crossing lexeme boundaries with the
    // parser. Leaves the parser as it found it.
    private void WalkAcrossLexemes(TokenTrie trie, EarleyParser parser, int node, int state, Span<uint> mask)
    {
        for (int t = trie.TokenStart[node]; t < trie.TokenStart[node + 1]; t++)
        {
            int id = trie.TokenIds[t];
            mask[id >> 5] |= 1u << (id & 31);
        }
        int end = trie.SubtreeEnd[node];
        bool scanned = false, scanOk = false;
        int start = Lexer.Dead;
        // Children that continue the lexeme first (no parser step), then those that end it (one scan for all).
        for (int c = node + 1; c < end; c = trie.SubtreeEnd[c])
        {
            int next = _lexer.Next(state, trie.NodeByte[c]);
            if (next != Lexer.Dead) WalkAcrossLexemes(trie, parser, c, next, mask);
        }
        for (int c = node + 1; c < end; c = trie.SubtreeEnd[c])
        {
            byte b = trie.NodeByte[c];
            if (_lexer.Next(state, b) != Lexer.Dead) continue;
            if (!scanned)
            {
                scanned = true;
                var accepting = _lexer.Accepting(state);
                scanOk = !accepting.IsEmpty && parser.Scan(accepting);
                if (scanOk) start = parser.LexerStart;
            }
            if (!scanOk) break;
            int next = _lexer.Next(start, b);
            if (next != Lexer.Dead) WalkAcrossLexemes(trie, parser, c, next, mask);
        }
        if (scanOk) parser.Pop();
    }

    private void EnsureDepth(int n)
    {
        if (_states.Length >= n) return;
        _states = new int[n];
        _nodes = new int[n];
    }
}
