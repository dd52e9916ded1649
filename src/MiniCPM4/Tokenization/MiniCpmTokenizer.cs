using System.Collections.Frozen;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace MiniCPM4.Tokenization;

/// <summary>How an id decodes.</summary>
internal enum TokenKind : byte
{
    /// <summary>Not in the vocabulary: decodes to nothing.</summary>
    None,
    /// <summary>A NORMAL, USER_DEFINED or UNUSED piece.</summary>
    Piece,
    /// <summary>A piece starting with U+2581, whose first space may be dropped at the start of a segment.</summary>
    PieceWithLeadingSpace,
    /// <summary>A byte-fallback piece <c>&lt;0xNN&gt;</c>.</summary>
    Byte,
    /// <summary>A CONTROL piece (&lt;s&gt;, &lt;/s&gt;) that is not an added token: invisible.</summary>
    Control,
    /// <summary>The UNKNOWN piece: decodes to the unknown surface (" \u2047 ").</summary>
    Unknown,
    /// <summary>An added token marked special.</summary>
    AddedSpecial,
    /// <summary>An added token not marked special (kept by <c>skipSpecialTokens</c>).</summary>
    AddedText,
}

/// <summary>
/// The MiniCPM4 tokenizer: a SentencePiece BPE model (<c>tokenizer.model</c>) plus the added/special tokens of the
/// Hugging Face checkpoint (<c>&lt;|im_start|&gt;</c>, <c>&lt;|im_end|&gt;</c>, …). Immutable and thread-safe.
/// </summary>
/// <remarks>
/// <para>Model parsing and validation (BPE, no normalization rule), the vocabulary, the special ids, byte fallback
/// and the normalizer flags come from Microsoft.ML.Tokenizers' <see cref="LlamaTokenizer"/>. Its BPE merge order is
/// wrong on ties (see <see cref="SentencePieceBpe"/>), so the merge itself is done here, over the model's own scores,
/// to match the SentencePiece C++ library exactly. Decoding is done here too, so that it can also be done
/// incrementally (<see cref="StreamingDetokenizer"/>) with exactly the same result, with SentencePiece's handling of
/// invalid UTF-8.</para>
/// <para><b>Added tokens and the dummy prefix.</b> Added tokens are cut out of the text first (longest match at the
/// leftmost position), and each piece of text between them is encoded on its own with SentencePiece, including
/// its dummy prefix "▁". So "&lt;|im_start|&gt;user\nHi" becomes <c>&lt;|im_start|&gt; ▁user &lt;0x0A&gt; ▁Hi</c>.
/// That is what the Python side does for these checkpoints: Hugging Face's LlamaTokenizer in its (default) legacy
/// mode calls <c>sp_model.encode</c> on each segment between added tokens, the fast tokenizer converted from it
/// applies its <c>Prepend("▁")</c> normalizer to each such segment, and llama.cpp's SentencePiece path likewise
/// adds the space prefix to every text fragment that follows a special token.</para>
/// <para><b>Decoding</b> follows <c>SentencePieceProcessor::Decode</c>: U+2581 becomes a space, the first piece's
/// leading space (the dummy prefix) is dropped, runs of byte pieces are decoded as UTF-8 with each invalid byte
/// becoming U+FFFD, CONTROL pieces are invisible and &lt;unk&gt; is " \u2047 ". Added tokens are rendered as their text
/// (special ones omitted with <c>skipSpecialTokens</c>), and, mirroring the encoding above, each added token starts
/// a new segment whose first leading space is dropped again, so <c>Decode(Encode(s)) == s</c>. Ids outside the
/// vocabulary decode to nothing.</para>
/// </remarks>
public sealed class MiniCpmTokenizer
{
    private const char SpaceSymbol = '\u2581';

    // Decode tables are sized by the largest id; bound it so that a bad file cannot demand gigabytes.
    private const int MaxAddedTokenId = 1 << 24;

