using System.Text;

namespace MiniCPM4.Tokenization;

/// <summary>
/// SentencePiece's BPE segmentation (<c>bpe_model.cc</c>, <c>Model::Encode</c>) over an already-normalized piece of
/// text, plus the byte fallback of <c>SentencePieceProcessor::PopulateSentencePieceText</c>.
/// </summary>
/// <remarks>
/// <para><b>Why this exists.</b> Microsoft.ML.Tokenizers 2.0.1 (<c>SentencePieceBpeModel.Encode</c>) runs the same
/// algorithm, but the ordering of its merge agenda is wrong on ties. Its <c>SymbolPair.CompareTo</c> is
/// <c>Score != other.Score ? other.Score.CompareTo(Score) : other.Left.CompareTo(Left)</c> and its
/// <c>PriorityQueue&lt;T&gt;</c> is a <i>min</i>-heap, so "smaller" is dequeued first: the highest score comes first
/// (right), but among pairs with the same score the one with the <i>largest</i> left index comes first, i.e. the
/// rightmost pair is merged first. SentencePiece's comparator
/// (<c>h1->score &lt; h2->score || (h1->score == h2->score &amp;&amp; h1->left &gt; h2->left)</c> in a
/// <c>std::priority_queue</c>, a max-heap) merges the <i>leftmost</i> of equally scored pairs first. Ties can only
/// happen between pairs that would form the same piece, and they matter for runs of one repeated character:
/// "aaaaa…" must be merged pairwise from the left ("aa" "aa" …, then "aaaa" …), while the library pairs them up from
/// the right, leaving the odd leftovers at the other end. For "Repeated" followed by 40 'a' SentencePiece gives
/// <c>▁Re pe ated ▁a aaaa×9 aa a</c> and the library <c>▁Re pe ated ▁aa aa aaaa×9</c> (exactly what a rightmost-first
/// tie break predicts; the tests check this against a reference implementation with either tie order).</para>
/// <para>A second, smaller difference: the library looks up candidate merges in its whole vocabulary, so a merge can
/// produce a CONTROL, UNKNOWN or BYTE piece (e.g. text spelling "&lt;0x41&gt;" if the intermediate pieces exist).
/// SentencePiece only merges into NORMAL, USER_DEFINED and UNUSED pieces (<c>pieces_</c>, not
/// <c>reserved_id_map_</c>), which is what this class does.</para>
/// <para>Everything else is taken from the library (model parsing and validation, vocabulary, special ids,
/// byte fallback and normalization flags); only the merge, which needs the piece scores and types that the library
/// does not expose (read by <see cref="SentencePieceModelFile"/>), is reimplemented here.</para>
/// </remarks>
internal sealed class SentencePieceBpe
{
    private readonly Dictionary<string, int> _mergeable; // NORMAL, USER_DEFINED and UNUSED pieces -> id
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _mergeableLookup;
    private readonly float[] _scores;
    private readonly PieceType[] _types;
    private readonly int _maxPieceLength;
    private readonly int _unkId;
    private readonly int[]? _byteIds; // byte value -> id of "<0xNN>", when byte fallback is on
    private readonly Dictionary<char, string[]>? _userDefined; // first char -> USER_DEFINED pieces, longest first

    public SentencePieceBpe(string[] pieces, float[] scores, PieceType[] types, int unkId, bool byteFallback)
    {
        _scores = scores;
        _types = types;
        _unkId = unkId;
        _mergeable = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        var userDefined = new Dictionary<char, List<string>>();
        int[]? byteIds = byteFallback ? new int[256] : null;
        if (byteIds is not null)
            Array.Fill(byteIds, -1);

        for (int id = 0; id < pieces.Length; id++)
        {
            string piece = pieces[id];
            switch (types[id])
            {
                case PieceType.Normal:
                case PieceType.UserDefined:
                case PieceType.Unused:
                    if (!_mergeable.TryAdd(piece, id))
                        throw new InvalidDataException($"SentencePiece model: piece \"{piece}\" is defined twice.");
                    _maxPieceLength = Math.Max(_maxPieceLength, piece.Length);
                    if (types[id] == PieceType.UserDefined)
                    {
                        if (!userDefined.TryGetValue(piece[0], out var list))
                            userDefined[piece[0]] = list = [];
                        list.Add(piece);
                    }

                    break;
                case PieceType.Byte:
                    if (byteIds is not null && TryParseBytePiece(piece, out byte value))
                        byteIds[value] = id;
                    break;
            }
        }

        if (byteIds is not null && Array.IndexOf(byteIds, -1) >= 0)
            throw new InvalidDataException(
                "SentencePiece model: byte fallback is enabled but not all 256 <0xNN> pieces exist.");

        _byteIds = byteIds;
        _mergeableLookup = _mergeable.GetAlternateLookup<ReadOnlySpan<char>>();
        if (userDefined.Count > 0)
        {
            _userDefined = userDefined.ToDictionary(
                kv => kv.Key,
                kv => kv.Value.OrderByDescending(s => s.Length).ToArray());
        }
    }

    internal static bool TryParseBytePiece(string piece, out byte value)
    {
        value = 0;
        return piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>' &&
               byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }

