using System.Buffers;
using System.Text;
using MiniCPM4.Constraints.Regex;
using NUnit.Framework;

namespace MiniCPM4.Constraints.Tests.Regex;

[TestFixture]
public class EncodingTests
{
    private static readonly int[] Boundaries =
        [0, 1, 0x7E, 0x7F, 0x80, 0x81, 0x7FF, 0x800, 0xFFF, 0x1000, 0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFFFF, 0x10000,
         0x3FFFF, 0x40000, 0xFFFFF, 0x100000, 0x10FFFF];

    private static byte[] Utf8(int cp) => Encoding.UTF8.GetBytes(char.ConvertFromUtf32(cp));

    private static bool IsScalar(int cp) => cp is >= 0 and <= 0x10FFFF and not (>= 0xD800 and <= 0xDFFF);

    private static bool StrictlyValid(ReadOnlySpan<byte> bytes)
        => Rune.DecodeFromUtf8(bytes, out _, out int used) == OperationStatus.Done && used == bytes.Length;

    [Test]
    public void AnyCodePointMatchesEveryScalarValue()
    {
        var b = new RegexBuilder();
        int any = b.AnyCodePoint(CharEncoding.Utf8);
        Span<byte> buf = stackalloc byte[4];
        for (int cp = 0; cp <= 0x10FFFF; cp++)
        {
            if (!IsScalar(cp)) continue;
            int n = new Rune(cp).EncodeToUtf8(buf);
            if (!b.Matches(any, buf[..n])) Assert.Fail($"U+{cp:X4} is not matched");
        }
    }

    [Test]
    public void AnyCodePointAcceptsExactlyValidUtf8()
    {
        var b = new RegexBuilder();
        int any = b.AnyCodePoint(CharEncoding.Utf8);
        var one = new byte[1];
        for (int x = 0; x < 256; x++)
        {
            one[0] = (byte)x;
            Assert.That(b.Matches(any, one), Is.EqualTo(StrictlyValid(one)), $"{x:X2}");
        }
        var two = new byte[2];
        for (int x = 0; x < 65536; x++)
        {
            two[0] = (byte)(x >> 8);
            two[1] = (byte)x;
            if (b.Matches(any, two) != StrictlyValid(two)) Assert.Fail($"{two[0]:X2} {two[1]:X2}");
        }
        var three = new byte[3];
        for (int x = 0xE00000; x <= 0xEFFFFF; x++)
        {
            three[0] = (byte)(x >> 16);
            three[1] = (byte)(x >> 8);
            three[2] = (byte)x;
            if (b.Matches(any, three) != StrictlyValid(three)) Assert.Fail(
                $"{three[0]:X2} {three[1]:X2} {three[2]:X2}");
        }
        var four = new byte[4];
        var rng = new Random(7);
        for (int i = 0; i < 200_000; i++)
        {
            four[0] = (byte)(0xF0 + rng.Next(8));
            for (int k = 1; k < 4; k++) four[k] = (byte)(rng.Next(8) == 0 ? rng.Next(256) : 0x80 + rng.Next(64));
            if (b.Matches(any, four) != StrictlyValid(four)) Assert.Fail(Convert.ToHexString(four));
        }
        // Surrogates, overlong forms and values past U+10FFFF.
        foreach (
            var bad in new[] { "EDA080", "EDBFBF", "C080", "C1BF", "E08080", "E09FBF", "F08F8080", "F4908080",
            "F5808080", "FF" })
            Assert.That(b.Matches(any, Convert.FromHexString(bad)), Is.False, bad);
    }

    [Test]
    public void CodePointRangesLowerExactlyAtEveryBoundary()
    {
        var b = new RegexBuilder();
        var rng = new Random(11);
        var points = new List<int>(Boundaries);
        for (int i = 0; i < 20; i++) points.Add(rng.Next(0x110000));
        foreach (int lo in points)
            foreach (int hi in points)
            {
                if (lo > hi) continue;
                int r = b.LowerSet(CodePointSet.Range(lo, hi), CharEncoding.Utf8);
                var probes = new List<int>();
                foreach (int p in points) probes.AddRange([p - 1, p, p + 1]);
                probes.AddRange([lo - 1, lo, lo + 1, hi - 1, hi, hi + 1]);
                for (int k = 0; k < 20; k++) probes.Add(rng.Next(0x110000));
                foreach (int cp in probes)
                {
                    if (!IsScalar(cp)) continue;
                    bool expected = cp >= lo && cp <= hi;
                    if (b.Matches(r, Utf8(cp)) != expected)
                        Assert.Fail($"[{lo:X}-{hi:X}] on U+{cp:X}: expected {expected}");
                }
                // An encoded surrogate never matches.
                Assert.That(b.Matches(r, [0xED, 0xA0, 0x80]), Is.False);
            }
    }

    [Test]
    public void RandomCodePointSetsLowerExactly()
    {
        var rng = new Random(5);
        for (int round = 0; round < 20; round++)
        {
            var b = new RegexBuilder();
            var ranges = new List<(int, int)>();
            for (int i = rng.Next(1, 8); i > 0; i--)
            {
                int lo =
                    rng.Next(4) switch { 0 => rng.Next(0x80), 1 => rng.Next(0x800), 2 => rng.Next(0x10000), _ =>
                    rng.Next(0x110000) };
                int len = rng.Next(3) switch { 0 => 0, 1 => rng.Next(64), _ => rng.Next(0x20000) };
                ranges.Add((lo, Math.Min(lo + len, 0x10FFFF)));
            }
            var set = CodePointSet.FromRanges(ranges);
            var negated = set.Complement();
            int r = b.LowerSet(set, CharEncoding.Utf8), nr = b.LowerSet(negated, CharEncoding.Utf8);
            for (int k = 0; k < 2000; k++)
            {
                int cp = k < 2 * set.RangeCount ? (k % 2 == 0 ? set.Lo(k / 2) - 1 : set.Hi(k / 2) + 1)
                    : rng.Next(0x110000);
                if (!IsScalar(cp)) continue;
                bool inSet = set.Contains(cp);
                Assert.That(b.Matches(r, Utf8(cp)), Is.EqualTo(inSet), $"{set} U+{cp:X}");
                Assert.That(b.Matches(nr, Utf8(cp)), Is.EqualTo(!inSet), $"~{set} U+{cp:X}");
            }
        }
    }

