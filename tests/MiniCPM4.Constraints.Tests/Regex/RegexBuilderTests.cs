using System.Diagnostics;
using System.Text;
using MiniCPM4.Constraints.Regex;
using NUnit.Framework;

namespace MiniCPM4.Constraints.Tests.Regex;

[TestFixture]
public class RegexBuilderTests
{
    private static byte[] U(string s) => Encoding.UTF8.GetBytes(s);

    private static int Lower(RegexBuilder b) => b.ByteRange((byte)'a', (byte)'z');

    [Test]
    public void NothingAndEmptyAreFixedIds()
    {
        var b = new RegexBuilder();
        Assert.That(RegexBuilder.Nothing, Is.Zero);
        Assert.That(RegexBuilder.Empty, Is.EqualTo(1));
        Assert.That(b.IsNullable(RegexBuilder.Empty), Is.True);
        Assert.That(b.IsNullable(RegexBuilder.Nothing), Is.False);
        Assert.That(b.IsDead(RegexBuilder.Nothing), Is.True);
        Assert.That(b.IsDead(RegexBuilder.Empty), Is.False);
        Assert.That(b.CanExtend(RegexBuilder.Empty), Is.False);
        Assert.That(b.Literal(""), Is.EqualTo(RegexBuilder.Empty));
        Assert.That(b.ByteRange(5, 4), Is.EqualTo(RegexBuilder.Nothing));
        Assert.That(b.Bytes(new bool[256]), Is.EqualTo(RegexBuilder.Nothing));
    }

    [Test]
    public void HashConsingGivesEqualTermsEqualIds()
    {
        var b = new RegexBuilder();
        Assert.That(b.Literal("abc"), Is.EqualTo(b.Literal("abc")));
        Assert.That(b.Concat(b.Literal("a"), b.Literal("bc")), Is.EqualTo(b.Literal("abc")));
        Assert.That(b.Concat(b.Literal("ab"), b.Literal("c")), Is.EqualTo(b.Literal("abc")),
            "concatenation is re-associated");
        var set = new bool[256];
        for (int i = 'a'; i <= 'z'; i++) set[i] = true;
        Assert.That(b.Bytes(set), Is.EqualTo(Lower(b)));
        int count = b.Count;
        b.Literal("abc");
        b.Or(b.Literal("x"), b.Literal("abc"));
        b.Or(b.Literal("abc"), b.Literal("x"));
        Assert.That(b.Count, Is.EqualTo(count + 2), "only x and the Or are new");
    }

    [Test]
    public void SmartConstructorsSimplify()
    {
        var b = new RegexBuilder();
        int a = b.Literal("a"), x = b.Literal("xy"), n = RegexBuilder.Nothing, e = RegexBuilder.Empty;
        Assert.That(b.Concat(n, a), Is.EqualTo(n));
        Assert.That(b.Concat(a, n), Is.EqualTo(n));
        Assert.That(b.Concat(e, a), Is.EqualTo(a));
        Assert.That(b.Concat(a, e), Is.EqualTo(a));
        Assert.That(b.Or(a, n), Is.EqualTo(a));
        Assert.That(b.Or(a, a), Is.EqualTo(a));
        Assert.That(b.Or(x, a), Is.EqualTo(b.Or(a, x)));
        Assert.That(b.Or(a, b.Or(x, a)), Is.EqualTo(b.Or(a, x)), "flattened and deduplicated");
        Assert.That(b.Or(b.Literal("a"), b.Literal("b"), b.Literal("c")), Is.EqualTo(b.ByteRange((byte)'a', (byte)'c')),
            "byte sets merge");
        Assert.That(b.And(a, n), Is.EqualTo(n));
        Assert.That(b.And(a, b.Not(n)), Is.EqualTo(a), "everything is the identity of And");
        Assert.That(b.And(x, x), Is.EqualTo(x));
        Assert.That(b.And(Lower(b), b.ByteRange((byte)'x', (byte)'~')), Is.EqualTo(b.ByteRange((byte)'x', (byte)'z')));
        Assert.That(b.And(a, b.Not(a)), Is.EqualTo(n));
        Assert.That(b.Or(a, b.Not(a)), Is.EqualTo(b.Not(n)));
        Assert.That(b.Not(b.Not(x)), Is.EqualTo(x));
        Assert.That(b.Star(b.Star(x)), Is.EqualTo(b.Star(x)));
        Assert.That(b.Star(e), Is.EqualTo(e));
        Assert.That(b.Star(n), Is.EqualTo(e));
        Assert.That(b.Star(b.Optional(x)), Is.EqualTo(b.Star(x)));
        Assert.That(b.Repeat(x, 0, 0), Is.EqualTo(e));
        Assert.That(b.Repeat(x, 1, 1), Is.EqualTo(x));
        Assert.That(b.Repeat(x, 0, -1), Is.EqualTo(b.Star(x)));
        Assert.That(b.Repeat(x, 3, 2), Is.EqualTo(n));
        Assert.That(b.Repeat(n, 0, 4), Is.EqualTo(e));
        Assert.That(b.Repeat(n, 1, 4), Is.EqualTo(n));
        Assert.That(b.Optional(x), Is.EqualTo(b.Or(e, x)));
        Assert.That(b.Or(e, b.Star(x)), Is.EqualTo(b.Star(x)), "ε is redundant beside a nullable operand");
    }

