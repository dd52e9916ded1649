using System.Text;
using MiniCPM4.Constraints.Regex;
using NUnit.Framework;

namespace MiniCPM4.Constraints.Tests.Regex;

[TestFixture]
public class FormatTests
{
    private static readonly RegexBuilder Builder = new();

    private static bool Accepts(string format, string s, CharEncoding enc = CharEncoding.Utf8)
    {
        int r = StringFormats.Regex(Builder, format, enc) ?? throw new AssertionException("unknown format " + format);
        return Builder.Matches(r, Encoding.UTF8.GetBytes(s));
    }

    [TestCase("2024-02-29", true)]
    [TestCase("2000-02-29", true)]
    [TestCase("1600-02-29", true)]
    [TestCase("0004-02-29", true)]
    [TestCase("2023-02-29", false)]
    [TestCase("1900-02-29", false)]
    [TestCase("2100-02-29", false)]
    [TestCase("2023-02-28", true)]
    [TestCase("2023-01-31", true)]
    [TestCase("2023-04-31", false)]
    [TestCase("2023-04-30", true)]
    [TestCase("2023-12-31", true)]
    [TestCase("2023-13-01", false)]
    [TestCase("2023-00-10", false)]
    [TestCase("2023-01-00", false)]
    [TestCase("2023-01-32", false)]
    [TestCase("0000-01-01", false)]
    [TestCase("0001-01-01", true)]
    [TestCase("9999-12-31", true)]
    [TestCase("2023-1-01", false)]
    [TestCase("20230101", false)]
    [TestCase("2023-01-01T00:00:00Z", false)]
    [TestCase("２０２３-01-01", false)]
    public void Date(string s, bool ok) => Assert.That(Accepts("date", s), Is.EqualTo(ok));

    [TestCase("00:00:00Z", true)]
    [TestCase("23:59:59z", true)]
    [TestCase("12:34:56.789+05:30", true)]
    [TestCase("12:34:56-23:59", true)]
    [TestCase("12:34:56.+05:30", false)]
    [TestCase("24:00:00Z", false)]
    [TestCase("12:60:00Z", false)]
    [TestCase("12:00:60Z", false)]
    [TestCase("12:00:00", false)]
    [TestCase("12:00:00+24:00", false)]
    [TestCase("12:00:00+0530", false)]
    [TestCase("1:00:00Z", false)]
    public void Time(string s, bool ok) => Assert.That(Accepts("time", s), Is.EqualTo(ok));

    [TestCase("2024-02-29T12:00:00Z", true)]
    [TestCase("2024-02-29t12:00:00.5+01:00", true)]
    [TestCase("2023-02-29T12:00:00Z", false)]
    [TestCase("2024-02-29 12:00:00Z", false)]
    [TestCase("2024-02-29T12:00Z", false)]
    public void DateTime(string s, bool ok) => Assert.That(Accepts("date-time", s), Is.EqualTo(ok));

    [TestCase("joe@example.com", true)]
    [TestCase("first.last+tag@sub.example.co.uk", true)]
    [TestCase("!#$%&'*+/=?^_`{|}~-@x", true)]
    [TestCase("a@localhost", true)]
    [TestCase("joe", false)]
    [TestCase("@example.com", false)]
    [TestCase("joe@", false)]
    [TestCase(".joe@example.com", false)]
    [TestCase("jo..e@example.com", false)]
    [TestCase("joe@-example.com", false)]
    [TestCase("jo e@example.com", false)]
    [TestCase("\"joe\"@example.com", false)]
    public void Email(string s, bool ok) => Assert.That(Accepts("email", s), Is.EqualTo(ok));

    [TestCase("123e4567-e89b-12d3-a456-426614174000", true)]
    [TestCase("123E4567-E89B-12D3-A456-426614174000", true)]
    [TestCase("123e4567e89b12d3a456426614174000", false)]
    [TestCase("123e4567-e89b-12d3-a456-42661417400", false)]
    [TestCase("123e4567-e89b-12d3-a456-42661417400g", false)]
    [TestCase("{123e4567-e89b-12d3-a456-426614174000}", false)]
    public void Uuid(string s, bool ok) => Assert.That(Accepts("uuid", s), Is.EqualTo(ok));

    [TestCase("0.0.0.0", true)]
    [TestCase("255.255.255.255", true)]
    [TestCase("192.168.1.10", true)]
    [TestCase("256.1.1.1", false)]
    [TestCase("01.1.1.1", false)]
    [TestCase("1.1.1", false)]
    [TestCase("1.1.1.1.1", false)]
    [TestCase("1.1.1.", false)]
    [TestCase("a.b.c.d", false)]
    public void Ipv4(string s, bool ok) => Assert.That(Accepts("ipv4", s), Is.EqualTo(ok));

