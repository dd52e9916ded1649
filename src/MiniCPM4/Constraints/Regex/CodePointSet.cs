using System.Globalization;
namespace MiniCPM4.Constraints.Regex;

/// <summary>An immutable set of Unicode code points (0..U+10FFFF, surrogates allowed as members; they are dropped
/// when the set is lowered to bytes) as sorted, disjoint, non-adjacent inclusive ranges.</summary>
internal sealed class CodePointSet
{
    public const int MaxCodePoint = 0x10FFFF;

    /// <summary>lo0, hi0, lo1, hi1, ... sorted, disjoint and non-adjacent.</summary>
    private readonly int[] _bounds;

    private CodePointSet(int[] bounds) => _bounds = bounds;

    public static readonly CodePointSet None = new([]);
    public static readonly CodePointSet All = new([0, MaxCodePoint]);

    public int RangeCount => _bounds.Length / 2;
    public int Lo(int i) => _bounds[2 * i];
    public int Hi(int i) => _bounds[2 * i + 1];
    public bool IsEmpty => _bounds.Length == 0;

    public static CodePointSet Single(int cp) => new([cp, cp]);

    public static CodePointSet Range(int lo, int hi) => lo > hi ? None : new([lo, hi]);

    /// <summary>The set of the given ranges (in any order, overlapping or not).</summary>
    public static CodePointSet FromRanges(List<(int Lo, int Hi)> ranges)
    {
        ranges.Sort((x, y) => x.Lo.CompareTo(y.Lo));
        var bounds = new List<int>(ranges.Count * 2);
        foreach (var (lo, hi) in ranges)
        {
            if (lo > hi) continue;
            if (bounds.Count > 0 && lo <= bounds[^1] + 1)
            {
                if (hi > bounds[^1]) bounds[^1] = hi;
            }
            else
            {
                bounds.Add(lo);
                bounds.Add(hi);
            }
        }
        return new CodePointSet(bounds.ToArray());
    }

    public bool Contains(int cp)
    {
        int lo = 0, hi = RangeCount - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            if (cp < Lo(mid)) hi = mid - 1;
            else if (cp > Hi(mid)) lo = mid + 1;
            else return true;
        }
        return false;
    }

    public CodePointSet Union(CodePointSet other)
    {
        if (other.IsEmpty) return this;
        if (IsEmpty) return other;
        var list = new List<(int, int)>(RangeCount + other.RangeCount);
        for (int i = 0; i < RangeCount; i++) list.Add((Lo(i), Hi(i)));
        for (int i = 0; i < other.RangeCount; i++) list.Add((other.Lo(i), other.Hi(i)));
        return FromRanges(list);
    }

    /// <summary>Every code point 0..U+10FFFF not in the set.</summary>
    public CodePointSet Complement()
    {
        var bounds = new List<int>(_bounds.Length + 2);
        int next = 0;
        for (int i = 0; i < RangeCount; i++)
        {
            if (Lo(i) > next)
            {
                bounds.Add(next);
                bounds.Add(Lo(i) - 1);
            }
            next = Hi(i) + 1;
        }
        if (next <= MaxCodePoint)
        {
            bounds.Add(next);
            bounds.Add(MaxCodePoint);
        }
        return new CodePointSet(bounds.ToArray());
    }

    public CodePointSet Intersect(CodePointSet other) => Complement().Union(other.Complement()).Complement();

    public CodePointSet Subtract(CodePointSet other) => Intersect(other.Complement());

    public override string ToString()
    {
        var sb = new System.Text.StringBuilder("[");
        for (int i = 0; i < RangeCount; i++)
        {
            if (i > 0) sb.Append(' ');
            sb.Append(Lo(i).ToString("X", CultureInfo.InvariantCulture));
            if (Hi(i) != Lo(i)) sb.Append('-').Append(Hi(i).ToString("X", CultureInfo.InvariantCulture));
        }
        return sb.Append(']').ToString();
    }
}
