using System.Globalization;

namespace MiniCPM4.Speculative;

/// <summary>
/// The FR-Spec draft vocabulary: the token ids, ranked by corpus frequency, to which speculative decoding
/// restricts the EAGLE draft model's LM head. Row <c>i</c> of the restricted head is token <c>TokenIds[i]</c>.
/// An instance always holds a valid list: non-empty, unique ids inside the model's vocabulary, at least one of the
/// model's EOS ids among them. Immutable and thread-safe.
/// </summary>
/// <remarks>
/// <para><b>Files.</b> CPM.cu and FR-Spec publish the list as <c>freq_&lt;r&gt;.pt</c>, written by
/// <c>torch.save(list_of_python_ints)</c>: PyTorch's zip container whose <c>&lt;archive&gt;/data.pkl</c> is a pickled
/// list. <see cref="Load"/> reads it without unpickling in the Python sense (only the opcodes of a list of ints are
/// accepted, and nothing is ever imported or called), and also reads a 1-D int32/int64 little-endian <c>.npy</c> array
/// or a <c>.safetensors</c> file with exactly one 1-D I32/I64 tensor. The format is detected from the content, not
/// the extension. <see cref="Save"/> writes the torch format (readable by <c>torch.load(f, weights_only=True)</c>),
/// or <c>.npy</c> / <c>.safetensors</c> by extension.</para>
/// <para><b>Building.</b> <c>FrSpecVocabularyBuilder.Build</c> (in MiniCPM4.Tools) ranks the ids of a
/// tokenized corpus by count (descending; ties go to the lower id), drops ids never seen and all EOS ids, keeps the
/// first <c>size − 1</c> and appends the first EOS id. This is what FR-Spec intends; its scripts append EOS after the
/// top <c>r</c> instead, which can give <c>r + 1</c> ids or a duplicate.</para>
/// </remarks>
public sealed class FrSpecVocabulary
{
    /// <summary>The draft vocabulary size CPM.cu uses for MiniCPM4 (its default).</summary>
    public const int DefaultSize = 32768;

    /// <summary>The largest list accepted (16M ids).</summary>
    public const int MaxSize = PickleIntListReader.MaxListLength;

    private readonly int[] _ids;

    private FrSpecVocabulary(int[] ids)
    {
        _ids = ids;
        TokenIds = Array.AsReadOnly(ids);
    }

    /// <summary>The token ids; row <c>i</c> of the restricted draft LM head is token <c>TokenIds[i]</c>.</summary>
    public IReadOnlyList<int> TokenIds { get; }

    /// <summary>The number of ids (the draft vocabulary size r).</summary>
    public int Count => _ids.Length;

    /// <summary>The token ids as a span (for copying into an int32 tensor).</summary>
    public ReadOnlySpan<int> AsSpan() => _ids;

    /// <summary>
    /// Loads and validates an FR-Spec token-id list.
    /// </summary>
    /// <param name="path">A file (torch.save zip, .npy or .safetensors, told apart by content), or a directory holding
    /// <c>freq_&lt;expectedSize&gt;.pt</c> (or, when <paramref name="expectedSize"/> is null, exactly one
    /// <c>freq_*.pt</c>).</param>
    /// <param name="vocabSize">The model's vocabulary size (config.json vocab_size): every id must be below it.</param>
    /// <param name="eosTokenIds">The model's EOS ids: at least one must be in the list.</param>
    /// <param name="expectedSize">The draft vocabulary size r the list must have, or null to accept any length.</param>
    /// <exception cref="FrSpecFormatException">The file is missing, unreadable, malformed, or the list is invalid
    /// (wrong length, duplicate or out-of-range id, no EOS); the message names the file and the problem.</exception>
    public static FrSpecVocabulary Load(string path, int vocabSize, IReadOnlyCollection<int> eosTokenIds,
        int? expectedSize = null)
    {
        CheckArguments(vocabSize, eosTokenIds, expectedSize);
        string file = ResolveFile(path, expectedSize);
        int[] ids = FrSpecFiles.Read(file, out _);
        if (Validate(ids, vocabSize, eosTokenIds, expectedSize) is { } problem) throw new FrSpecFormatException(file,
            problem);
        return new FrSpecVocabulary(ids);
    }

    /// <summary>
    /// Reads the token ids of an FR-Spec file (or directory, as for <see cref="Load"/>) as they are, checking only the
    /// file format; use <see cref="Load"/> to validate them against a model.
    /// </summary>
    /// <exception cref="FrSpecFormatException">The file is missing, unreadable or malformed.</exception>
    public static int[] ReadTokenIds(string path, int? expectedSize = null)
    {
        if (expectedSize is int r) ArgumentOutOfRangeException.ThrowIfNegativeOrZero(r, nameof(expectedSize));
        return FrSpecFiles.Read(ResolveFile(path, expectedSize), out _);
    }