    [Test]
    public void DerivativesFollowTheLanguage()
    {
        var b = new RegexBuilder();
        int abc = b.Literal("abc");
        Assert.That(b.Derivative(abc, (byte)'a'), Is.EqualTo(b.Literal("bc")));
        Assert.That(b.Derivative(abc, (byte)'b'), Is.EqualTo(RegexBuilder.Nothing));
        int star = b.Star(b.Literal("ab"));
        Assert.That(b.Derivative(b.Derivative(star, (byte)'a'), (byte)'b'), Is.EqualTo(star));
        int or = b.Or(b.Literal("ab"), b.Literal("ac"));
        Assert.That(b.Derivative(or, (byte)'a'), Is.EqualTo(b.ByteRange((byte)'b', (byte)'c')));
        // The cached path returns the same id.
        Assert.That(b.Derivative(or, (byte)'a'), Is.EqualTo(b.ByteRange((byte)'b', (byte)'c')));
        int not = b.Not(b.Literal("ab"));
        Assert.That(b.IsNullable(not), Is.True);
        Assert.That(b.Matches(not, U("ab")), Is.False);
        Assert.That(b.Matches(not, U("a")), Is.True);
        Assert.That(b.Matches(not, U("abc")), Is.True);
        int and =
            b.And(b.Star(Lower(b)), b.Concat(b.Star(b.ByteRange(0, 255)), b.Literal("q"), b.Star(b.ByteRange(0, 255))));
        Assert.That(b.Matches(and, U("xqz")), Is.True);
        Assert.That(b.Matches(and, U("xyz")), Is.False);
        Assert.That(b.Matches(and, U("xq1")), Is.False);
    }

    [Test]
    public void MatchesWholeStringsOnly()
    {
        var b = new RegexBuilder();
        int r = b.Concat(b.Plus(Lower(b)), b.Literal("-"), b.Repeat(b.ByteRange((byte)'0', (byte)'9'), 2, 3));
        Assert.That(b.Matches(r, U("ab-12")), Is.True);
        Assert.That(b.Matches(r, U("ab-123")), Is.True);
        Assert.That(b.Matches(r, U("ab-1234")), Is.False);
        Assert.That(b.Matches(r, U("ab-1")), Is.False);
        Assert.That(b.Matches(r, U("-12")), Is.False);
        Assert.That(b.Matches(r, U("ab-12 ")), Is.False);
    }

    [Test]
    public void IsDeadIsExactForIntersectionAndComplement()
    {
        var b = new RegexBuilder();
        int lowerStar = b.Star(Lower(b));
        Assert.That(b.IsDead(b.And(lowerStar, b.Not(lowerStar))), Is.True);
        int digits = b.Plus(b.ByteRange((byte)'0', (byte)'9'));
        Assert.That(b.IsDead(b.And(lowerStar, digits)), Is.True, "letters and digits share no non-empty string");
        Assert.That(b.IsDead(b.And(lowerStar, b.Star(digits))), Is.False, "both contain ε");
        // a* ∩ (aa)* ∩ ~(aaaa)* still has aa.
        int a = b.Literal("a");
        int aa = b.Literal("aa");
        int r = b.And(b.Star(a), b.Star(aa), b.Not(b.Star(b.Literal("aaaa"))));
        Assert.That(b.IsDead(r), Is.False);
        Assert.That(b.Matches(r, U("aa")), Is.True);
        // Strings of length 3 that are of length 4: dead; and a length window that excludes every member.
        Assert.That(b.IsDead(b.And(b.Repeat(Lower(b), 3, 3), b.Repeat(Lower(b), 4, 4))), Is.True);
        int any = b.ByteRange(0, 255);
        Assert.That(b.IsDead(b.Not(b.Star(any))), Is.True, "the complement of everything");
        Assert.That(b.IsDead(b.Not(b.Concat(b.Star(any), b.Literal("x")))), Is.False);
        // ~(x*) ∩ x* is dead even when hidden in a concatenation.
        Assert.That(b.IsDead(b.Concat(b.Literal("p"), b.And(b.Star(a), b.Not(b.Star(a))))), Is.True);
        // Contains "ab" but avoids "b": dead.
        int containsAb = b.Concat(b.Star(any), b.Literal("ab"), b.Star(any));
        int noB = b.Star(b.Or(b.ByteRange(0, (byte)'a'), b.ByteRange((byte)'c', 255)));
        Assert.That(b.IsDead(b.And(containsAb, noB)), Is.True);
        Assert.That(b.IsDead(b.And(containsAb, b.Not(noB))), Is.False);
    }