    [Test]
    public void PatternClassesAtUtf8Boundaries()
    {
        var b = new RegexBuilder();
        var pairs =
            new (int Lo, int Hi)[] { (0x7F, 0x80), (0x7FF, 0x800), (0xFFFF, 0x10000), (0x10000, 0x10FFFF),
            (0x80, 0x7FF), (0xD7FF, 0xE000) };
        foreach (var (lo, hi) in pairs)
        {
            int r = b.Pattern($"[\\u{{{lo:X}}}-\\u{{{hi:X}}}]", CharEncoding.Utf8, search: false);
            int neg = b.Pattern($"[^\\u{{{lo:X}}}-\\u{{{hi:X}}}]", CharEncoding.Utf8, search: false);
            foreach (int cp in new[] { lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 0, 0x10FFFF, 0xE000, 0xD7FF })
            {
                if (!IsScalar(cp)) continue;
                Assert.That(b.Matches(r, Utf8(cp)), Is.EqualTo(cp >= lo && cp <= hi), $"[{lo:X}-{hi:X}] U+{cp:X}");
                Assert.That(b.Matches(neg, Utf8(cp)), Is.EqualTo(!(cp >= lo && cp <= hi)),
                    $"[^{lo:X}-{hi:X}] U+{cp:X}");
            }
            Assert.That(b.Matches(neg, [0xED, 0xA0, 0x80]), Is.False, "negated classes exclude surrogates");
        }
    }

    private static string PythonJsonContent(int cp) => cp switch
    {
        '"' => "\\\"",
        '\\' => "\\\\",
        8 => "\\b",
        12 => "\\f",
        10 => "\\n",
        13 => "\\r",
        9 => "\\t",
        < 0x20 => $"\\u{cp:x4}",
        _ => char.ConvertFromUtf32(cp),
    };

    [Test]
    public void JsonStringContentSpellsEachCodePointOneWay()
    {
        var b = new RegexBuilder();
        int any = b.AnyCodePoint(CharEncoding.JsonStringContent);
        var sample = new List<int>();
        for (int cp = 0; cp < 0x100; cp++) sample.Add(cp);
        sample.AddRange([0x7FF, 0x800, 0x2028, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF]);
        foreach (int cp in sample)
        {
            byte[] spelled = Encoding.UTF8.GetBytes(PythonJsonContent(cp));
            Assert.That(b.Matches(any, spelled), Is.True, $"U+{cp:X4} as {PythonJsonContent(cp)}");
            Assert.That(b.Matches(b.Text(char.ConvertFromUtf32(cp), CharEncoding.JsonStringContent), spelled), Is.True);
            int single = b.LowerSet(CodePointSet.Single(cp), CharEncoding.JsonStringContent);
            Assert.That(b.Matches(single, spelled), Is.True);
            if (cp < 0x20 || cp == '"' || cp == '\\')
                Assert.That(b.Matches(any, Utf8(cp)), Is.False, $"raw U+{cp:X4} is not JSON string content");
        }
        foreach (var other in new[] { "\\u000A", "\\u00e9", "\\/", "\\u0022", "\\U0001", "\\", "\\x", "\\u001F" })
            Assert.That(b.Matches(any, Encoding.UTF8.GetBytes(other)), Is.False, other);
        Assert.That(b.Matches(any, Encoding.UTF8.GetBytes("\\u001f")), Is.True);
        Assert.That(b.Matches(any, [0x7F]), Is.True, "DEL is written raw");
    }

    [Test]
    public void JsonStringContentClassesSplitEscapedMembers()
    {
        var b = new RegexBuilder();
        int r = b.Pattern("[^a-z]+", CharEncoding.JsonStringContent, search: false);
        Assert.That(b.Matches(r, Encoding.UTF8.GetBytes("\\\"\\\\\\n\\u0000É1")), Is.True);
        Assert.That(b.Matches(r, Encoding.UTF8.GetBytes("\\\"a")), Is.False);
        Assert.That(b.Matches(r, Encoding.UTF8.GetBytes("\"")), Is.False);
        int quote = b.Pattern("\"", CharEncoding.JsonStringContent, search: false);
        Assert.That(b.Matches(quote, Encoding.UTF8.GetBytes("\\\"")), Is.True);
        int dot = b.Pattern("^.$", CharEncoding.JsonStringContent, search: true);
        Assert.That(b.Matches(dot, Encoding.UTF8.GetBytes("\\t")), Is.True);
        Assert.That(b.Matches(dot, Encoding.UTF8.GetBytes("\\n")), Is.False, ". excludes the newline");
        int ws = b.Pattern("\\s", CharEncoding.JsonStringContent, search: false);
        Assert.That(b.Matches(ws, Encoding.UTF8.GetBytes("\\u000b")), Is.True);
        Assert.That(b.Matches(ws, Encoding.UTF8.GetBytes("\u3000")), Is.True);
    }
}