    private readonly LlamaTokenizer _library;
    private readonly SentencePieceBpe _bpe;
    private readonly string[] _pieces;
    private readonly FrozenDictionary<string, int> _pieceToId;
    private readonly FrozenDictionary<string, int> _addedTokens;
    private readonly FrozenDictionary<char, string[]> _addedByFirstChar;
    private readonly bool _addDummyPrefix;
    private readonly bool _escapeWhitespace;
    private readonly bool _removeExtraWhitespace;

    // Decode tables, indexed by id (length VocabSize).
    private readonly TokenKind[] _kinds;
    private readonly string[] _surfaces;
    private readonly byte[] _byteValues;

    private MiniCpmTokenizer(
        byte[] modelBytes,
        IReadOnlyList<AddedToken> addedTokens,
        bool addBosByDefault,
        string? bosToken,
        string? eosToken,
        string? chatTemplate)
    {
        var model = SentencePieceModelFile.Parse(modelBytes);

        try
        {
            _library =
                LlamaTokenizer.Create(new MemoryStream(modelBytes, writable: false), addBeginOfSentence: false,
                addEndOfSentence: false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw new InvalidDataException($"The SentencePiece model could not be loaded: {ex.Message}", ex);
        }

        if (_library.TreatWhitespaceAsSuffix)
            throw new NotSupportedException("SentencePiece models with treat_whitespace_as_suffix are not supported.");

        // Our own parse must describe the same vocabulary as the library's.
        var vocabulary = _library.Vocabulary;
        if (vocabulary.Count != model.Pieces.Length)
            throw new InvalidDataException(
                $"The SentencePiece model is inconsistent: {model.Pieces.Length} pieces, but the library reads " +
                $"{vocabulary.Count}.");
        for (int i = 0; i < model.Pieces.Length; i++)
        {
            if (!vocabulary.TryGetValue(model.Pieces[i], out int libraryId) || libraryId != i)
                throw new InvalidDataException(
                    $"The SentencePiece model is inconsistent at piece #{i} (\"{model.Pieces[i]}\").");
        }

        _pieces = model.Pieces;
        _pieceToId = vocabulary.ToFrozenDictionary(StringComparer.Ordinal);
        UnkId = _library.UnknownId;
        _bpe = new SentencePieceBpe(model.Pieces, model.Scores, model.Types, UnkId, _library.ByteFallback);
        _addDummyPrefix = _library.AddDummyPrefix;
        _escapeWhitespace = _library.EscapeWhiteSpaces;
        _removeExtraWhitespace = (_library.Normalizer as SentencePieceNormalizer)?.RemoveExtraWhiteSpaces == true;
        DropsLeadingSpace = _addDummyPrefix || _removeExtraWhitespace;

        // Added tokens.
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        int maxId = model.Pieces.Length - 1;
        foreach (var token in addedTokens)
        {
            if (string.IsNullOrEmpty(token.Content))
                throw new ArgumentException("An added token is empty.", nameof(addedTokens));
            if (token.Id < 0 || token.Id >= MaxAddedTokenId)
                throw new ArgumentException($"The added token \"{token.Content}\" has an invalid id {token.Id}.",
                    nameof(addedTokens));
            added[token.Content] = token.Id;
            maxId = Math.Max(maxId, token.Id);
        }

        _addedTokens = added.ToFrozenDictionary(StringComparer.Ordinal);
        _addedByFirstChar = added.Keys
            .GroupBy(k => k[0])
            .ToFrozenDictionary(g => g.Key, g =>
                g.OrderByDescending(s => s.Length).ThenBy(s => s, StringComparer.Ordinal).ToArray());

        VocabSize = maxId + 1;
        _kinds = new TokenKind[VocabSize];
        _surfaces = new string[VocabSize];
        _byteValues = new byte[VocabSize];
        for (int id = 0; id < model.Pieces.Length; id++)
        {
            string piece = model.Pieces[id];
            switch (model.Types[id])
            {
                case PieceType.Control:
                    _kinds[id] = TokenKind.Control;
                    _surfaces[id] = "";
                    break;
                case PieceType.Unknown:
                    _kinds[id] = TokenKind.Unknown;
                    _surfaces[id] = model.UnknownSurface;
                    break;
                case PieceType.Byte when SentencePieceBpe.TryParseBytePiece(piece, out byte value):
                    _kinds[id] = TokenKind.Byte;
                    _byteValues[id] = value;
                    _surfaces[id] = "";
                    break;
                default:
                    _kinds[id] = piece[0] == SpaceSymbol ? TokenKind.PieceWithLeadingSpace : TokenKind.Piece;
                    _surfaces[id] = piece.Replace(SpaceSymbol, ' ');
                    break;
            }
        }

        for (int id = model.Pieces.Length; id < VocabSize; id++)
            _surfaces[id] = "";
        foreach (var token in addedTokens)
        {
            _kinds[token.Id] = token.Special ? TokenKind.AddedSpecial : TokenKind.AddedText;
            _surfaces[token.Id] = token.Content;
        }

        AddBosByDefault = addBosByDefault;
        BosId = ResolveSpecial(bosToken) ?? _library.BeginningOfSentenceId;
        EosId = ResolveSpecial(eosToken) ?? _library.EndOfSentenceId;
        ChatTemplate = chatTemplate;

        int? ResolveSpecial(string? token) => token is null ? null : TokenToId(token);
    }

    /// <summary>An added token as read from a checkpoint.</summary>
    internal readonly record struct AddedToken(string Content, int Id, bool Special);

    /// <summary>Number of ids: the SentencePiece pieces plus the added tokens (the largest id + 1).</summary>
    public int VocabSize { get; }

    /// <summary>Id of the beginning-of-sentence token.</summary>
    public int BosId { get; }

    /// <summary>Id of the end-of-sentence token (the checkpoint's <c>eos_token</c> when it names one, e.g.
    /// &lt;|im_end|&gt;).</summary>
    public int EosId { get; }

    /// <summary>Id of the unknown token.</summary>
    public int UnkId { get; }

    /// <summary>Whether callers should prepend <see cref="BosId"/> to prompts (the checkpoint's
    /// <c>add_bos_token</c>).</summary>
    public bool AddBosByDefault { get; }

    /// <summary>The added/special tokens recognised in text, by content.</summary>
    public IReadOnlyDictionary<string, int> AddedTokens => _addedTokens;

    /// <summary>The checkpoint's Jinja <c>chat_template</c>, if it has one.</summary>
    public string? ChatTemplate { get; }

    /// <summary>The underlying Microsoft.ML.Tokenizers model (used for model loading and validation).</summary>
    internal LlamaTokenizer Library => _library;

    internal bool DropsLeadingSpace { get; }

    /// <summary>Creates a tokenizer from a SentencePiece BPE model stream and optional added tokens (all treated as
    /// special).</summary>
    public static MiniCpmTokenizer FromSentencePiece(Stream model, IReadOnlyDictionary<string, int>? addedTokens = null,
        bool addBosByDefault = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var buffer = new MemoryStream();
        model.CopyTo(buffer);
        var added = addedTokens?.Select(kv => new AddedToken(kv.Key, kv.Value, Special: true)).ToList() ?? [];
        CheckUniqueIds(added);
        return new MiniCpmTokenizer(buffer.ToArray(), added, addBosByDefault, null, null, null);
    }

    /// <summary>
    /// Loads the tokenizer of a Hugging Face checkpoint directory: <c>tokenizer.model</c> (required) and the added
    /// tokens of <c>tokenizer_config.json</c>, <c>added_tokens.json</c> and <c>tokenizer.json</c>, whichever exist.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="FileNotFoundException"><c>tokenizer.model</c> is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed, or two files disagree about an added
    /// token.</exception>
    public static MiniCpmTokenizer Load(string checkpointDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(checkpointDirectory);
        if (!Directory.Exists(checkpointDirectory))
            throw new DirectoryNotFoundException($"The checkpoint directory '{checkpointDirectory}' does not exist.");

        string modelPath = Path.Combine(checkpointDirectory, "tokenizer.model");
        if (!File.Exists(modelPath))
            throw new FileNotFoundException($"The SentencePiece tokenizer model '{modelPath}' does not exist.",
                modelPath);

        var config = CheckpointTokenizerFiles.Read(checkpointDirectory);
        byte[] modelBytes = File.ReadAllBytes(modelPath);
        try
        {
            return new MiniCpmTokenizer(modelBytes, config.AddedTokens, config.AddBosToken ?? true, config.BosToken,
                config.EosToken, config.ChatTemplate);
        }
        catch (InvalidDataException ex)
        {
            throw new InvalidDataException($"{modelPath}: {ex.Message}", ex);
        }
    }

    private static void CheckUniqueIds(List<AddedToken> added)
    {
        var byId = new Dictionary<int, string>();
        foreach (var token in added)
        {
            if (!byId.TryAdd(token.Id, token.Content))
                throw new ArgumentException(
                    $"The added tokens \"{byId[token.Id]}\" and \"{token.Content}\" share the id {token.Id}.");
        }
    }

    /// <summary>The id of a piece or added token, or null.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_addedTokens.TryGetValue(token, out int id))
            return id;
        return _pieceToId.TryGetValue(token, out id) ? id : null;
    }