    [Test]
    public void CanExtendSeesThroughDeadContinuations()
    {
        var b = new RegexBuilder();
        int abc = b.Literal("abc");
        Assert.That(b.CanExtend(abc), Is.True);
        Assert.That(b.CanExtend(b.Derivative(b.Derivative(b.Derivative(abc, (byte)'a'), (byte)'b'), (byte)'c')),
            Is.False);
        int lowerStar = b.Star(Lower(b));
        int r = b.Or(RegexBuilder.Empty, b.And(b.Plus(Lower(b)), b.Not(lowerStar)));
        Assert.That(b.IsNullable(r), Is.True);
        Assert.That(b.CanExtend(r), Is.False, "the only continuations are dead");
    }

    [Test]
    public void LargeCountedRepeatsStayCheap()
    {
        var b = new RegexBuilder();
        int start = b.Count;
        int r = b.Repeat(Lower(b), 0, 1000);
        int r2 = b.Pattern("[a-z]{0,1000}x{1000}", CharEncoding.Utf8, search: false);
        Assert.That(b.Count - start, Is.LessThan(30), "nothing is expanded eagerly");
        Assert.That(b.IsDead(r2), Is.False);
        Assert.That(b.CanExtend(r), Is.True);
        Assert.That(b.Matches(r, U(new string('q', 1000))), Is.True);
        Assert.That(b.Matches(r, U(new string('q', 1001))), Is.False);
        Assert.That(b.Matches(r2, U(new string('a', 7) + new string('x', 1000))), Is.True);
        Assert.That(b.Matches(r2, U(new string('a', 7) + new string('x', 999))), Is.False);
        // Each derivative step adds a constant number of terms.
        Assert.That(b.Count - start, Is.LessThan(10_000));
        int r3 = b.Pattern("(?:ab|cd){2,100000}", CharEncoding.Utf8, search: false);
        Assert.That(b.Matches(r3, U("abcdab")), Is.True);
        Assert.That(b.Matches(r3, U("ab")), Is.False);
    }

    [Test]
    public void CachedDerivativesAreFast()
    {
        var b = new RegexBuilder();
        int r = b.Pattern("[a-z]+(?:-[0-9]{1,3})*", CharEncoding.Utf8, search: false);
        byte[] text = U("abc" + string.Concat(Enumerable.Repeat("-12", 40)));
        Assert.That(b.Matches(r, text), Is.True);
        var sw = Stopwatch.StartNew();
        long steps = 0;
        int rounds = 0;
        while (sw.ElapsedMilliseconds < 50)
        {
            for (int k = 0; k < 100; k++)
            {
                int s = r;
                foreach (byte c in text) s = b.Derivative(s, c);
                steps += text.Length;
            }
            rounds++;
        }
        double perMs = steps / sw.Elapsed.TotalMilliseconds;
        TestContext.Out.WriteLine($"{perMs:F0} cached derivative lookups per ms");
        Assert.That(perMs, Is.GreaterThan(10_000), "the cached path must be an array lookup");
    }

    [Test]
    public void LongLiteralsNeedNoDeepRecursion()
    {
        var b = new RegexBuilder();
        string text = new('k', 50_000);
        int lit = b.Literal(text);
        int r = b.Concat(lit, b.And(b.Star(Lower(b)), b.Not(b.Literal("zz"))));
        Assert.That(b.IsDead(r), Is.False);
        Assert.That(b.Describe(lit), Has.Length.EqualTo(text.Length));
        Assert.That(b.Matches(r, U(text + "zy")), Is.True);
        Assert.That(b.Matches(r, U(text + "zz")), Is.False);
        int p = b.Pattern(text, CharEncoding.Utf8, search: false);
        Assert.That(p, Is.EqualTo(lit));
    }

    [Test]
    public void DescribeIsReadable()
    {
        var b = new RegexBuilder();
        Assert.That(b.Describe(Lower(b)), Is.EqualTo("[a-z]"));
        Assert.That(b.Describe(b.Star(b.Or(b.Literal("ab"), b.Literal("c")))),
            Is.EqualTo("(c|ab)*").Or.EqualTo("(ab|c)*"));
        Assert.That(b.Describe(b.Optional(b.Literal("x"))), Is.EqualTo("(x)?"));
        Assert.That(b.Describe(b.Not(b.Literal("x"))), Is.EqualTo("~x"));
        Assert.That(b.Describe(b.And(b.Star(Lower(b)), b.Not(b.Literal("ab")))), Does.Contain("&").And.Contain("~"));
        Assert.That(b.Describe(b.Repeat(b.Literal("ab"), 2, 5)), Is.EqualTo("(ab){2,5}"));
        Assert.That(b.Describe(RegexBuilder.Nothing), Is.EqualTo("∅"));
        Assert.That(b.Describe(b.Literal("a.")), Is.EqualTo("a\\."));
    }

    [Test]
    public void TextEncodesCodePoints()
    {
        var b = new RegexBuilder();
        Assert.That(b.Matches(b.Text("é\"\n", CharEncoding.Utf8), U("é\"\n")), Is.True);
        Assert.That(b.Matches(b.Text("é\"\n\u0001", CharEncoding.JsonStringContent), U("é\\\"\\n\\u0001")), Is.True);
        Assert.That(b.Text("ab", CharEncoding.Utf8), Is.EqualTo(b.Literal("ab")));
        Assert.Throws<ArgumentException>(() => b.Text("\uD800x", CharEncoding.Utf8));
    }
}
