namespace MiniCPM4.Constraints.Regex;

// Code point sets lowered to byte-level terms in a CharEncoding.
public sealed partial class RegexBuilder
{
    private readonly Dictionary<(string, CharEncoding), int> _namedSets = new();

    /// <summary>A named code point set lowered once per encoding (the name must identify the set).</summary>
    internal int LowerNamed(string name, CodePointSet set, CharEncoding encoding)
    {
        if (_namedSets.TryGetValue((name, encoding), out int r)) return r;
        r = LowerSet(set, encoding);
        _namedSets.Add((name, encoding), r);
        return r;
    }

    /// <summary>Any one code point of <paramref name="set"/> in <paramref name="encoding"/>. Surrogates have no
    /// encoding and are dropped.</summary>
    internal int LowerSet(CodePointSet set, CharEncoding encoding)
    {
        if (set.RangeCount == 1 && set.Lo(0) == set.Hi(0)) return LowerCodePoint(set.Lo(0), encoding);
        var terms = new List<int>();
        if (encoding == CharEncoding.JsonStringContent)
        {
            // Escaped members one by one; the rest as raw UTF-8 ranges.
            var escaped = set.Intersect(JsonStringEncoding.Escaped);
            for (int i = 0; i < escaped.RangeCount; i++)
                for (int cp = escaped.Lo(i); cp <= escaped.Hi(i); cp++)
                    terms.Add(Literal(JsonStringEncoding.Escape(cp)!));
            set = set.Subtract(JsonStringEncoding.Escaped);
        }
        var seqs = new List<Utf8Ranges.Sequence>();
        for (int i = 0; i < set.RangeCount; i++) Utf8Ranges.Split(set.Lo(i), set.Hi(i), seqs);
        if (seqs.Count > 0) terms.Add(BuildTrie(seqs, 0));
        return MakeOr(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(terms));
    }

    /// <summary>Alternation of byte-range sequences, sharing equal leading ranges (a prefix tree).</summary>
    private int BuildTrie(List<Utf8Ranges.Sequence> seqs, int depth)
    {
        var terms = new List<int>();
        var groups = new Dictionary<(byte, byte), List<Utf8Ranges.Sequence>>();
        var order = new List<(byte, byte)>();
        foreach (var s in seqs)
        {
            if (s.Ranges.Length == depth)
            {
                terms.Add(Empty);
                continue;
            }
            var key = s.Ranges[depth];
            if (!groups.TryGetValue(key, out var g))
            {
                groups.Add(key, g = []);
                order.Add(key);
            }
            g.Add(s);
        }
        foreach (var key in order)
            terms.Add(MakeConcat(ByteRange(key.Item1, key.Item2), BuildTrie(groups[key], depth + 1)));
        return MakeOr(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(terms));
    }

    /// <summary>Exactly one code point (∅ for a surrogate or a value past U+10FFFF).</summary>
    internal int LowerCodePoint(int cp, CharEncoding encoding)
    {
        if (cp < 0 || cp > CodePointSet.MaxCodePoint || (cp >= 0xD800 && cp <= 0xDFFF)) return Nothing;
        var bytes = new List<byte>(6);
        AppendEncoded(bytes, cp, encoding);
        return Literal(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    private static void AppendEncoded(List<byte> bytes, int cp, CharEncoding encoding)
    {
        if (encoding == CharEncoding.JsonStringContent && JsonStringEncoding.Escape(cp) is { } esc)
        {
            foreach (char c in esc) bytes.Add((byte)c);
            return;
        }
        Span<byte> buf = stackalloc byte[4];
        int n = Utf8Ranges.Encode(cp, buf);
        for (int i = 0; i < n; i++) bytes.Add(buf[i]);
    }
}
