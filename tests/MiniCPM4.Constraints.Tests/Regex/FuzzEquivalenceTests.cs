using System.Diagnostics;
using System.Text;
using MiniCPM4.Constraints.Regex;
using NUnit.Framework;
using NetRegex = System.Text.RegularExpressions.Regex;
using NetRegexOptions = System.Text.RegularExpressions.RegexOptions;

namespace MiniCPM4.Constraints.Tests.Regex;

/// <summary>
/// Random patterns from a small grammar, compared with .NET's backtracking engine in ECMAScript mode on whole
/// strings (<c>\A(?:p)\z</c>) and on search (<c>IsMatch</c>). The alphabet avoids where the two dialects differ
/// (.NET's ECMAScript <c>\s</c> is ASCII-only, its <c>.</c> matches <c>\r</c>, it counts UTF-16 units).
/// </summary>
[TestFixture]
public class FuzzEquivalenceTests
{
    private const string Alphabet = "abc01_- .\né€";

    private abstract class Node
    {
        public abstract void Write(StringBuilder sb);
        public abstract void Generate(Random rng, StringBuilder sb);
    }

    private sealed class Lit(char c) : Node
    {
        public override void Write(StringBuilder sb)
        {
            if (c == '\n') sb.Append("\\n");
            else if (".-".Contains(c)) sb.Append('\\').Append(c);
            else sb.Append(c);
        }
        public override void Generate(Random rng, StringBuilder sb) => sb.Append(c);
    }

    /// <summary>A set of characters of the alphabet: '.', an escape or a class.</summary>
    private sealed class CharSet(string text, Func<char, bool> member) : Node
    {
        public override void Write(StringBuilder sb) => sb.Append(text);
        public override void Generate(Random rng, StringBuilder sb)
        {
            var members = Alphabet.Where(member).ToArray();
            sb.Append(members.Length == 0 ? Alphabet[rng.Next(Alphabet.Length)] : members[rng.Next(members.Length)]);
        }
    }

    private sealed class Seq(List<Node> items) : Node
    {
        public override void Write(StringBuilder sb)
        {
            foreach (var i in items) i.Write(sb);
        }
        public override void Generate(Random rng, StringBuilder sb)
        {
            foreach (var i in items) i.Generate(rng, sb);
        }
    }

    private sealed class Alt(List<Node> alternatives) : Node
    {
        public override void Write(StringBuilder sb)
        {
            for (int i = 0; i < alternatives.Count; i++)
            {
                if (i > 0) sb.Append('|');
                alternatives[i].Write(sb);
            }
        }
        public override void Generate(Random rng, StringBuilder sb) =>
            alternatives[rng.Next(alternatives.Count)].Generate(rng, sb);
    }

    private sealed class Group(Node body, string open) : Node
    {
        public override void Write(StringBuilder sb)
        {
            sb.Append(open);
            body.Write(sb);
            sb.Append(')');
        }
        public override void Generate(Random rng, StringBuilder sb) => body.Generate(rng, sb);
    }

    private sealed class Quant(Node body, int min, int max, string text) : Node
    {
        public override void Write(StringBuilder sb)
        {
            body.Write(sb);
            sb.Append(text);
        }
        public override void Generate(Random rng, StringBuilder sb)
        {
            int n = rng.Next(min, (max < 0 ? min + 2 : max) + 1);
            for (int i = 0; i < n; i++) body.Generate(rng, sb);
        }
    }

    private static bool IsDigit(char c) => c is >= '0' and <= '9';
    private static bool IsWord(char c) => char.IsAsciiLetterOrDigit(c) || c == '_';
    private static bool IsSpace(char c) => c is ' ' or '\n' or '\t' or '\r' or '\f' or '\v';

    private static Node RandomClass(Random rng)
    {
        var sb = new StringBuilder("[");
        bool negate = rng.Next(3) == 0;
        if (negate) sb.Append('^');
        var tests = new List<Func<char, bool>>();
        for (int i = rng.Next(1, 4); i > 0; i--)
        {
            switch (rng.Next(6))
            {
                case 0:
                    sb.Append("a-c");
                    tests.Add(c => c is >= 'a' and <= 'c');
                    break;
                case 1:
                    sb.Append("0-1");
                    tests.Add(c => c is >= '0' and <= '1');
                    break;
                case 2:
                    sb.Append("\\d");
                    tests.Add(IsDigit);
                    break;
                case 3:
                    sb.Append("\\w");
                    tests.Add(IsWord);
                    break;
                case 4:
                    sb.Append("\\s");
                    tests.Add(IsSpace);
                    break;
                default:
                {
                    char c = "ab_.é€\n"[rng.Next(7)];
                    sb.Append(c == '\n' ? "\\n" : c.ToString());
                    tests.Add(x => x == c);
                    break;
                }
            }
        }
        sb.Append(']');
        return new CharSet(sb.ToString(), c => tests.Any(t => t(c)) != negate);
    }

