namespace MiniCPM4.Server;

/// <summary>The log-probability of one generated token and the most likely alternatives at its position.</summary>
internal readonly record struct TokenLogprob(int Id, double Logprob, (int Id, double Logprob)[] Top)
{
    /// <summary>The text this token added to the output (set when it is emitted).</summary>
    public string Text { get; init; } = "";
}

/// <summary>
/// Log-probabilities of generated tokens, from the model's own next-token distribution: the log-softmax of the
/// logits at temperature 1, before temperature, top-k, top-p, min-p, penalties and any constraint's token mask are
/// applied. That is the distribution every sampled token is drawn from before those transformations (and the one
/// greedy decoding takes the maximum of). A second session follows the generation token by token to compute it,
/// so requesting logprobs costs about one extra decode step per token.
/// </summary>
internal sealed class LogprobScorer : IDisposable
{
    private readonly MiniCpmSession _session;
    private readonly int _top;
    private float[]? _pending;

    public LogprobScorer(MiniCpmModel model, SessionOptions options, int top)
    {
        _session = model.CreateSession(options);
        _top = top;
    }

    /// <summary>Makes <paramref name="tokens"/> the context; the next token scored is the one after them.</summary>
    public void SetContext(ReadOnlySpan<int> tokens, CancellationToken cancellationToken)
    {
        if (tokens.Length > 1) _session.SetPrompt(tokens[..^1], cancellationToken);
        else _session.Reset();
        _pending = _session.PrefillWithLogits(tokens[^1..], allPositions: false, cancellationToken);
    }

    /// <summary>Scores <paramref name="token"/> at the current position, then appends it.</summary>
    public TokenLogprob Next(int token)
    {
        var logits = _pending ?? throw new InvalidOperationException("SetContext first");
        var result = Score(logits, token, _top);
        _pending = _session.Decode(token);
        return result;
    }

    internal static TokenLogprob Score(ReadOnlySpan<float> logits, int token, int top)
    {
        // log p(i) = logit(i) - logsumexp(logits), summed in double.
        float max = float.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (var v in logits) sum += Math.Exp(v - max);
        double logZ = max + Math.Log(sum);
        var best = new List<(int Id, double Logprob)>(top + 1);
        if (top > 0)
        {
            for (int i = 0; i < logits.Length; i++)
            {
                double lp = logits[i] - logZ;
                if (best.Count == top && lp <= best[^1].Logprob) continue;
                int at = best.Count;
                while (at > 0 && best[at - 1].Logprob < lp) at--;
                best.Insert(at, (i, lp));
                if (best.Count > top) best.RemoveAt(best.Count - 1);
            }
        }
        return new TokenLogprob(token, logits[token] - logZ, [.. best]);
    }

    public void Dispose() => _session.Dispose();
}
