using System.Text;
using MiniCPM4.Constraints.Regex;
using NUnit.Framework;

namespace MiniCPM4.Constraints.Tests.Regex;

[TestFixture]
public class PatternTests
{
    private static bool Full(string pattern, string s)
    {
        var b = new RegexBuilder();
        return b.Matches(b.Pattern(pattern, CharEncoding.Utf8, search: false), Encoding.UTF8.GetBytes(s));
    }

    private static bool Search(string pattern, string s)
    {
        var b = new RegexBuilder();
        return b.Matches(b.Pattern(pattern, CharEncoding.Utf8, search: true), Encoding.UTF8.GetBytes(s));
    }

    [TestCase("abc", "abc", true)]
    [TestCase("abc", "abd", false)]
    [TestCase("a|bc", "bc", true)]
    [TestCase("(a|b)c", "bc", true)]
    [TestCase("(?:a|b)+c", "abbac", true)]
    [TestCase("(?<name>ab)*", "abab", true)]
    [TestCase("a{2}", "aa", true)]
    [TestCase("a{2}", "aaa", false)]
    [TestCase("a{2,}", "aaaaa", true)]
    [TestCase("a{2,3}?", "aaa", true)]
    [TestCase("a+?b*?c??", "a", true)]
    [TestCase("x{", "x{", true)]
    [TestCase("x{a}", "x{a}", true)]
    [TestCase("a}]", "a}]", true)]
    [TestCase("\\t\\n\\r\\f\\v\\0", "\t\n\r\f\v\0", true)]
    [TestCase("\\/\\\\\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$\\-", "/\\.*+?()[]{}|^$-", true)]
    [TestCase("\\x41\\u0042\\u{43}\\u{1F600}", "ABC😀", true)]
    [TestCase("\\uD83D\\uDE00", "😀", true)]
    [TestCase("😀+", "😀😀", true)]
    [TestCase("\\cJ\\ca", "\n\u0001", true)]
    [TestCase("[a-c]+", "abcab", true)]
    [TestCase("[a-c]", "d", false)]
    [TestCase("[^a-c]", "d", true)]
    [TestCase("[^a-c]", "\n", true)]
    [TestCase("[^a-c]", "é", true)]
    [TestCase("[^a-c]", "😀", true)]
    [TestCase("[]", "", false)]
    [TestCase("[^]", "\n", true)]
    [TestCase("[-a]", "-", true)]
    [TestCase("[a-]", "-", true)]
    [TestCase("[\\w-.]+", "a-.", true)]
    [TestCase("[\\d.]+", "1.5", true)]
    [TestCase("[\\b]", "\b", true)]
    [TestCase("[\\]]", "]", true)]
    [TestCase("[[]", "[", true)]
    [TestCase("\\d+", "0123456789", true)]
    [TestCase("\\d", "٣", false)]
    [TestCase("\\D", "a", true)]
    [TestCase("\\w+", "aZ_9", true)]
    [TestCase("\\w", "é", false)]
    [TestCase("\\W", "é", true)]
    [TestCase("\\s+", " \t\n\v\f\r\u00a0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000\ufeff", true)]
    [TestCase("\\s", "\u200b", false)]
    [TestCase("\\S", "\u200b", true)]
    [TestCase(".", "\n", false)]
    [TestCase(".", "\r", false)]
    [TestCase(".", "\u2028", false)]
    [TestCase(".", "\u2029", false)]
    [TestCase(".", "\u0085", true)]
    [TestCase(".", "😀", true)]
    [TestCase("\\p{L}+", "aÉжß中", true)]
    [TestCase("\\p{L}", "1", false)]
    [TestCase("\\p{Lu}\\p{Ll}", "Éa", true)]
    [TestCase("\\p{Lu}", "a", false)]
    [TestCase("\\p{N}\\p{Nd}", "Ⅻ٣", true)]
    [TestCase("\\P{L}", "a", false)]
    [TestCase("\\P{L}", "1", true)]
    [TestCase("\\p{Letter}\\p{gc=Decimal_Number}\\p{General_Category=Lu}", "x7Q", true)]
    [TestCase("[\\p{L}\\d]+", "a1é", true)]
    [TestCase("^abc$", "abc", true)]
    [TestCase("^a|b$", "b", true)]
    [TestCase("", "", true)]
    [TestCase("", "a", false)]
    [TestCase("()", "", true)]
    [TestCase("a||b", "", true)]
    public void MatchesWholeString(string pattern, string s, bool expected)
        => Assert.That(Full(pattern, s), Is.EqualTo(expected));

    [TestCase("b", "abc", true)]
    [TestCase("b", "ac", false)]
    [TestCase("^b", "abc", false)]
    [TestCase("^a", "abc", true)]
    [TestCase("c$", "abc", true)]
    [TestCase("b$", "abc", false)]
    [TestCase("^abc$", "abc", true)]
    [TestCase("^abc$", "abcd", false)]
    [TestCase("^a|c$", "xxc", true)]
    [TestCase("^a|c$", "xax", false)]
    [TestCase("^a|c$", "axx", true)]
    [TestCase("b", "a\nb\n", true)]
    [TestCase("", "anything", true)]
    [TestCase("^$", "", true)]
    [TestCase("^$", "x", false)]
    [TestCase("^[0-9]{3}-[0-9]{4}$", "555-1234", true)]
    [TestCase("^[0-9]{3}-[0-9]{4}$", "555-12345", false)]
    [TestCase("é", "café", true)]
    public void SearchesLikeJsonSchema(string pattern, string s, bool expected)
        => Assert.That(Search(pattern, s), Is.EqualTo(expected));

