using System.Diagnostics;
using MiniCPM4.Constraints.TokenMasks;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Constraints;

/// <summary>
/// Checks texts against output constraints the way generation applies them (<c>minicpm4 constraint-check</c>): the
/// text is tokenized as generated text and, token by token, the token mask is computed (and timed) and the token must
/// be in it. Not thread-safe (one mask buffer).
/// </summary>
public sealed class ConstraintChecker
{
    private readonly MiniCpmTokenizer _tokenizer;
    private readonly TokenVocabulary _vocabulary;
    private readonly int[] _stops;
    private readonly uint[] _mask;

    /// <summary>A checker over <paramref name="tokenizer"/>'s vocabulary; its EOS id ends a complete text.</summary>
    public ConstraintChecker(MiniCpmTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        _tokenizer = tokenizer;
        _vocabulary = TokenVocabulary.FromTokenizer(tokenizer);
        _stops = [tokenizer.EosId];
        _mask = new uint[_vocabulary.MaskWords];
    }

    /// <summary>Compiles the constraint for this vocabulary.</summary>
    /// <exception cref="ConstraintCompileException">The constraint cannot be compiled.</exception>
    public void Compile(OutputConstraint constraint)
    {
        ArgumentNullException.ThrowIfNull(constraint);
        constraint.CreateMatcher(_vocabulary, _stops);
    }

    /// <summary>
    /// Whether every token of <paramref name="text"/> was allowed (<c>Accepted</c>) and EOS is allowed after it
    /// (<c>Complete</c>), the number of tokens, and the microseconds each mask took (one per token, then the last).
    /// </summary>
    public (bool Accepted, bool Complete, int Tokens, List<double> MaskUs) Check(OutputConstraint constraint,
        string text)
    {
        ArgumentNullException.ThrowIfNull(constraint);
        ArgumentNullException.ThrowIfNull(text);
        var ids = _tokenizer.EncodeGenerated(text);
        var matcher = constraint.CreateMatcher(_vocabulary, _stops);
        var times = new List<double>(ids.Length + 1);
        foreach (int id in ids)
        {
            long t0 = Stopwatch.GetTimestamp();
            matcher.ComputeMask(_mask);
            times.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
            if ((_mask[id >> 5] & (1u << (id & 31))) == 0) return (false, false, ids.Length, times);
            if (!matcher.TryAdvance(id))
                throw new InvalidOperationException(
                    $"token {id} was in the mask but the matcher rejected it (engine bug)");
        }
        long t1 = Stopwatch.GetTimestamp();
        matcher.ComputeMask(_mask);
        times.Add(Stopwatch.GetElapsedTime(t1).TotalMicroseconds);
        bool complete = _stops.Any(s => (_mask[s >> 5] & (1u << (s & 31))) != 0);
        return (true, complete, ids.Length, times);
    }
}
