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
    public int Bytes(ReadOnlySpan<bool> set256) => throw new NotImplementedException();
    /// <summary>Any one byte in [lo, hi].</summary>
    public int ByteRange(byte lo, byte hi) => throw new NotImplementedException();
    /// <summary>Exactly these bytes.</summary>
    public int Literal(ReadOnlySpan<byte> bytes) => throw new NotImplementedException();
    /// <summary>Exactly the UTF-8 bytes of <paramref name="text"/>.</summary>
    public int Literal(string text) => throw new NotImplementedException();
    public int Concat(int first, int second) => throw new NotImplementedException();
    public int Concat(params ReadOnlySpan<int> items) => throw new NotImplementedException();
    public int Or(int first, int second) => throw new NotImplementedException();
    public int Or(params ReadOnlySpan<int> items) => throw new NotImplementedException();
    public int And(int first, int second) => throw new NotImplementedException();
    public int And(params ReadOnlySpan<int> items) => throw new NotImplementedException();
    /// <summary>Every byte string not in <paramref name="r"/>.</summary>
    public int Not(int r) => throw new NotImplementedException();
    public int Star(int r) => throw new NotImplementedException();
    public int Plus(int r) => throw new NotImplementedException();
    public int Optional(int r) => throw new NotImplementedException();
    /// <summary><paramref name="r"/> repeated min..max times; max = -1 is unbounded.</summary>
    public int Repeat(int r, int min, int max) => throw new NotImplementedException();

    /// <summary>Any one code point, in the given encoding (valid UTF-8 only: no surrogates, nothing above U+10FFFF).</summary>
    public int AnyCodePoint(CharEncoding encoding) => throw new NotImplementedException();
    /// <summary>Exactly the code points of <paramref name="text"/> in the given encoding.</summary>
    public int Text(string text, CharEncoding encoding) => throw new NotImplementedException();

    /// <summary>
    /// An ECMAScript regular expression (the subset JSON Schema's <c>pattern</c> uses: literals and escapes,
    /// classes with ranges and negation, <c>. \d \w \s \D \W \S</c>, <c>\uXXXX</c>, <c>\u{...}</c>, <c>\p{..}</c> for
    /// the common general categories, groups (capturing, <c>(?:</c>, named), alternation, the quantifiers
    /// <c>* + ? {n} {n,} {n,m}</c> and their lazy forms (same language), and <c>^</c>/<c>$</c> at the ends) over code points,
    /// lowered to bytes in <paramref name="encoding"/>. With <paramref name="search"/> (JSON Schema semantics) the
    /// pattern may match anywhere in the string unless anchored; otherwise it must match the whole string.
    /// Throws <see cref="RegexNotSupportedException"/> for what it cannot express exactly.
    /// </summary>
    public int Pattern(string pattern, CharEncoding encoding, bool search) => throw new NotImplementedException();

    /// <summary>Whether <paramref name="r"/> matches the empty string.</summary>
    public bool IsNullable(int r) => throw new NotImplementedException();
    /// <summary>The derivative of <paramref name="r"/> by <paramref name="b"/> (cached).</summary>
    public int Derivative(int r, byte b) => throw new NotImplementedException();
    /// <summary>Whether <paramref name="r"/> matches no string at all (cached; exact even for And/Not terms).</summary>
    public bool IsDead(int r) => throw new NotImplementedException();
    /// <summary>Whether some non-empty string continues <paramref name="r"/> to a match (= some byte's derivative is
    /// not dead).</summary>
    public bool CanExtend(int r) => throw new NotImplementedException();
    /// <summary>Whether <paramref name="r"/> matches exactly <paramref name="bytes"/> (a test helper).</summary>
    public bool Matches(int r, ReadOnlySpan<byte> bytes) => throw new NotImplementedException();
    /// <summary>A readable rendering of a term (for messages and tests).</summary>
    public string Describe(int r) => throw new NotImplementedException();
    /// <summary>Terms created so far.</summary>
    public int Count => throw new NotImplementedException();
}