    [TestCase("(a)\\1", "back-reference", 3)]
    [TestCase("(?<n>a)\\k<n>", "named back-reference", 7)]
    [TestCase("a(?=b)", "look-ahead", 1)]
    [TestCase("a(?!b)", "look-ahead", 1)]
    [TestCase("(?<=a)b", "look-behind", 0)]
    [TestCase("(?<!a)b", "look-behind", 0)]
    [TestCase("\\bword", "word boundary", 0)]
    [TestCase("a\\B", "word boundary", 1)]
    [TestCase("(?i)abc", "group modifier", 0)]
    [TestCase("a^b", "'^'", 1)]
    [TestCase("(^a)", "'^'", 1)]
    [TestCase("a$b", "'$'", 1)]
    [TestCase("(a$)", "'$'", 2)]
    [TestCase("*a", "nothing to repeat", 0)]
    [TestCase("a**", "nothing to repeat", 2)]
    [TestCase("a{2}{3}", "nothing to repeat", 4)]
    [TestCase("a{3,2}", "n > m", 1)]
    [TestCase("(ab", "unterminated group", 0)]
    [TestCase("ab)", "unmatched ')'", 2)]
    [TestCase("[ab", "unterminated character class", 0)]
    [TestCase("[z-a]", "out of order", 2)]
    [TestCase("\\q", "escape", 0)]
    [TestCase("ab\\", "end of the pattern", 2)]
    [TestCase("\\xZZ", "\\x", 0)]
    [TestCase("\\u{110000}", "above U+10FFFF", 0)]
    [TestCase("\\p{Script=Greek}", "Unicode property", 0)]
    [TestCase("\\01", "octal", 0)]
    [TestCase("\\c1", "control escape", 0)]
    [TestCase("a{2000000}", "repetition count", 1)]
    public void RejectsWhatItCannotExpress(string pattern, string construct, int index)
    {
        var b = new RegexBuilder();
        var e = Assert.Throws<RegexNotSupportedException>(() => b.Pattern(pattern, CharEncoding.Utf8, search: true))!;
        Assert.That(e.Message, Does.Contain(construct));
        Assert.That(e.Message, Does.Contain($"at index {index}"));
    }

    [Test]
    public void LoneSurrogatesMatchNothing()
    {
        var b = new RegexBuilder();
        Assert.That(b.Pattern("\\uD800", CharEncoding.Utf8, search: false), Is.EqualTo(RegexBuilder.Nothing));
        Assert.That(b.IsDead(b.Pattern("a\\uDC00", CharEncoding.Utf8, search: false)), Is.True);
    }

    [Test]
    public void CommonClassesAreSharedTerms()
    {
        var b = new RegexBuilder();
        int first = b.Pattern("\\p{L}", CharEncoding.Utf8, search: false);
        int count = b.Count;
        int second = b.Pattern("\\p{L}", CharEncoding.Utf8, search: false);
        Assert.That(second, Is.EqualTo(first));
        Assert.That(b.Count, Is.EqualTo(count));
    }

    [Test]
    public void UnicodePropertiesFollowDotNetCategories()
    {
        var b = new RegexBuilder();
        int letter = b.Pattern("\\p{L}", CharEncoding.Utf8, search: false);
        int upper = b.Pattern("\\p{Lu}", CharEncoding.Utf8, search: false);
        int number = b.Pattern("\\p{N}", CharEncoding.Utf8, search: false);
        var rng = new Random(3);
        for (int i = 0; i < 20000; i++)
        {
            int cp = i < 5000 ? i : rng.Next(0x110000);
            if (cp is >= 0xD800 and <= 0xDFFF) continue;
            var cat = System.Globalization.CharUnicodeInfo.GetUnicodeCategory(cp);
            byte[] bytes = Encoding.UTF8.GetBytes(char.ConvertFromUtf32(cp));
            bool isLetter = cat <= System.Globalization.UnicodeCategory.OtherLetter;
            Assert.That(b.Matches(letter, bytes), Is.EqualTo(isLetter), $"U+{cp:X}");
            Assert.That(b.Matches(upper, bytes),
                Is.EqualTo(cat == System.Globalization.UnicodeCategory.UppercaseLetter), $"U+{cp:X}");
            bool isNumber = cat is System.Globalization.UnicodeCategory.DecimalDigitNumber
                or System.Globalization.UnicodeCategory.LetterNumber or System.Globalization.UnicodeCategory
                    .OtherNumber;
            Assert.That(b.Matches(number, bytes), Is.EqualTo(isNumber), $"U+{cp:X}");
        }
    }
}
