using System.Globalization;

namespace MiniCPM4;

/// <summary>
/// Parses a memory limit as people write it: a size with a unit ("8GiB", "512 MB", "1.5G", "4096B") or a share of
/// the free memory ("90%"). Decimal units (KB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB, and
/// the single letters K, M, G, T) powers of 1024. A bare number is refused: it would be ambiguous.
/// </summary>
internal static class MemoryLimit
{
    private static readonly (string Suffix, long Scale)[] Units =
    [
        ("KIB", 1L << 10), ("MIB", 1L << 20), ("GIB", 1L << 30), ("TIB", 1L << 40),
        ("KB", 1_000L), ("MB", 1_000_000L), ("GB", 1_000_000_000L), ("TB", 1_000_000_000_000L),
        ("K", 1L << 10), ("M", 1L << 20), ("G", 1L << 30), ("T", 1L << 40),
        ("B", 1L),
    ];

    /// <summary>Bytes (and Fraction 0) for a size, or Fraction in (0, 1] (and Bytes 0) for a percentage.</summary>
    /// <exception cref="FormatException">The text is neither, or is zero, negative or above 100%.</exception>
    public static (long Bytes, double Fraction) Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim().Replace(" ", "", StringComparison.Ordinal).ToUpperInvariant();
        if (t.EndsWith('%'))
        {
            if (!TryNumber(t[..^1], out double percent) || !(percent > 0 && percent <= 100))
                throw new FormatException($"'{text}': a percentage must be in (0%, 100%]");
            return (0, percent / 100);
        }
        foreach ((string suffix, long scale) in Units)
        {
            if (!t.EndsWith(suffix, StringComparison.Ordinal))
                continue;
            if (!TryNumber(t[..^suffix.Length], out double value) || !(value > 0))
                throw new FormatException($"'{text}': the size must be a positive number before the unit");
            double bytes = Math.Floor(value * scale);
            if (bytes < 1 || bytes > long.MaxValue / 2)
                throw new FormatException($"'{text}' is out of range");
            return ((long)bytes, 0);
        }
        throw new FormatException(
            $"'{text}': give a size with a unit (8GiB, 512MB) or a share of the free memory (90%)");
    }

    private static bool TryNumber(string s, out double value) =>
        double.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out value)
            && double.IsFinite(value);
}
