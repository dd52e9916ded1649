namespace MiniCPM4.Constraints.Regex;

/// <summary>How a pattern's characters become bytes.</summary>
public enum CharEncoding
{
    /// <summary>Each code point as its UTF-8 bytes.</summary>
    Utf8,
    /// <summary>
    /// Each code point as it appears inside a JSON string literal written by Python's
    /// <c>json.dumps(ensure_ascii=False)</c>: <c>"</c> and <c>\</c> escaped as <c>\"</c> and <c>\\</c>; \b \f \n \r \t
    /// as their two-character escapes; the other code points below U+0020 as <c>\u00xx</c> (lower-case hex); everything
    /// else (DEL and non-ASCII included) as raw UTF-8. One canonical spelling per code point.
    /// </summary>
    JsonStringContent,
}

/// <summary>A pattern the engine cannot compile: bad syntax, or a construct a regular language cannot express
/// (back-references, look-around, ...). The message names the construct and its position.</summary>
public sealed class RegexNotSupportedException(string message) : Exception(message);

/// <summary>
/// Byte-level regular expressions with intersection and complement, hash-consed into small integer ids and matched
/// by Brzozowski derivatives: the derivative of a term by a byte is another term, so a term is a DFA state and the
/// DFA is built lazily, one cached transition at a time. Structurally equal terms get the same id (after the
/// usual simplifications: ∅ and ε absorption, flattened, sorted and deduplicated alternations and intersections,
/// double complement), which keeps the number of states of every regex used by JSON Schema small.
/// Not thread-safe: one builder per compiled constraint, used by one thread at a time.
/// </summary>
public sealed partial class RegexBuilder
{
    /// <summary>The empty language ∅ (the dead state).</summary>
    public const int Nothing = 0;
    /// <summary>The language of the empty string ε.</summary>
    public const int Empty = 1;

    /// <summary>Any one byte of the set.</summary>
    public int Bytes(ReadOnlySpan<bool> set256)
    {
        if (set256.Length != 256) throw new ArgumentException("A byte set has 256 entries.", nameof(set256));
        ulong w0 = 0, w1 = 0, w2 = 0, w3 = 0;
        for (int i = 0; i < 64; i++)
        {
            if (set256[i]) w0 |= 1UL << i;
            if (set256[i + 64]) w1 |= 1UL << i;
            if (set256[i + 128]) w2 |= 1UL << i;
            if (set256[i + 192]) w3 |= 1UL << i;
        }
        return MakeByteSet(w0, w1, w2, w3);
    }
    /// <summary>Any one byte in [lo, hi].</summary>
    public int ByteRange(byte lo, byte hi)
    {
        if (lo > hi) return Nothing;
        ulong w0 = RangeWord(lo, hi, 0), w1 = RangeWord(lo, hi, 64), w2 = RangeWord(lo, hi, 128),
            w3 = RangeWord(lo, hi, 192);
        return MakeByteSet(w0, w1, w2, w3);
    }
    /// <summary>Exactly these bytes.</summary>
    public int Literal(ReadOnlySpan<byte> bytes)
    {
        int r = Empty;
        for (int i = bytes.Length - 1; i >= 0; i--) r = Concat(SingleByte(bytes[i]), r);
        return r;
    }
    /// <summary>Exactly the UTF-8 bytes of <paramref name="text"/>.</summary>
    public int Literal(string text) => Literal(System.Text.Encoding.UTF8.GetBytes(text));
    public int Concat(int first, int second) => MakeConcat(first, second);
    public int Concat(params ReadOnlySpan<int> items)
    {
        int r = Empty;
        for (int i = items.Length - 1; i >= 0; i--) r = MakeConcat(items[i], r);
        return r;
    }
    public int Or(int first, int second) => MakeOr([first, second]);
    public int Or(params ReadOnlySpan<int> items) => MakeOr(items);
    public int And(int first, int second) => MakeAnd([first, second]);
    public int And(params ReadOnlySpan<int> items) => MakeAnd(items);
    /// <summary>Every byte string not in <paramref name="r"/>.</summary>
    public int Not(int r) => MakeNot(r);
    public int Star(int r) => MakeStar(r);
    public int Plus(int r) => MakeConcat(r, MakeStar(r));
    public int Optional(int r) => MakeOr([Empty, r]);
    /// <summary><paramref name="r"/> repeated min..max times; max = -1 is unbounded.</summary>
    public int Repeat(int r, int min, int max) => MakeRepeat(r, min, max);

