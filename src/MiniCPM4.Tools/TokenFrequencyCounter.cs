namespace MiniCPM4.Speculative;

/// <summary>
/// Counts how often each token id occurs in a tokenized corpus, for <see
/// cref="FrSpecVocabularyBuilder.Build(TokenFrequencyCounter, int, IReadOnlyList{int})"/>.
/// Memory is one 64-bit counter per vocabulary entry, whatever the corpus size, so a corpus can be streamed
/// through it. Not thread-safe.
/// </summary>
public sealed class TokenFrequencyCounter
{
    private readonly long[] _counts;

    /// <summary>Creates a counter for ids in [0, <paramref name="vocabSize"/>).</summary>
    public TokenFrequencyCounter(int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        _counts = new long[vocabSize];
    }

    /// <summary>The number of token ids (the model's vocab_size).</summary>
    public int VocabSize => _counts.Length;

    /// <summary>Tokens counted so far.</summary>
    public long TotalTokens { get; private set; }

    /// <summary>Distinct ids seen so far.</summary>
    public int DistinctTokens { get; private set; }

    /// <summary>How often <paramref name="tokenId"/> was seen.</summary>
    public long this[int tokenId] => (uint)tokenId < (uint)_counts.Length
        ? _counts[tokenId]
        : throw new ArgumentOutOfRangeException(nameof(tokenId), tokenId, $"token ids are in [0, {_counts.Length})");

    /// <summary>Counts one token.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The id is outside [0, <see cref="VocabSize"/>) (the tokenizer does
    /// not match the model).</exception>
    public void Add(int tokenId)
    {
        if ((uint)tokenId >= (uint)_counts.Length)
            throw new ArgumentOutOfRangeException(nameof(tokenId), tokenId,
                $"token id {tokenId} is outside the vocabulary [0, {_counts.Length}): the tokenizer does not match " +
                    $"the model");
        if (_counts[tokenId]++ == 0) DistinctTokens++;
        TotalTokens++;
    }

    /// <summary>Counts a sequence of tokens.</summary>
    public void Add(ReadOnlySpan<int> tokenIds)
    {
        foreach (int id in tokenIds) Add(id);
    }

    /// <summary>
    /// The fraction of all counted tokens whose id is in <paramref name="tokenIds"/> (each distinct id counted once):
    /// how much of the corpus a draft restricted to those ids could have proposed. 0 when nothing was counted.
    /// </summary>
    public double Coverage(IEnumerable<int> tokenIds)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        if (TotalTokens == 0) return 0;
        var seen = new HashSet<int>();
        long covered = 0;
        foreach (int id in tokenIds)
        {
            if ((uint)id < (uint)_counts.Length && seen.Add(id)) covered += _counts[id];
        }
        return covered / (double)TotalTokens;
    }

    internal ReadOnlySpan<long> Counts => _counts;
}