    private static Node RandomAtom(Random rng, int depth)
    {
        int k = rng.Next(depth > 0 ? 10 : 7);
        switch (k)
        {
            case 0: case 1: case 2:
                return new Lit(Alphabet[rng.Next(Alphabet.Length)]);
            case 3:
                return new CharSet(".", c => c != '\n');
            case 4:
            {
                var (text, test) = rng.Next(6) switch
                {
                    0 => ("\\d", (Func<char, bool>)IsDigit),
                    1 => ("\\D", c => !IsDigit(c)),
                    2 => ("\\w", IsWord),
                    3 => ("\\W", c => !IsWord(c)),
                    4 => ("\\s", IsSpace),
                    _ => ("\\S", c => !IsSpace(c)),
                };
                return new CharSet(text, test);
            }
            case 5: case 6:
                return RandomClass(rng);
            default:
            {
                string open = rng.Next(3) switch { 0 => "(", 1 => "(?:", _ => "(?<g" + rng.Next(1000) + ">" };
                return new Group(RandomAlt(rng, depth - 1), open);
            }
        }
    }

    private static Node RandomTerm(Random rng, int depth)
    {
        var atom = RandomAtom(rng, depth);
        if (rng.Next(3) != 0) return atom;
        int n = rng.Next(4), m = n + rng.Next(3);
        var (min, max, text) = rng.Next(6) switch
        {
            0 => (0, -1, "*"),
            1 => (1, -1, "+"),
            2 => (0, 1, "?"),
            3 => (n, n, $"{{{n}}}"),
            4 => (n, -1, $"{{{n},}}"),
            _ => (n, m, $"{{{n},{m}}}"),
        };
        if (rng.Next(4) == 0) text += "?";
        return new Quant(atom, min, max, text);
    }

    private static Node RandomAlt(Random rng, int depth)
    {
        var alternatives = new List<Node>();
        for (int a = rng.Next(4) == 0 ? rng.Next(2, 4) : 1; a > 0; a--)
        {
            var items = new List<Node>();
            for (int i = rng.Next(1, 4); i > 0; i--) items.Add(RandomTerm(rng, depth));
            alternatives.Add(new Seq(items));
        }
        return alternatives.Count == 1 ? alternatives[0] : new Alt(alternatives);
    }

    private static string RandomString(Random rng, Node node)
    {
        var sb = new StringBuilder();
        if (rng.Next(8) == 0)
        {
            for (int i = rng.Next(6); i > 0; i--) sb.Append(Alphabet[rng.Next(Alphabet.Length)]);
            return sb.ToString();
        }
        node.Generate(rng, sb);
        if (sb.Length > 24) sb.Length = 24;
        if (rng.Next(3) == 0)
        {
            for (int e = rng.Next(1, 3); e > 0; e--)
            {
                int pos = rng.Next(sb.Length + 1);
                switch (rng.Next(3))
                {
                    case 0:
                        sb.Insert(pos, Alphabet[rng.Next(Alphabet.Length)]);
                        break;
                    case 1:
                        if (pos < sb.Length) sb.Remove(pos, 1);
                        break;
                    default:
                        if (pos < sb.Length) sb[pos] = Alphabet[rng.Next(Alphabet.Length)];
                        break;
                }
            }
        }
        return sb.ToString();
    }

    private static string PythonJsonContent(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s)
        {
            sb.Append(c switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\t' => "\\t",
                '\r' => "\\r",
                '\b' => "\\b",
                '\f' => "\\f",
                < ' ' => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        }
        return sb.ToString();
    }

    private static readonly TimeSpan Budget = TimeSpan.FromMilliseconds(20);

    /// <summary>.NET's verdict, or null where its backtracking blows up (nested nullable loops).</summary>
    private static bool? NetVerdict(NetRegex r, string s)
    {
        try
        {
            return r.IsMatch(s);
        }
        catch (Exception e) when (e is System.Text.RegularExpressions.RegexMatchTimeoutException or OverflowException)
        {
            return null;
        }
    }

