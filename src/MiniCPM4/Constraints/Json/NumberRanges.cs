using System.Globalization;
using System.Text;
using MiniCPM4.Constraints.Regex;

namespace MiniCPM4.Constraints.Json;

/// <summary>
/// An exact decimal number: sign, integer digits (no leading zeros; "0" for zero) and fraction digits (no trailing
/// zeros). Parsed from JSON number text without rounding, so bounds such as 0.1 or 1e-3 compare exactly.
/// </summary>
internal readonly record struct Dec(bool Negative, string Int, string Frac) : IComparable<Dec>
{
    public static readonly Dec Zero = new(false, "0", "");

    public bool IsZero => Int == "0" && Frac.Length == 0;
    public bool IsInteger => Frac.Length == 0;

    /// <summary>Parses JSON number text (exponents included). Null when it is not a number or its exponent is
    /// huge.</summary>
    public static Dec? Parse(string text, int maxExponent = 4000)
    {
        int i = 0;
        bool neg = false;
        if (i < text.Length && text[i] == '-') { neg = true; i++; }
        var digits = new StringBuilder();
        int pointPos = -1;
        for (; i < text.Length; i++)
        {
            char c = text[i];
            if (c >= '0' && c <= '9') digits.Append(c);
            else if (c == '.' && pointPos < 0) pointPos = digits.Length;
            else break;
        }
        if (digits.Length == 0) return null;
        if (pointPos < 0) pointPos = digits.Length;
        long exp = 0;
        if (i < text.Length && (text[i] == 'e' || text[i] == 'E'))
        {
            i++;
            if (!long.TryParse(text.AsSpan(i), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out exp))
                return null;
            i = text.Length;
        }
        if (i != text.Length || Math.Abs(exp) > maxExponent) return null;
        long point = pointPos + exp;
        string all = digits.ToString();
        string intPart, fracPart;
        if (point <= 0)
        {
            intPart = "";
            fracPart = new string('0', (int)-point) + all;
        }
        else if (point >= all.Length)
        {
            intPart = all + new string('0', (int)(point - all.Length));
            fracPart = "";
        }
        else
        {
            intPart = all[..(int)point];
            fracPart = all[(int)point..];
        }
        intPart = intPart.TrimStart('0');
        if (intPart.Length == 0) intPart = "0";
        fracPart = fracPart.TrimEnd('0');
        bool zero = intPart == "0" && fracPart.Length == 0;
        return new Dec(neg && !zero, intPart, fracPart);
    }

    public static Dec FromLong(long v) => Parse(v.ToString(CultureInfo.InvariantCulture))!.Value;

    public int CompareTo(Dec other)
    {
        if (Negative != other.Negative) return Negative ? -1 : 1;
        int mag = CompareMagnitude(this, other);
        return Negative ? -mag : mag;
    }

    private static int CompareMagnitude(Dec a, Dec b)
    {
        if (a.Int.Length != b.Int.Length) return a.Int.Length < b.Int.Length ? -1 : 1;
        int c = string.CompareOrdinal(a.Int, b.Int);
        if (c != 0) return Math.Sign(c);
        return Math.Sign(string.CompareOrdinal(a.Frac, b.Frac)); // no trailing zeros: ordinal order is numeric order
    }

    /// <summary>The smallest integer ≥ this.</summary>
    public Dec Ceiling()
    {
        if (IsInteger) return this;
        if (Negative) return Int == "0" ? Zero : this with { Frac = "" };
        return new Dec(false, AddOne(Int), "");
    }

    /// <summary>The largest integer ≤ this.</summary>
    public Dec Floor()
    {
        if (IsInteger) return this;
        if (!Negative) return this with { Frac = "" };
        return new Dec(true, AddOne(Int), "");
    }

    private static string AddOne(string digits)
    {
        var chars = digits.ToCharArray();
        for (int i = chars.Length - 1; i >= 0; i--)
        {
            if (chars[i] != '9')
            {
                chars[i]++;
                return new string(chars);
            }
            chars[i] = '0';
        }
        return "1" + new string(chars);
    }

    public override string ToString() => (Negative ? "-" : "") + Int + (Frac.Length > 0 ? "." + Frac : "");
}