    private struct Symbol
    {
        public int Start;
        public int Length; // 0 once merged into its left neighbour
        public int Prev;
        public int Next;
        public bool Frozen; // USER_DEFINED piece matched in the text: never merged
    }

    private readonly record struct Pair(int Left, int Right, int Length);

    /// <summary>Max-heap order of SentencePiece: higher score first, then the leftmost pair.</summary>
    private sealed class AgendaOrder : IComparer<(float Score, int Left)>
    {
        public static readonly AgendaOrder Instance = new();

        public int Compare((float Score, int Left) x, (float Score, int Left) y)
        {
            int c = y.Score.CompareTo(x.Score); // PriorityQueue dequeues the smallest: make the highest score smallest
            return c != 0 ? c : x.Left.CompareTo(y.Left);
        }
    }

    /// <summary>
    /// Segments <paramref name="normalized"/> (the output of the SentencePiece normalizer: whitespace already escaped
    /// to
    /// U+2581, dummy prefix already added) and appends the ids to <paramref name="output"/>.
    /// </summary>
    public void Encode(string normalized, List<int> output)
    {
        if (normalized.Length == 0)
            return;

        // 1. Split into characters (or whole USER_DEFINED pieces, which are frozen).
        var symbols = new Symbol[normalized.Length];
        int count = 0;
        for (int pos = 0; pos < normalized.Length;)
        {
            int len = MatchUserDefined(normalized, pos);
            bool frozen = len > 0;
            if (!frozen)
                len = char.IsHighSurrogate(normalized[pos]) && pos + 1 < normalized.Length
                    && char.IsLowSurrogate(normalized[pos + 1]) ? 2 : 1;
            symbols[count] =
                new Symbol { Start = pos, Length = len, Prev = count - 1, Next = pos + len < normalized.Length ? count
                + 1 : -1, Frozen = frozen };
            count++;
            pos += len;
        }

        // 2. Merge greedily by score (see the class remarks for the ordering).
        var agenda = new PriorityQueue<Pair, (float, int)>(count, AgendaOrder.Instance);
        Dictionary<string, (string Left, string Right)>? revMerge = null;

        for (int i = 1; i < count; i++)
            MaybeAddPair(i - 1, i);

        while (agenda.TryDequeue(out Pair top, out _))
        {
            ref Symbol left = ref symbols[top.Left];
            ref Symbol right = ref symbols[top.Right];
            // Stale entry: one side has been merged away or has grown since the pair was queued.
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != top.Length)
                continue;

            left.Length += right.Length;
            left.Next = right.Next;
            if (right.Next >= 0)
                symbols[right.Next].Prev = top.Left;
            right.Length = 0;

            MaybeAddPair(left.Prev, top.Left);
            MaybeAddPair(top.Left, left.Next);
        }

        // 3. Emit, re-splitting UNUSED pieces into the pieces they were merged from.
        for (int i = 0; i >= 0; i = symbols[i].Next)
            Resegment(normalized.AsSpan(symbols[i].Start, symbols[i].Length), output);

        void MaybeAddPair(int l, int r)
        {
            if (l < 0 || r < 0 || symbols[l].Frozen || symbols[r].Frozen)
                return;
            int length = symbols[l].Length + symbols[r].Length;
            if (length > _maxPieceLength)
                return;
            var piece = normalized.AsSpan(symbols[l].Start, length);
            if (!_mergeableLookup.TryGetValue(piece, out int id))
                return;
            agenda.Enqueue(new Pair(l, r, length), (_scores[id], l));
            if (_types[id] == PieceType.Unused)
            {
                revMerge ??= new Dictionary<string, (string, string)>(StringComparer.Ordinal);
                revMerge[piece.ToString()] = (
                    normalized.Substring(symbols[l].Start, symbols[l].Length),
                    normalized.Substring(symbols[r].Start, symbols[r].Length));
            }
        }

        void Resegment(ReadOnlySpan<char> piece, List<int> ids)
        {
            if (_mergeableLookup.TryGetValue(piece, out int id))
            {
                if (_types[id] == PieceType.Unused && revMerge is not null &&
                    revMerge.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(piece, out var parts))
                {
                    Resegment(parts.Left, ids);
                    Resegment(parts.Right, ids);
                    return;
                }

                ids.Add(id);
                return;
            }

            // Unknown piece: byte fallback emits its UTF-8 bytes, otherwise <unk>.
            if (_byteIds is null)
            {
                ids.Add(_unkId);
                return;
            }

            int max = Encoding.UTF8.GetMaxByteCount(piece.Length);
            Span<byte> buffer = max <= 64 ? stackalloc byte[64] : new byte[max];
            int n = Encoding.UTF8.GetBytes(piece, buffer);
            foreach (byte b in buffer[..n])
                ids.Add(_byteIds[b]);
        }
    }

    private int MatchUserDefined(string text, int pos)
    {
        if (_userDefined is null || !_userDefined.TryGetValue(text[pos], out var candidates))
            return 0;
        foreach (string candidate in candidates)
        {
            if (text.AsSpan(pos).StartsWith(candidate, StringComparison.Ordinal))
                return candidate.Length;
        }

        return 0;
    }
}