    [Test]
    public void RandomPatternsAgreeWithDotNet()
    {
        var rng = new Random(20240611);
        var b = new RegexBuilder();
        var sw = Stopwatch.StartNew();
        int cases = 0, matched = 0, skipped = 0;
        for (int round = 0; round < 2500; round++)
        {
            var node = RandomAlt(rng, 2);
            var psb = new StringBuilder();
            node.Write(psb);
            string pattern = psb.ToString();
            var full = new NetRegex("\\A(?:" + pattern + ")\\z", NetRegexOptions.ECMAScript, Budget);
            var search = new NetRegex(pattern, NetRegexOptions.ECMAScript, Budget);
            int mine = b.Pattern(pattern, CharEncoding.Utf8, search: false);
            int mineSearch = b.Pattern(pattern, CharEncoding.Utf8, search: true);
            int mineJson = b.Pattern(pattern, CharEncoding.JsonStringContent, search: false);
            for (int k = 0; k < 4; k++)
            {
                string s = RandomString(rng, node);
                byte[] utf8 = Encoding.UTF8.GetBytes(s);
                if (NetVerdict(full, s) is not { } expected || NetVerdict(search, s) is not { } found)
                {
                    skipped++;
                    continue;
                }
                cases++;
                if (expected) matched++;
                if (b.Matches(mine, utf8) != expected)
                    Assert.Fail($"/{pattern}/ on \"{s}\": .NET says {expected}");
                if (b.Matches(mineJson, Encoding.UTF8.GetBytes(PythonJsonContent(s))) != expected)
                    Assert.Fail($"/{pattern}/ (JSON string content) on \"{s}\": .NET says {expected}");
                if (b.Matches(mineSearch, utf8) != found)
                    Assert.Fail($"/{pattern}/ searched in \"{s}\": .NET says {found}");
            }
        }
        TestContext.Out.WriteLine(
            $"{cases} cases ({matched} matching, {skipped} skipped) in {sw.ElapsedMilliseconds} ms; {b.Count} terms");
        Assert.That(skipped, Is.LessThan(cases / 50), "few cases exceed .NET's backtracking budget");
        Assert.That(matched, Is.GreaterThan(cases / 4), "the strings are biased to match");
        Assert.That(matched, Is.LessThan(cases * 9 / 10));
    }

    [Test]
    public void RandomIntersectionsAndComplementsAgreeWithDotNet()
    {
        // And/Not have no .NET syntax: check them against the two .NET verdicts, and IsDead against a search.
        var rng = new Random(99);
        var b = new RegexBuilder();
        for (int round = 0; round < 300; round++)
        {
            var n1 = RandomAlt(rng, 1);
            var n2 = RandomAlt(rng, 1);
            var s1 = new StringBuilder();
            var s2 = new StringBuilder();
            n1.Write(s1);
            n2.Write(s2);
            var r1 = new NetRegex("\\A(?:" + s1 + ")\\z", NetRegexOptions.ECMAScript, Budget);
            var r2 = new NetRegex("\\A(?:" + s2 + ")\\z", NetRegexOptions.ECMAScript, Budget);
            int t1 = b.Pattern(s1.ToString(), CharEncoding.Utf8, search: false);
            int t2 = b.Pattern(s2.ToString(), CharEncoding.Utf8, search: false);
            int and = b.And(t1, t2), andNot = b.And(t1, b.Not(t2));
            bool foundAnd = false, foundAndNot = false;
            for (int k = 0; k < 12; k++)
            {
                string s = RandomString(rng, k % 2 == 0 ? n1 : n2);
                byte[] u = Encoding.UTF8.GetBytes(s);
                if (NetVerdict(r1, s) is not { } m1 || NetVerdict(r2, s) is not { } m2) continue;
                Assert.That(b.Matches(and, u), Is.EqualTo(m1 && m2), $"/{s1}/ & /{s2}/ on \"{s}\"");
                Assert.That(b.Matches(andNot, u), Is.EqualTo(m1 && !m2), $"/{s1}/ & ~/{s2}/ on \"{s}\"");
                foundAnd |= m1 && m2;
                foundAndNot |= m1 && !m2;
            }
            // A witness proves liveness; IsDead must agree.
            if (foundAnd) Assert.That(b.IsDead(and), Is.False, $"/{s1}/ & /{s2}/");
            if (foundAndNot) Assert.That(b.IsDead(andNot), Is.False, $"/{s1}/ & ~/{s2}/");
            // And a dead verdict must survive the samples (checked above: no sample matched).
        }
    }
}