    /// <summary>Any one code point, in the given encoding (valid UTF-8 only: no surrogates, nothing above
    /// U+10FFFF).</summary>
    public int AnyCodePoint(CharEncoding encoding) => LowerNamed("any", CodePointSet.All, encoding);
    /// <summary>Exactly the code points of <paramref name="text"/> in the given encoding.</summary>
    public int Text(string text, CharEncoding encoding)
    {
        var bytes = new List<byte>(text.Length);
        for (int i = 0; i < text.Length;)
        {
            if (System.Text.Rune.DecodeFromUtf16(text.AsSpan(i), out var rune, out int used) != System.Buffers
                .OperationStatus.Done)
                throw new ArgumentException($"Text has a lone surrogate at index {i}.", nameof(text));
            AppendEncoded(bytes, rune.Value, encoding);
            i += used;
        }
        return Literal(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    /// <summary>
    /// An ECMAScript regular expression (the subset JSON Schema's <c>pattern</c> uses: literals and escapes,
    /// classes with ranges and negation, <c>. \d \w \s \D \W \S</c>, <c>\uXXXX</c>, <c>\u{...}</c>, <c>\p{..}</c> for
    /// the common general categories, groups (capturing, <c>(?:</c>, named), alternation, the quantifiers
    /// <c>* + ? {n} {n,} {n,m}</c> and their lazy forms (same language), and <c>^</c>/<c>$</c> at the ends) over code
    /// points,
    /// lowered to bytes in <paramref name="encoding"/>. With <paramref name="search"/> (JSON Schema semantics) the
    /// pattern may match anywhere in the string unless anchored; otherwise it must match the whole string.
    /// Throws <see cref="RegexNotSupportedException"/> for what it cannot express exactly.
    /// </summary>
    public int Pattern(string pattern, CharEncoding encoding, bool search)
        => new EcmaPatternParser(this, pattern, encoding).Parse(search);

    /// <summary>Whether <paramref name="r"/> matches the empty string.</summary>
    public bool IsNullable(int r) => _nullable[r];
    /// <summary>The derivative of <paramref name="r"/> by <paramref name="b"/> (cached).</summary>
    public int Derivative(int r, byte b)
    {
        int[]? d = _deriv[r];
        if (d is not null)
        {
            int v = d[_classMap[r]![b]];
            if (v >= 0) return v;
        }
        return DerivativeSlow(r, b);
    }
    /// <summary>Whether <paramref name="r"/> matches no string at all (cached; exact even for And/Not terms).</summary>
    public bool IsDead(int r)
    {
        if (r == Nothing) return true;
        if (!_hasBool[r]) return false;
        sbyte known = _dead[r];
        if (known != 0) return known > 0;
        return ComputeDead(r);
    }
    /// <summary>Whether some non-empty string continues <paramref name="r"/> to a match (= some byte's derivative is
    /// not dead).</summary>
    public bool CanExtend(int r)
    {
        sbyte known = _extend[r];
        if (known != 0) return known > 0;
        var p = EnsurePartition(r);
        bool result = false;
        foreach (byte b in p.Reps)
            if (!IsDead(Derivative(r, b))) { result = true; break; }
        _extend[r] = result ? (sbyte)1 : (sbyte)-1;
        return result;
    }
    /// <summary>Whether <paramref name="r"/> matches exactly <paramref name="bytes"/> (a test helper).</summary>
    public bool Matches(int r, ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes)
        {
            r = Derivative(r, b);
            if (r == Nothing) return false;
        }
        return _nullable[r];
    }
    /// <summary>A readable rendering of a term (for messages and tests).</summary>
    public string Describe(int r)
    {
        var sb = new System.Text.StringBuilder();
        DescribeInto(sb, r);
        return sb.ToString();
    }
    /// <summary>Terms created so far.</summary>
    public int Count => _count;
}