    [TestCase("::", true)]
    [TestCase("::1", true)]
    [TestCase("1::", true)]
    [TestCase("2001:db8::ff00:42:8329", true)]
    [TestCase("2001:0DB8:0000:0000:0000:FF00:0042:8329", true)]
    [TestCase("1:2:3:4:5:6:7::", true)]
    [TestCase("::2:3:4:5:6:7:8", true)]
    [TestCase("1::2:3:4:5:6:7", true)]
    [TestCase("::ffff:192.168.1.1", true)]
    [TestCase("1:2:3:4:5:6:1.2.3.4", true)]
    [TestCase("1:2:3:4:5:6:7:8", true)]
    [TestCase("1:2:3:4:5:6:7:8:9", false)]
    [TestCase("1:2:3:4::5:6:7:8", false)]
    [TestCase("1:2:3:4:5:6:7", false)]
    [TestCase("1::2::3", false)]
    [TestCase(":1:2:3:4:5:6:7", false)]
    [TestCase("12345::", false)]
    [TestCase("::ffff:256.1.1.1", false)]
    [TestCase("::ffff:01.1.1.1", false)]
    [TestCase("1:2:3:4:5:6:7:1.2.3.4", false)]
    [TestCase("fe80::1%eth0", false)]
    [TestCase("g::", false)]
    public void Ipv6(string s, bool ok) => Assert.That(Accepts("ipv6", s), Is.EqualTo(ok));

    [TestCase("example.com", true)]
    [TestCase("a", true)]
    [TestCase("xn--bcher-kva.example", true)]
    [TestCase("a-b.c-d", true)]
    [TestCase("1.2.3.4", true)]
    [TestCase("-a.com", false)]
    [TestCase("a-.com", false)]
    [TestCase("a..com", false)]
    [TestCase(".a.com", false)]
    [TestCase("a_b.com", false)]
    [TestCase("a b", false)]
    [TestCase("", false)]
    public void Hostname(string s, bool ok) => Assert.That(Accepts("hostname", s), Is.EqualTo(ok));

    [Test]
    public void HostnameLengthLimits()
    {
        string label63 = new('a', 63);
        Assert.That(Accepts("hostname", label63), Is.True);
        Assert.That(Accepts("hostname", label63 + "a"), Is.False, "labels are at most 63 characters");
        // 4 × 63 + 3 dots = 255 > 253; 3 × 63 + 3 dots + 61 = 253.
        string name253 = string.Join('.', label63, label63, label63, new string('b', 61));
        Assert.That(name253.Length, Is.EqualTo(253));
        Assert.That(Accepts("hostname", name253), Is.True);
        Assert.That(Accepts("hostname", name253 + "b"), Is.False, "names are at most 253 characters");
    }

    [TestCase("http://example.com", true)]
    [TestCase("https://user:pw@example.com:8080/a/b?x=1&y=2#frag", true)]
    [TestCase("mailto:joe@example.com", true)]
    [TestCase("urn:isbn:0451450523", true)]
    [TestCase("file:///etc/hosts", true)]
    [TestCase("http://[2001:db8::1]:80/", true)]
    [TestCase("http://[v1.fe80::a+en1]/", true)]
    [TestCase("http://192.168.0.1/", true)]
    [TestCase("a:", true)]
    [TestCase("http://example.com/%20%7e", true)]
    [TestCase("http://example.com/%zz", false)]
    [TestCase("http://exa mple.com", false)]
    [TestCase("//example.com", false)]
    [TestCase("1http://x", false)]
    [TestCase("http://[::1", false)]
    [TestCase("http://x/a\"b", false)]
    [TestCase("http://x/<>", false)]
    [TestCase("http://x/é", false)]
    [TestCase("example.com", false)]
    [TestCase("http://x#a#b", false)]
    public void Uri(string s, bool ok) => Assert.That(Accepts("uri", s), Is.EqualTo(ok));

    [Test]
    public void UnknownFormatsAreNull()
    {
        Assert.That(StringFormats.Regex(Builder, "color", CharEncoding.Utf8), Is.Null);
        Assert.That(StringFormats.Regex(Builder, "", CharEncoding.Utf8), Is.Null);
    }

    [Test]
    public void FormatsWorkInJsonStringContent()
    {
        Assert.That(Accepts("date-time", "2024-02-29T12:00:00Z", CharEncoding.JsonStringContent), Is.True);
        Assert.That(Accepts("uri", "http://x/?a=b", CharEncoding.JsonStringContent), Is.True);
        Assert.That(Accepts("email", "a/b@c", CharEncoding.JsonStringContent), Is.True);
    }

    [Test]
    public void EveryFormatIsLiveAndExtendable()
    {
        foreach (var f in new[] { "date", "time", "date-time", "email", "uuid", "ipv4", "ipv6", "hostname", "uri" })
        {
            int r = StringFormats.Regex(Builder, f, CharEncoding.Utf8)!.Value;
            Assert.That(Builder.IsDead(r), Is.False, f);
            Assert.That(Builder.CanExtend(r), Is.True, f);
        }
    }
}