    /// <summary>The piece (with U+2581 for spaces) or added token of an id, or null.</summary>
    public string? IdToToken(int id)
    {
        if ((uint)id >= (uint)VocabSize)
            return null;
        if (_kinds[id] is TokenKind.AddedSpecial or TokenKind.AddedText)
            return _surfaces[id];
        return id < _pieces.Length ? _pieces[id] : null;
    }

    internal TokenKind KindOf(int id) => (uint)id < (uint)_kinds.Length ? _kinds[id] : TokenKind.None;

    internal string SurfaceOf(int id) => _surfaces[id];

    internal byte ByteValueOf(int id) => _byteValues[id];

    /// <summary>Encodes text. Added tokens in the text become their ids; see the class remarks.</summary>
    public int[] Encode(string text, bool addBos = false) => Encode(text, addBos, dummyPrefix: _addDummyPrefix);

    /// <summary>
    /// Encodes text as the model would generate it after a prompt: no BOS and no dummy-prefix space, so that
    /// decoding the ids as a generation stream gives back <paramref name="text"/> (the detokenizer drops the leading
    /// space of a generation's first piece, and the encoding adds none).
    /// </summary>
    internal int[] EncodeGenerated(string text) => Encode(text, addBos: false, dummyPrefix: false);

    private int[] Encode(string text, bool addBos, bool dummyPrefix)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (addBos)
            ids.Add(BosId);

