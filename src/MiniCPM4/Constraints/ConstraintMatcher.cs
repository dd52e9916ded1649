using MiniCPM4.Constraints.Grammars;
using MiniCPM4.Constraints.TokenMasks;

namespace MiniCPM4.Constraints;

/// <summary>
/// The state of one constrained generation: the grammar matcher after the tokens generated so far, with a checkpoint
/// per token so that any prefix can be restored (a speculative round asks for masks along draft paths, then the
/// accepted path continues). All work happens under the constraint's lock, since the lexer and mask caches are shared.
/// </summary>
internal sealed class ConstraintMatcher
{
    private readonly OutputConstraint _constraint;
    private readonly TokenMaskComputer _computer;
    private readonly GrammarMatcher _matcher;
    private readonly List<int> _tokens = [];
    // _checkpoints[k] / _atStart[k]: the state after k tokens, and whether those k tokens produced no byte.
    private readonly List<GrammarMatcher.Checkpoint> _checkpoints = [];
    private readonly List<bool> _atStart = [];
    private readonly int[] _stopIds;

    internal ConstraintMatcher(OutputConstraint constraint, TokenMaskComputer computer, IReadOnlyList<int> stopIds)
    {
        _constraint = constraint;
        _computer = computer;
        _stopIds = stopIds.Where(id => (uint)id < (uint)computer.Vocabulary.Size).Distinct().ToArray();
        lock (constraint.Gate)
        {
            _matcher = new GrammarMatcher(computer.Lexer);
            _checkpoints.Add(_matcher.Save());
        }
        _atStart.Add(true);
    }

    public TokenVocabulary Vocabulary => _computer.Vocabulary;
    public int MaskWords => _computer.Vocabulary.MaskWords;
    /// <summary>Tokens consumed so far.</summary>
    public IReadOnlyList<int> Tokens => _tokens;
    private bool AtStart => _atStart[^1];

    /// <summary>Whether the output may end here (the stop tokens are allowed).</summary>
    public bool IsComplete
    {
        get
        {
            lock (_constraint.Gate) return _matcher.IsComplete;
        }
    }

    /// <summary>Consumes one token; false (state unchanged) when the grammar does not allow it.</summary>
    public bool TryAdvance(int token)
    {
        lock (_constraint.Gate) return AdvanceLocked(token);
    }

    /// <summary>
    /// Makes the state the one after <paramref name="tokens"/>: restores the longest common prefix with the tokens
    /// consumed so far and consumes the rest. Throws <see cref="InvalidOperationException"/> naming the first token
    /// the grammar does not allow (the state is then the one before it).
    /// </summary>
    public void Sync(ReadOnlySpan<int> tokens)
    {
        lock (_constraint.Gate)
        {
            int common = 0;
            while (common < _tokens.Count && common < tokens.Length && _tokens[common] == tokens[common]) common++;
            if (common < _tokens.Count)
            {
                _matcher.Restore(_checkpoints[common]);
                _tokens.RemoveRange(common, _tokens.Count - common);
                _checkpoints.RemoveRange(common + 1, _checkpoints.Count - common - 1);
                _atStart.RemoveRange(common + 1, _atStart.Count - common - 1);
            }
            for (int i = common; i < tokens.Length; i++)
                if (!AdvanceLocked(tokens[i]))
                    throw new InvalidOperationException(
                        $"token {tokens[i]} at output position {i} is not allowed by the {_constraint.Kind} " +
                            $"constraint");
        }
    }

    /// <summary>Writes the allowed tokens (stop ids when complete) as a bitmask of <see cref="MaskWords"/>
    /// words.</summary>
    public void ComputeMask(Span<uint> mask)
    {
        lock (_constraint.Gate)
        {
            _computer.Compute(_matcher, AtStart, mask);
            if (_matcher.IsComplete)
                foreach (int stop in _stopIds) mask[stop >> 5] |= 1u << (stop & 31);
        }
    }

    /// <summary>
    /// The bytes every continuation must start with (up to <paramref name="max"/>), when the output cannot end here:
    /// while exactly one byte is allowed, it is forced. Empty when there is a choice.
    /// </summary>
    public byte[] ForcedBytes(int max)
    {
        lock (_constraint.Gate)
        {
            var saved = _matcher.Save();
            var forced = new List<byte>();
            try
            {
                while (forced.Count < max && !_matcher.IsComplete)
                {
                    int only = -1;
                    for (int b = 0; b < 256; b++)
                    {
                        var before = _matcher.Save();
                        if (!_matcher.TryConsume((byte)b)) continue;
                        _matcher.Restore(before);
                        if (only >= 0)
                        {
                            only = -2;
                            break;
                        }
                        only = b;
                    }
                    if (only < 0) break;
                    _matcher.TryConsume((byte)only);
                    forced.Add((byte)only);
                }
            }
            finally
            {
                _matcher.Restore(saved);
            }
            return forced.ToArray();
        }
    }

    private bool AdvanceLocked(int token)
    {
        var vocab = _computer.Vocabulary;
        if ((uint)token >= (uint)vocab.Size) return false;
        var bytes = AtStart ? vocab.FirstBytes[token] : vocab.Bytes[token];
        if (bytes is null || !_matcher.TryConsume(bytes)) return false;
        _tokens.Add(token);
        _checkpoints.Add(_matcher.Save());
        _atStart.Add(false);
        return true;
    }
}