/// <summary>
/// Regular expressions over JSON number text with exact numeric bounds. Bounded numbers are written in decimal
/// notation only (no exponent): "x ≤ c" is a digit-by-digit comparison, and the other bounds come from it with
/// intersection and complement. Unbounded numbers accept the whole JSON number syntax.
/// </summary>
internal sealed class NumberRanges(RegexBuilder rb)
{
    private readonly RegexBuilder _rb = rb;
    private int _digit = -1, _nonZero = -1;

    private int Digit => _digit >= 0 ? _digit : _digit = _rb.ByteRange((byte)'0', (byte)'9');
    private int NonZero => _nonZero >= 0 ? _nonZero : _nonZero = _rb.ByteRange((byte)'1', (byte)'9');
    private int DigitRange(char lo, char hi) => _rb.ByteRange((byte)lo, (byte)hi);
    private int Lit(string s) => _rb.Literal(s);

    /// <summary>Unsigned integer part: 0 | [1-9][0-9]*.</summary>
    private int UInt => _rb.Or(Lit("0"), _rb.Concat(NonZero, _rb.Star(Digit)));
    /// <summary>An optional fraction: (\.[0-9]+)?.</summary>
    private int OptFraction => _rb.Optional(_rb.Concat(Lit("."), _rb.Plus(Digit)));
    /// <summary>An unsigned decimal (no exponent).</summary>
    private int UDecimal => _rb.Concat(UInt, OptFraction);

    /// <summary>Any JSON number (exponents included).</summary>
    public int AnyNumber()
    {
        var exp =
            _rb.Optional(
            _rb.Concat(_rb.Or(Lit("e"), Lit("E")), _rb.Optional(_rb.Or(Lit("+"), Lit("-"))), _rb.Plus(Digit)));
        return _rb.Concat(_rb.Optional(Lit("-")), UInt, OptFraction, exp);
    }

    /// <summary>Numbers in decimal notation that are not integers (a non-zero fraction digit).</summary>
    public int NonIntegral() =>
        _rb.Concat(_rb.Optional(Lit("-")), UInt, Lit("."), _rb.Star(Digit), NonZero, _rb.Star(Digit));

    /// <summary>Any number in decimal notation (no exponent).</summary>
    public int AnyDecimal() => _rb.Concat(_rb.Optional(Lit("-")), UDecimal);

    /// <summary>An integer: -?(0|[1-9][0-9]*), and with <paramref name="pointZero"/> also followed by \.0+ (1.0 is an
    /// integer from draft 6 on).</summary>
    public int AnyInteger(bool pointZero)
    {
        var i = _rb.Concat(_rb.Optional(Lit("-")), UInt);
        return pointZero ? _rb.Concat(i, _rb.Optional(_rb.Concat(Lit("."), _rb.Plus(Lit("0"))))) : i;
    }

    /// <summary>
    /// Numbers (or integers) within the bounds (null: none). Bounded results are in decimal notation only.
    /// </summary>
    public int Range(Dec? lo, bool loExclusive, Dec? hi, bool hiExclusive, bool integer, bool pointZero,
        bool decimalOnly = false)
    {
        if (lo is null && hi is null) return integer ? AnyInteger(pointZero) : decimalOnly ? AnyDecimal() : AnyNumber();
        int result = integer ? AnyInteger(pointZero) : AnyDecimal();
        if (lo is Dec l)
            result = _rb.And(result, loExclusive ? Greater(l) : GreaterOrEqual(l));
        if (hi is Dec h)
            result = _rb.And(result, hiExclusive ? Less(h) : LessOrEqual(h));
        return result;
    }

