namespace MiniCPM4.Constraints.Grammars;

/// <summary>
/// Matches bytes against a <see cref="Grammar"/> one byte at a time: the lexer DFA inside a lexeme, the Earley parser
/// where a lexeme ends. The state is (parser stack depth, lexer state), so any earlier state can be restored with
/// <see cref="Restore"/> as long as the parser has not been moved below it. Not thread-safe.
/// </summary>
internal sealed class GrammarMatcher
{
    private readonly Lexer _lexer;
    private readonly EarleyParser _parser;
    private int _lexerState;

    /// <summary>A restorable matcher state.</summary>
    public readonly record struct Checkpoint(int ParserDepth, int LexerState);

    public GrammarMatcher(Grammar grammar) : this(new Lexer(grammar))
    {
    }

    public GrammarMatcher(Lexer lexer)
    {
        _lexer = lexer;
        _parser = new EarleyParser(lexer.Grammar, lexer);
        _lexerState = _parser.LexerStart;
    }

    public Lexer Lexer => _lexer;
    internal EarleyParser Parser => _parser;
    public int LexerState => _lexerState;

    public Checkpoint Save() => new(_parser.Depth, _lexerState);

    public void Restore(Checkpoint c)
    {
        _parser.PopTo(c.ParserDepth);
        _lexerState = c.LexerState;
    }

    public void Reset()
    {
        _parser.Reset();
        _lexerState = _parser.LexerStart;
    }

    /// <summary>Consumes one byte; false (state unchanged) when the grammar does not allow it here.</summary>
    public bool TryConsume(byte b)
    {
        int next = _lexer.Next(_lexerState, b);
        if (next != Lexer.Dead)
        {
            _lexerState = next;
            return true;
        }
        // The byte continues no lexeme: the current one ends here (if it can), and the byte starts the next.
        var accepting = _lexer.Accepting(_lexerState);
        if (accepting.IsEmpty || !_parser.Scan(accepting)) return false;
        next = _lexer.Next(_parser.LexerStart, b);
        if (next == Lexer.Dead)
        {
            _parser.Pop();
            return false;
        }
        _lexerState = next;
        return true;
    }

    /// <summary>Consumes bytes; on failure restores the state before the call and returns false.</summary>
    public bool TryConsume(ReadOnlySpan<byte> bytes)
    {
        var saved = Save();
        foreach (byte b in bytes)
            if (!TryConsume(b))
            {
                Restore(saved);
                return false;
            }
        return true;
    }

    /// <summary>Whether the input so far is complete (the output may end here).</summary>
    public bool IsComplete
    {
        get
        {
            // Nothing of a lexeme consumed yet: complete when the parser accepts.
            if (_lexerState == Lexer.Dead || _lexer.IsStart(_lexerState)) return _parser.Accepts;
            var accepting = _lexer.Accepting(_lexerState);
            if (accepting.IsEmpty || !_parser.Scan(accepting)) return false;
            bool accepts = _parser.Accepts;
            _parser.Pop();
            return accepts;
        }
    }

    /// <summary>Whether <paramref name="utf8"/> as a whole is a sentence of <paramref name="grammar"/>.</summary>
    public static bool Accepts(Grammar grammar, ReadOnlySpan<byte> utf8)
    {
        var m = new GrammarMatcher(grammar);
        return m.TryConsume(utf8) && m.IsComplete;
    }
}
