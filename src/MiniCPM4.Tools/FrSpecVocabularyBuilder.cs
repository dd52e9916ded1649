namespace MiniCPM4.Speculative;

/// <summary>
/// Builds an FR-Spec draft vocabulary (<see cref="FrSpecVocabulary"/>) from a corpus: the ids ranked by count
/// (descending; ties go to the lower id), ids never seen and all EOS ids dropped, the first <c>size − 1</c> kept and
/// the first EOS id appended. This is what FR-Spec intends; its scripts append EOS after the top <c>r</c> instead,
/// which can give <c>r + 1</c> ids or a duplicate.
/// </summary>
public static class FrSpecVocabularyBuilder
{
    /// <summary>
    /// Builds the list from a tokenized corpus: see <see cref="Build(TokenFrequencyCounter, int,
    /// IReadOnlyList{int})"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A corpus id is outside [0, <paramref
    /// name="vocabSize"/>).</exception>
    public static FrSpecVocabulary Build(IEnumerable<IReadOnlyList<int>> tokenizedCorpus, int size, int vocabSize,
        IReadOnlyList<int> eosTokenIds)
    {
        ArgumentNullException.ThrowIfNull(tokenizedCorpus);
        var counter = new TokenFrequencyCounter(vocabSize);
        foreach (var sequence in tokenizedCorpus)
        {
            ArgumentNullException.ThrowIfNull(sequence, nameof(tokenizedCorpus));
            for (int i = 0; i < sequence.Count; i++) counter.Add(sequence[i]);
        }
        return Build(counter, size, eosTokenIds);
    }

    /// <summary>
    /// Builds the list from token counts: the ids seen at least once that are not EOS ids, by count descending (ties:
    /// lower id first), the first <paramref name="size"/> − 1 of them, then <c>eosTokenIds[0]</c> last. The result has
    /// exactly <paramref name="size"/> unique ids — unless fewer than <paramref name="size"/> − 1 distinct non-EOS ids
    /// were seen, in which case it holds all of them plus the EOS id and is shorter than <paramref name="size"/>
    /// (ids never seen are never invented). The EOS id is included whether or not the corpus has it.
    /// </summary>
    /// <param name="counts">Token counts over the corpus.</param>
    /// <param name="size">The draft vocabulary size r (1 to <see cref="FrSpecVocabulary.MaxSize"/>).</param>
    /// <param name="eosTokenIds">The model's EOS ids, the one to force in first; all are excluded from the
    /// ranking.</param>
    public static FrSpecVocabulary Build(TokenFrequencyCounter counts, int size, IReadOnlyList<int> eosTokenIds)
    {
        ArgumentNullException.ThrowIfNull(counts);
        FrSpecVocabulary.CheckArguments(counts.VocabSize, eosTokenIds, size);
        var eos = new HashSet<int>(eosTokenIds);
        long[] c = counts.Counts.ToArray();
        var candidates = new List<int>();
        for (int id = 0; id < c.Length; id++)
        {
            if (c[id] > 0 && !eos.Contains(id)) candidates.Add(id);
        }
        candidates.Sort((a, b) => c[a] != c[b] ? c[b].CompareTo(c[a]) : a.CompareTo(b));
        int keep = Math.Min(size - 1, candidates.Count);
        var ids = new int[keep + 1];
        candidates.CopyTo(0, ids, 0, keep);
        ids[keep] = eosTokenIds[0];
        return FrSpecVocabulary.FromRankedIds(ids);
    }

}
