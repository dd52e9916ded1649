using System.Globalization;
using System.Text;
using MiniCPM4.Constraints.Json;
using MiniCPM4.Constraints.Regex;
using NUnit.Framework;

namespace MiniCPM4.Constraints.Tests.Json;

public class NumberRangesTests
{
    private static bool Match(RegexBuilder rb, int r, string s) => rb.Matches(r, Encoding.ASCII.GetBytes(s));

    private static string Str(int v) => v.ToString(CultureInfo.InvariantCulture);

    [Test]
    public void IntegerRangesAreExactOnSmallIntervals()
    {
        var rb = new RegexBuilder();
        var numbers = new NumberRanges(rb);
        int[] bounds = [-120, -101, -100, -99, -11, -10, -9, -1, 0, 1, 7, 9, 10, 19, 20, 99, 100, 101, 110];
        foreach (int lo in bounds)
            foreach (int hi in bounds)
                foreach (bool loEx in new[] { false, true })
                    foreach (bool hiEx in new[] { false, true })
                    {
                        int r = numbers.Range(Dec.FromLong(lo), loEx, Dec.FromLong(hi), hiEx, integer: true,
                            pointZero: false);
                        for (int v = -130; v <= 130; v++)
                        {
                            bool inside = (loEx ? v > lo : v >= lo) && (hiEx ? v < hi : v <= hi);
                            Assert.That(Match(rb, r, Str(v)), Is.EqualTo(inside),
                                $"{v} in {(loEx ? "(" : "[")}{lo}, {hi}{(hiEx ? ")" : "]")}");
                        }
                        Assert.That(Match(rb, r, "01"), Is.False);
                        Assert.That(Match(rb, r, "1.5"), Is.False);
                    }
    }

    [Test]
    public void OneSidedIntegerBounds()
    {
        var rb = new RegexBuilder();
        var numbers = new NumberRanges(rb);
        foreach (int c in new[] { -100, -37, -1, 0, 1, 5, 10, 42, 999 })
        {
            int ge = numbers.Range(Dec.FromLong(c), false, null, false, integer: true, pointZero: true);
            int lt = numbers.Range(null, false, Dec.FromLong(c), true, integer: true, pointZero: true);
            for (int v = -1100; v <= 1100; v += 7)
            {
                Assert.That(Match(rb, ge, Str(v)), Is.EqualTo(v >= c), $"{v} >= {c}");
                Assert.That(Match(rb, lt, Str(v)), Is.EqualTo(v < c), $"{v} < {c}");
                Assert.That(Match(rb, ge, Str(v) + ".0"), Is.EqualTo(v >= c), $"{v}.0 >= {c}");
            }
            Assert.That(Match(rb, ge, "123456789012345678901234567890"), Is.True);
            Assert.That(Match(rb, lt, "-123456789012345678901234567890"), Is.True);
        }
    }

    [Test]
    public void DecimalRangesAreExact()
    {
        var rb = new RegexBuilder();
        var numbers = new NumberRanges(rb);
        string[] bounds = ["-2.5", "-1", "-0.05", "0", "0.1", "0.25", "1", "1.5", "10", "12.75", "1e1", "2.5E-1"];
        var values = new List<decimal>();
        for (int i = -300; i <= 1400; i += 1) values.Add(i / 100m);
        foreach (var lo in bounds)
            foreach (var hi in bounds)
            {
                var l = Dec.Parse(lo)!.Value;
                var h = Dec.Parse(hi)!.Value;
                decimal ld = decimal.Parse(lo, NumberStyles.Float, CultureInfo.InvariantCulture);
                decimal hd = decimal.Parse(hi, NumberStyles.Float, CultureInfo.InvariantCulture);
                int incl = numbers.Range(l, false, h, false, integer: false, pointZero: false);
                int excl = numbers.Range(l, true, h, true, integer: false, pointZero: false);
                foreach (var v in values)
                {
                    foreach (
                        var text in new[] { v.ToString(CultureInfo.InvariantCulture),
                        v.ToString("0.000", CultureInfo.InvariantCulture) })
                    {
                        Assert.That(Match(rb, incl, text), Is.EqualTo(v >= ld && v <= hd), $"{text} in [{lo}, {hi}]");
                        Assert.That(Match(rb, excl, text), Is.EqualTo(v > ld && v < hd), $"{text} in ({lo}, {hi})");
                    }
                }
                Assert.That(Match(rb, incl, "1e0"), Is.False, "bounded numbers are decimal notation only");
            }
    }

    [Test]
    public void NegativeZeroAndEquality()
    {
        var rb = new RegexBuilder();
        var numbers = new NumberRanges(rb);
        int zero = numbers.Equal(Dec.Zero);
        foreach (var s in new[] { "0", "-0", "0.0", "-0.000" }) Assert.That(Match(rb, zero, s), Is.True, s);
        foreach (var s in new[] { "00", "0.", "1", "-0.01" }) Assert.That(Match(rb, zero, s), Is.False, s);
        int gt0 = numbers.Range(Dec.Zero, true, null, false, integer: false, pointZero: false);
        Assert.That(Match(rb, gt0, "-0"), Is.False);
        Assert.That(Match(rb, gt0, "0.0001"), Is.True);
        int x = numbers.Equal(Dec.Parse("1.50")!.Value);
        Assert.That(Match(rb, x, "1.5") && Match(rb, x, "1.500") && !Match(rb, x, "1.05"), Is.True);
    }

    [Test]
    public void DecParsesExactly()
    {
        Assert.That(Dec.Parse("1.5e3")!.Value.ToString(), Is.EqualTo("1500"));
        Assert.That(Dec.Parse("-12.5E-3")!.Value.ToString(), Is.EqualTo("-0.0125"));
        Assert.That(Dec.Parse("-0.0")!.Value, Is.EqualTo(Dec.Zero));
        Assert.That(Dec.Parse("0.10")!.Value.CompareTo(Dec.Parse("0.1")!.Value), Is.Zero);
        Assert.That(Dec.Parse("-2")!.Value.CompareTo(Dec.Parse("-10")!.Value), Is.Positive);
        Assert.That(Dec.Parse("-1.5")!.Value.Floor().ToString(), Is.EqualTo("-2"));
        Assert.That(Dec.Parse("1.5")!.Value.Ceiling().ToString(), Is.EqualTo("2"));
    }
}