        int segmentStart = 0;
        int i = 0;
        while (i < text.Length)
        {
            if (_addedByFirstChar.TryGetValue(text[i], out var candidates))
            {
                string? match = null;
                foreach (string candidate in candidates)
                {
                    if (text.AsSpan(i).StartsWith(candidate, StringComparison.Ordinal))
                    {
                        match = candidate;
                        break;
                    }
                }

                if (match is not null)
                {
                    EncodeSegment(text.AsSpan(segmentStart, i - segmentStart), ids, dummyPrefix);
                    dummyPrefix = _addDummyPrefix;  // every segment after an added token starts afresh
                    ids.Add(_addedTokens[match]);
                    i += match.Length;
                    segmentStart = i;
                    continue;
                }
            }

            i++;
        }

        EncodeSegment(text.AsSpan(segmentStart), ids, dummyPrefix);
        return ids.ToArray();
    }

    private void EncodeSegment(ReadOnlySpan<char> segment, List<int> ids, bool dummyPrefix)
    {
        if (segment.IsEmpty)
            return;

        // SentencePiece works on UTF-8, where a lone surrogate cannot exist; like the UTF-8 conversion would, make it
        // U+FFFD.
        string text = ReplaceLoneSurrogates(segment);
        _bpe.Encode(Normalize(text, dummyPrefix), ids);
    }

    /// <summary>
    /// SentencePiece's whitespace normalization (the library validated that the model has no other normalization
    /// rule): optionally remove leading, trailing and repeated spaces, add the dummy prefix, and escape spaces as
    /// U+2581. Done here rather than with the library's <see cref="SentencePieceNormalizer"/>, whose string overload
    /// returns "" for any single non-space character when remove_extra_whitespaces is set (not the case for
    /// MiniCPM/Llama models, but this keeps other models right).
    /// </summary>
    private string Normalize(string text, bool dummyPrefix)
    {
        char space = _escapeWhitespace ? SpaceSymbol : ' ';
        var sb = new StringBuilder(text.Length + 1);
        if (dummyPrefix)
            sb.Append(space);
        bool previousWasSpace = _removeExtraWhitespace; // drops leading spaces
        foreach (char c in text)
        {
            if (c == ' ')
            {
                if (!previousWasSpace || !_removeExtraWhitespace)
                    sb.Append(space);
                previousWasSpace = true;
            }
            else
            {
                sb.Append(c);
                previousWasSpace = false;
            }
        }

        // As in SentencePiece, trailing space symbols are removed after escaping: a literal U+2581 at the end goes
        // too, and so does the dummy prefix of a text made only of spaces.
        if (_removeExtraWhitespace)
        {
            while (sb.Length > 0 && sb[^1] == space)
                sb.Length--;
        }

        return sb.ToString();
    }

    private static string ReplaceLoneSurrogates(ReadOnlySpan<char> s)
    {
        int i = 0;
        for (; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
                i++;
            else if (char.IsSurrogate(s[i]))
                break;
        }

        if (i == s.Length)
            return s.ToString();

        var chars = s.ToArray();
        for (; i < chars.Length; i++)
        {
            if (char.IsHighSurrogate(chars[i]) && i + 1 < chars.Length && char.IsLowSurrogate(chars[i + 1]))
                i++;
            else if (char.IsSurrogate(chars[i]))
                chars[i] = SentencePieceUtf8.Replacement;
        }

        return new string(chars);
    }

    /// <summary>Decodes ids to text; see the class remarks.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var text = new StringBuilder(ids.Length * 4);
        var bytes = new List<byte>();
        int segmentStart = 0;
        bool atSegmentStart = true; // SentencePiece's is_bos_ws, per segment

        foreach (int id in ids)
        {
            var kind = KindOf(id);
            if (kind == TokenKind.None)
                continue;
            if (kind == TokenKind.Byte)
            {
                bytes.Add(_byteValues[id]);
                continue;
            }

            FlushBytes();
            if (kind is TokenKind.AddedSpecial or TokenKind.AddedText)
            {
                if (!(skipSpecialTokens && kind == TokenKind.AddedSpecial))
                    text.Append(_surfaces[id]);
                segmentStart = text.Length;
                atSegmentStart = true;
                continue;
            }

            if (text.Length > segmentStart)
                atSegmentStart = false;

            if (kind == TokenKind.PieceWithLeadingSpace && atSegmentStart && DropsLeadingSpace)
            {
                text.Append(_surfaces[id], 1, _surfaces[id].Length - 1);
                atSegmentStart = false; // only the first leading space is the dummy prefix
            }
            else
            {
                text.Append(_surfaces[id]);
            }
        }

        FlushBytes();
        return text.ToString();

        void FlushBytes()
        {
            if (bytes.Count == 0)
                return;
            SentencePieceUtf8.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes), text);
            bytes.Clear();
        }
    }

    /// <summary>Creates an incremental decoder whose output, concatenated, equals <see cref="Decode"/>.</summary>
    public StreamingDetokenizer CreateStreamingDetokenizer(bool skipSpecialTokens = false) =>
        new(this, skipSpecialTokens);
}