    /// <summary>Every decimal-notation spelling of exactly <paramref name="c"/> (trailing fraction zeros,
    /// -0).</summary>
    public int Equal(Dec c, bool allowFractionZeros = true)
    {
        int mag = MagnitudeEqual(c, allowFractionZeros);
        if (c.IsZero) return _rb.Concat(_rb.Optional(Lit("-")), mag);
        return c.Negative ? _rb.Concat(Lit("-"), mag) : mag;
    }

    public int LessOrEqual(Dec c)
    {
        if (!c.Negative) return _rb.Or(_rb.Concat(Lit("-"), UDecimal), MagnitudeLessOrEqual(c));
        var abs = c with { Negative = false };
        return _rb.Concat(Lit("-"), _rb.And(UDecimal, _rb.Not(MagnitudeLess(abs))));
    }

    public int Less(Dec c) => _rb.And(LessOrEqual(c), _rb.Not(Equal(c)));
    public int Greater(Dec c) => _rb.And(AnyDecimal(), _rb.Not(LessOrEqual(c)));
    public int GreaterOrEqual(Dec c) => _rb.And(AnyDecimal(), _rb.Not(Less(c)));

    private int MagnitudeEqual(Dec c, bool allowFractionZeros)
    {
        int intPart = Lit(c.Int);
        if (!allowFractionZeros)
            return c.Frac.Length == 0 ? intPart : _rb.Concat(intPart, Lit("." + c.Frac));
        if (c.Frac.Length == 0) return _rb.Concat(intPart, _rb.Optional(_rb.Concat(Lit("."), _rb.Plus(Lit("0")))));
        return _rb.Concat(intPart, Lit("." + c.Frac), _rb.Star(Lit("0")));
    }

    private int MagnitudeLess(Dec c) => _rb.And(MagnitudeLessOrEqual(c), _rb.Not(MagnitudeEqual(c, true)));

    /// <summary>Unsigned decimals ≤ |c|.</summary>
    private int MagnitudeLessOrEqual(Dec c)
    {
        var smallerInt = _rb.Concat(UIntLess(c.Int), OptFraction);
        var sameInt = _rb.Concat(Lit(c.Int), FractionLessOrEqual(c.Frac));
        return _rb.Or(smallerInt, sameInt);
    }

    /// <summary>Canonical unsigned integers (no leading zeros) less than <paramref name="n"/>.</summary>
    private int UIntLess(string n)
    {
        if (n == "0") return RegexBuilder.Nothing;
        var alts = new List<int> { Lit("0") };
        // Fewer digits: [1-9][0-9]{0,len-2}.
        if (n.Length >= 2) alts.Add(_rb.Concat(NonZero, _rb.Repeat(Digit, 0, n.Length - 2)));
        // Same length: a common prefix, a smaller digit, then anything.
        for (int j = 0; j < n.Length; j++)
        {
            char lowest = j == 0 ? '1' : '0';
            if (n[j] <= lowest) continue;
            alts.Add(
                _rb.Concat(Lit(n[..j]), DigitRange(lowest, (char)(n[j] - 1)),
                _rb.Repeat(Digit, n.Length - j - 1, n.Length - j - 1)));
        }
        // n = 1..9 with a single digit: the loop covers [1, n-1]; "0" is above.
        return _rb.Or(alts.ToArray());
    }

    /// <summary>An optional fraction (\.[0-9]+)? whose value 0.G is ≤ 0.F (F without trailing zeros).</summary>
    private int FractionLessOrEqual(string f)
    {
        var point = Lit(".");
        if (f.Length == 0) return _rb.Optional(_rb.Concat(point, _rb.Plus(Lit("0"))));
        var alts = new List<int>();
        for (int j = 0; j < f.Length; j++)
        {
            if (f[j] == '0') continue;
            alts.Add(_rb.Concat(Lit(f[..j]), DigitRange('0', (char)(f[j] - 1)), _rb.Star(Digit)));
        }
        for (int m = 1; m < f.Length; m++) alts.Add(Lit(f[..m]));
        alts.Add(_rb.Concat(Lit(f), _rb.Star(Lit("0"))));
        return _rb.Optional(_rb.Concat(point, _rb.Or(alts.ToArray())));
    }
}
