namespace MiniCPM4.Constraints.Regex;

/// <summary>
/// Splits code point ranges into sequences of byte ranges whose concatenation matches exactly the UTF-8 encodings of
/// the range's code points: valid, shortest-form UTF-8 only (no surrogates D800–DFFF, nothing above U+10FFFF).
/// </summary>
internal static class Utf8Ranges
{
    /// <summary>One byte range per position of the encoding (1 to 4 positions).</summary>
    public readonly record struct Sequence((byte Lo, byte Hi)[] Ranges);

    /// <summary>Appends the sequences of every scalar value in [lo, hi] (surrogates skipped) to
    /// <paramref name="output"/>.</summary>
    public static void Split(int lo, int hi, List<Sequence> output)
    {
        lo = Math.Max(lo, 0);
        hi = Math.Min(hi, CodePointSet.MaxCodePoint);
        if (lo > hi) return;
        // Surrogates have no UTF-8 encoding.
        if (lo <= 0xDFFF && hi >= 0xD800)
        {
            SplitScalar(lo, 0xD7FF, output);
            SplitScalar(0xE000, hi, output);
            return;
        }
        SplitScalar(lo, hi, output);
    }

    private static void SplitScalar(int lo, int hi, List<Sequence> output)
    {
        if (lo > hi) return;
        // Ranges of one encoded length.
        foreach (int boundary in (ReadOnlySpan<int>)[0x7F, 0x7FF, 0xFFFF])
        {
            if (lo <= boundary && hi > boundary)
            {
                SplitScalar(lo, boundary, output);
                SplitScalar(boundary + 1, hi, output);
                return;
            }
        }
        if (hi <= 0x7F)
        {
            output.Add(new Sequence([((byte)lo, (byte)hi)]));
            return;
        }
        int length = EncodedLength(lo);
        // Split until every continuation position spans a full or single-prefix range: lo and hi then differ only
        // in positions where all combinations in between are valid.
        for (int i = 1; i < length; i++)
        {
            int m = (1 << (6 * i)) - 1;
            if ((lo & ~m) != (hi & ~m))
            {
                if ((lo & m) != 0)
                {
                    SplitScalar(lo, lo | m, output);
                    SplitScalar((lo | m) + 1, hi, output);
                    return;
                }
                if ((hi & m) != m)
                {
                    SplitScalar(lo, (hi & ~m) - 1, output);
                    SplitScalar(hi & ~m, hi, output);
                    return;
                }
            }
        }
        Span<byte> a = stackalloc byte[4], z = stackalloc byte[4];
        Encode(lo, a);
        Encode(hi, z);
        var ranges = new (byte, byte)[length];
        for (int k = 0; k < length; k++) ranges[k] = (a[k], z[k]);
        output.Add(new Sequence(ranges));
    }

    public static int EncodedLength(int cp) => cp <= 0x7F ? 1 : cp <= 0x7FF ? 2 : cp <= 0xFFFF ? 3 : 4;

    /// <summary>The UTF-8 bytes of a code point (no validity check); returns the length.</summary>
    public static int Encode(int cp, Span<byte> dst)
    {
        if (cp <= 0x7F)
        {
            dst[0] = (byte)cp;
            return 1;
        }
        if (cp <= 0x7FF)
        {
            dst[0] = (byte)(0xC0 | (cp >> 6));
            dst[1] = (byte)(0x80 | (cp & 0x3F));
            return 2;
        }
        if (cp <= 0xFFFF)
        {
            dst[0] = (byte)(0xE0 | (cp >> 12));
            dst[1] = (byte)(0x80 | ((cp >> 6) & 0x3F));
            dst[2] = (byte)(0x80 | (cp & 0x3F));
            return 3;
        }
        dst[0] = (byte)(0xF0 | (cp >> 18));
        dst[1] = (byte)(0x80 | ((cp >> 12) & 0x3F));
        dst[2] = (byte)(0x80 | ((cp >> 6) & 0x3F));
        dst[3] = (byte)(0x80 | (cp & 0x3F));
        return 4;
    }
}