    /// <summary>
    /// The file <see cref="Load"/> reads for <paramref name="path"/>: the path itself when it is a file; for a
    /// directory, its <c>freq_&lt;expectedSize&gt;.pt</c>, or its only <c>freq_*.pt</c> when
    /// <paramref name="expectedSize"/> is null.
    /// </summary>
    /// <exception cref="FrSpecFormatException">Nothing (or more than one candidate) is there.</exception>
    public static string ResolveFile(string path, int? expectedSize = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full;
        try
        {
            full = Path.GetFullPath(path);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new FrSpecFormatException(path, "invalid path: " + e.Message, e);
        }
        if (File.Exists(full)) return full;
        if (!Directory.Exists(full)) throw new FrSpecFormatException(full, "FR-Spec file or directory does not exist");

        string[] candidates;
        try
        {
            candidates =
                Directory.GetFiles(full, "freq_*.pt").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;
        }
        catch (Exception e) when (Checkpoints.CheckpointException.IsIoError(e))
        {
            throw new FrSpecFormatException(full, "cannot list the directory: " + e.Message, e);
        }
        string found = candidates.Length == 0 ? "none" : string.Join(", ", candidates);
        if (expectedSize is int r)
        {
            string name = $"freq_{r.ToString(CultureInfo.InvariantCulture)}.pt";
            string file = Path.Combine(full, name);
            if (File.Exists(file)) return file;
            throw new FrSpecFormatException(full, $"the directory has no {name} (freq_*.pt files present: {found})");
        }
        if (candidates.Length == 1) return Path.Combine(full, candidates[0]);
        throw new FrSpecFormatException(full, candidates.Length == 0
            ? "the directory has no freq_<r>.pt file"
            : $"the directory has several freq_<r>.pt files ({found}): give the size to pick one");
    }

    /// <summary>Validates a list of token ids against a model, as <see cref="Load"/> does.</summary>
    /// <exception cref="ArgumentException">The list is invalid; the message names the problem.</exception>
    public static FrSpecVocabulary FromTokenIds(IEnumerable<int> tokenIds, int vocabSize,
        IReadOnlyCollection<int> eosTokenIds, int? expectedSize = null)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        CheckArguments(vocabSize, eosTokenIds, expectedSize);
        int[] ids = tokenIds.ToArray();
        if (Validate(ids, vocabSize, eosTokenIds, expectedSize) is { } problem) throw new ArgumentException(problem,
            nameof(tokenIds));
        return new FrSpecVocabulary(ids);
    }

    /// <summary>A ranked list built by <c>FrSpecVocabularyBuilder</c> (MiniCPM4.Tools); the builder checked
    /// it.</summary>
    internal static FrSpecVocabulary FromRankedIds(int[] ids) => new(ids);

    /// <summary>
    /// Writes the list. By extension: <c>.npy</c> (1-D little-endian int32, format 1.0), <c>.safetensors</c> (one I32
    /// tensor "token_id_remap"), anything else (e.g. <c>freq_32768.pt</c>) the torch.save zip of a pickled list of
    /// ints, which <c>torch.load(f, weights_only=True)</c> reads. The file is written to a temporary name and then
    /// moved into place.
    /// </summary>
    /// <exception cref="IOException">The file cannot be written.</exception>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        FrSpecFiles.Write(path, _ids);
    }

    internal static void CheckArguments(int vocabSize, IReadOnlyCollection<int> eosTokenIds, int? size)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        ArgumentNullException.ThrowIfNull(eosTokenIds);
        if (eosTokenIds.Count == 0) throw new ArgumentException("at least one EOS token id is needed",
            nameof(eosTokenIds));
        foreach (int id in eosTokenIds)
        {
            if ((uint)id >= (uint)vocabSize)
                throw new ArgumentOutOfRangeException(nameof(eosTokenIds), id,
                    $"EOS token id {id} is outside the vocabulary [0, {vocabSize})");
        }
        if (size is int r && (r <= 0 || r > MaxSize))
            throw new ArgumentOutOfRangeException(nameof(size), r,
                $"the draft vocabulary size must be in [1, {MaxSize}]");
    }

    /// <summary>
    /// The first problem with <paramref name="ids"/>, or null when they are a valid draft vocabulary. Without a
    /// <paramref name="vocabSize"/> only negative ids are out of range; without <paramref name="eosTokenIds"/> EOS is
    /// not checked.
    /// </summary>
    internal static string? Validate(ReadOnlySpan<int> ids, int? vocabSize, IReadOnlyCollection<int>? eosTokenIds,
        int? expectedSize)
    {
        if (ids.Length == 0) return "the token-id list is empty";
        if (expectedSize is int r && ids.Length != r)
            return $"the list holds {ids.Length} token ids but the draft vocabulary size is {r}";
        var positions = new Dictionary<int, int>(ids.Length);
        for (int i = 0; i < ids.Length; i++)
        {
            int id = ids[i];
            if (id < 0 || id >= vocabSize)
                return vocabSize is int v
                    ? $"token id {id} at index {i} is outside the model's vocabulary [0, {v})"
                    : $"token id {id} at index {i} is negative";
            if (!positions.TryAdd(id, i))
                return $"token id {id} appears twice (indexes {positions[id]} and {i}): the ids must be unique";
        }
        if (eosTokenIds is null) return null;
        foreach (int eos in eosTokenIds)
        {
            if (positions.ContainsKey(eos)) return null;
        }
        return $"none of the model's EOS token ids ({string.Join(", ", eosTokenIds)}) is in the list: " +
               "the draft model could never propose the end of a sequence";
    }
}
