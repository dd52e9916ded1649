using System.Globalization;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MiniCPM4.Constraints.Regex;

/// <summary>The kinds of terms of a <see cref="RegexBuilder"/>.</summary>
internal enum TermKind : byte
{
    Nothing,
    Empty,
    /// <summary>One byte of a 256-bit set (W0..W3).</summary>
    ByteSet,
    /// <summary>A·B, right-nested: A is never a Concat.</summary>
    Concat,
    /// <summary>Union of Ops (sorted, distinct, flat, at most one ByteSet, at least two).</summary>
    Or,
    /// <summary>Intersection of Ops (sorted, distinct, flat, at most one ByteSet, at least two).</summary>
    And,
    /// <summary>Complement of A.</summary>
    Not,
    /// <summary>A*.</summary>
    Star,
    /// <summary>A{Min,Max}, Max ≥ 2 finite.</summary>
    Repeat,
}

// Term storage, hash-consing, the smart constructors, nullability, derivatives, byte-class partitions and emptiness.
public sealed partial class RegexBuilder
{
    private struct Node
    {
        public TermKind Kind;
        public int A, B, Min, Max;
        public ulong W0, W1, W2, W3;
        public int[]? Ops;
        public int Hash;

        public void ComputeHash()
        {
            var h = new HashCode();
            h.Add((int)Kind);
            h.Add(A);
            h.Add(B);
            h.Add(Min);
            h.Add(Max);
            h.Add(W0);
            h.Add(W1);
            h.Add(W2);
            h.Add(W3);
            if (Ops is not null)
                foreach (int o in Ops) h.Add(o);
            Hash = h.ToHashCode();
        }
    }

    private sealed class NodeComparer : IEqualityComparer<Node>
    {
        public static readonly NodeComparer Instance = new();
        public bool Equals(Node x, Node y)
        {
            if (x.Hash != y.Hash || x.Kind != y.Kind || x.A != y.A || x.B != y.B || x.Min != y.Min || x.Max != y.Max
                || x.W0 != y.W0 || x.W1 != y.W1 || x.W2 != y.W2 || x.W3 != y.W3) return false;
            if (x.Ops is null || y.Ops is null) return x.Ops is null && y.Ops is null;
            return x.Ops.AsSpan().SequenceEqual(y.Ops);
        }
        public int GetHashCode(Node n) => n.Hash;
    }

    /// <summary>A partition of the 256 bytes into classes whose bytes give a term the same derivative.</summary>
    internal sealed class Partition(byte[] map, int count, byte[] reps)
    {
        /// <summary>Byte → class index (classes numbered by first occurrence, byte 0 in class 0).</summary>
        public readonly byte[] Map = map;
        public readonly int Count = count;
        /// <summary>The smallest byte of each class.</summary>
        public readonly byte[] Reps = reps;
    }

    private sealed class ByteArrayComparer : IEqualityComparer<byte[]>
    {
        public static readonly ByteArrayComparer Instance = new();
        public bool Equals(byte[]? x, byte[]? y) => x.AsSpan().SequenceEqual(y);
        public int GetHashCode(byte[] a)
        {
            var h = new HashCode();
            h.AddBytes(a);
            return h.ToHashCode();
        }
    }

    private Node[] _nodes = new Node[256];
    private bool[] _nullable = new bool[256];
    private bool[] _hasBool = new bool[256];
    private sbyte[] _dead = new sbyte[256];
    private sbyte[] _extend = new sbyte[256];
    private byte[]?[] _classMap = new byte[256][];
    private int[]?[] _deriv = new int[256][];
    private Partition?[] _part = new Partition?[256];
    private int _count;
    private readonly Dictionary<Node, int> _intern = new(NodeComparer.Instance);
    private readonly Dictionary<byte[], Partition> _partitions = new(ByteArrayComparer.Instance);
    private int[]? _pairScratch;
    private readonly int[] _singleBytes = new int[256];
    private readonly Partition _trivial;
    private readonly int _top;

    public RegexBuilder()
    {
        var nothing = new Node { Kind = TermKind.Nothing };
        if (Intern(ref nothing) != Nothing) throw new InvalidOperationException();
        var empty = new Node { Kind = TermKind.Empty };
        if (Intern(ref empty) != Empty) throw new InvalidOperationException();
        var zeros = new byte[256];
        _trivial = new Partition(zeros, 1, [0]);
        _partitions.Add(zeros, _trivial);
        _top = MakeNot(Nothing);
        _singleBytes.AsSpan().Fill(-1);
    }

    /// <summary>Every byte string (= Not(∅)).</summary>
    internal int Top => _top;

    internal TermKind KindOf(int r) => _nodes[r].Kind;

    private int Intern(ref Node n)
    {
        n.ComputeHash();
        if (_intern.TryGetValue(n, out int id)) return id;
        id = _count;
        if (id == _nodes.Length) Grow();
        _nodes[id] = n;
        switch (n.Kind)
        {
            case TermKind.Nothing:
            case TermKind.ByteSet:
                break;
            case TermKind.Empty:
            case TermKind.Star:
                _nullable[id] = true;
                break;
            case TermKind.Concat:
                _nullable[id] = _nullable[n.A] && _nullable[n.B];
                _hasBool[id] = _hasBool[n.A] || _hasBool[n.B];
                break;
            case TermKind.Or:
            case TermKind.And:
            {
                bool isOr = n.Kind == TermKind.Or;
                bool nullable = !isOr, hasBool = !isOr;
                foreach (int o in n.Ops!)
                {
                    if (isOr) nullable |= _nullable[o];
                    else nullable &= _nullable[o];
                    hasBool |= _hasBool[o];
                }
                _nullable[id] = nullable;
                _hasBool[id] = hasBool;
                break;
            }
            case TermKind.Not:
                _nullable[id] = !_nullable[n.A];
                _hasBool[id] = true;
                break;
            case TermKind.Repeat:
                _nullable[id] = n.Min == 0 || _nullable[n.A];
                _hasBool[id] = _hasBool[n.A];
                break;
        }
        if (n.Kind == TermKind.Star) _hasBool[id] = _hasBool[n.A];
        _count++;
        _intern.Add(n, id);
        return id;
    }

    private void Grow()
    {
        int size = _nodes.Length * 2;
        Array.Resize(ref _nodes, size);
        Array.Resize(ref _nullable, size);
        Array.Resize(ref _hasBool, size);
        Array.Resize(ref _dead, size);
        Array.Resize(ref _extend, size);
        Array.Resize(ref _classMap, size);
        Array.Resize(ref _deriv, size);
        Array.Resize(ref _part, size);
    }

    // ---------------------------------------------------------------- byte sets

    private static ulong RangeWord(int lo, int hi, int wordStart)
    {
        int a = Math.Max(lo, wordStart), z = Math.Min(hi, wordStart + 63);
        if (a > z) return 0;
        int n = z - a + 1;
        ulong bits = n == 64 ? ulong.MaxValue : ((1UL << n) - 1);
        return bits << (a - wordStart);
    }

    internal int MakeByteSet(ulong w0, ulong w1, ulong w2, ulong w3)
    {
        if ((w0 | w1 | w2 | w3) == 0) return Nothing;
        var n = new Node { Kind = TermKind.ByteSet, W0 = w0, W1 = w1, W2 = w2, W3 = w3 };
        return Intern(ref n);
    }

    private int SingleByte(byte b)
    {
        int r = _singleBytes[b];
        if (r < 0) _singleBytes[b] = r = ByteRange(b, b);
        return r;
    }

    private static bool SetContains(in Node n, int b) => (b >> 6) switch
    {
        0 => (n.W0 >> b & 1) != 0,
        1 => (n.W1 >> (b - 64) & 1) != 0,
        2 => (n.W2 >> (b - 128) & 1) != 0,
        _ => (n.W3 >> (b - 192) & 1) != 0,
    };

    // ---------------------------------------------------------------- smart constructors

    private int MakeConcat(int a, int b)
    {
        if (a == Nothing || b == Nothing) return Nothing;
        if (a == Empty) return b;
        if (b == Empty) return a;
        if (_nodes[a].Kind != TermKind.Concat) return ConcatRaw(a, b);
        // Re-associate to the right: (x·y)·b = x·(y·b), iteratively along a's spine.
        var spine = new List<int>();
        int t = a;
        while (_nodes[t].Kind == TermKind.Concat)
        {
            spine.Add(_nodes[t].A);
            t = _nodes[t].B;
        }
        int r = ConcatRaw(t, b);
        for (int i = spine.Count - 1; i >= 0; i--) r = ConcatRaw(spine[i], r);
        return r;
    }

    private int ConcatRaw(int a, int b)
    {
        // Callers guarantee a is not Concat and neither is ∅ or ε.
        var n = new Node { Kind = TermKind.Concat, A = a, B = b };
        return Intern(ref n);
    }

    private int MakeOr(ReadOnlySpan<int> items)
    {
        var list = new List<int>(items.Length + 2);
        ulong w0 = 0, w1 = 0, w2 = 0, w3 = 0;
        bool hasBytes = false;
        foreach (int it in items)
        {
            if (it == Nothing) continue;
            if (it == _top) return _top;
            ref readonly Node n = ref _nodes[it];
            if (n.Kind == TermKind.Or)
            {
                foreach (int o in n.Ops!)
                {
                    ref readonly Node m = ref _nodes[o];
                    if (m.Kind == TermKind.ByteSet)
                    {
                        w0 |= m.W0; w1 |= m.W1; w2 |= m.W2; w3 |= m.W3;
                        hasBytes = true;
                    }
                    else list.Add(o);
                }
            }
            else if (n.Kind == TermKind.ByteSet)
            {
                w0 |= n.W0; w1 |= n.W1; w2 |= n.W2; w3 |= n.W3;
                hasBytes = true;
            }
            else list.Add(it);
        }
        if (hasBytes) list.Add(MakeByteSet(w0, w1, w2, w3));
        if (list.Count == 0) return Nothing;
        if (list.Count == 1) return list[0];
        int count = SortDedup(list);
        if (count > 1 && list[0] == Empty)
        {
            // ε is redundant next to another nullable operand.
            for (int i = 1; i < count; i++)
                if (_nullable[list[i]])
                {
                    list.RemoveAt(0);
                    count--;
                    break;
                }
        }
        if (count == 1) return list[0];
        for (int i = 0; i < count; i++)
        {
            ref readonly Node m = ref _nodes[list[i]];
            if (m.Kind == TermKind.Not && list.BinarySearch(0, count, m.A, null) >= 0) return _top; // x | ~x
        }
        var node = new Node { Kind = TermKind.Or, Ops = list.GetRange(0, count).ToArray() };
        return Intern(ref node);
    }

    private int MakeAnd(ReadOnlySpan<int> items)
    {
        var list = new List<int>(items.Length + 2);
        ulong w0 = ulong.MaxValue, w1 = ulong.MaxValue, w2 = ulong.MaxValue, w3 = ulong.MaxValue;
        bool hasBytes = false;
        foreach (int it in items)
        {
            if (it == Nothing) return Nothing;
            if (it == _top) continue;
            ref readonly Node n = ref _nodes[it];
            if (n.Kind == TermKind.And)
            {
                foreach (int o in n.Ops!)
                {
                    ref readonly Node m = ref _nodes[o];
                    if (m.Kind == TermKind.ByteSet)
                    {
                        w0 &= m.W0; w1 &= m.W1; w2 &= m.W2; w3 &= m.W3;
                        hasBytes = true;
                    }
                    else list.Add(o);
                }
            }
            else if (n.Kind == TermKind.ByteSet)
            {
                w0 &= n.W0; w1 &= n.W1; w2 &= n.W2; w3 &= n.W3;
                hasBytes = true;
            }
            else list.Add(it);
        }
        if (hasBytes)
        {
            int bs = MakeByteSet(w0, w1, w2, w3);
            if (bs == Nothing) return Nothing;
            list.Add(bs);
        }
        if (list.Count == 0) return _top;
        if (list.Count == 1) return list[0];
        int count = SortDedup(list);
        if (count == 1) return list[0];
        if (list[0] == Empty)
        {
            for (int i = 1; i < count; i++)
                if (!_nullable[list[i]]) return Nothing;
            return Empty;
        }
        for (int i = 0; i < count; i++)
        {
            ref readonly Node m = ref _nodes[list[i]];
            if (m.Kind == TermKind.Not && list.BinarySearch(0, count, m.A, null) >= 0) return Nothing; // x & ~x
        }
        var node = new Node { Kind = TermKind.And, Ops = list.GetRange(0, count).ToArray() };
        return Intern(ref node);
    }

    private static int SortDedup(List<int> list)
    {
        list.Sort();
        int w = 1;
        for (int i = 1; i < list.Count; i++)
            if (list[i] != list[w - 1]) list[w++] = list[i];
        if (w < list.Count) list.RemoveRange(w, list.Count - w);
        return w;
    }

    private int MakeNot(int a)
    {
        if (_nodes[a].Kind == TermKind.Not) return _nodes[a].A;
        var n = new Node { Kind = TermKind.Not, A = a };
        return Intern(ref n);
    }

    private int MakeStar(int a)
    {
        if (a == Nothing || a == Empty) return Empty;
        if (a == _top) return _top;
        ref readonly Node n = ref _nodes[a];
        if (n.Kind == TermKind.Star) return a;
        if (n.Kind == TermKind.Or && n.Ops![0] == Empty)
        {
            // (ε|x)* = x*
            int rest = MakeOr(n.Ops.AsSpan(1));
            return MakeStar(rest);
        }
        var node = new Node { Kind = TermKind.Star, A = a };
        return Intern(ref node);
    }

    private int MakeRepeat(int a, int min, int max)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(min);
        ArgumentOutOfRangeException.ThrowIfLessThan(max, -1);
        if (max == -1)
            return min == 0 ? MakeStar(a) : MakeConcat(MakeRepeat(a, min, min), MakeStar(a));
        if (max < min) return Nothing;
        if (max == 0) return Empty;
        if (a == Nothing) return min == 0 ? Empty : Nothing;
        if (a == Empty) return Empty;
        if (_nodes[a].Kind == TermKind.Star || a == _top) return a;
        if (max == 1) return min == 0 ? MakeOr([Empty, a]) : a;
        var n = new Node { Kind = TermKind.Repeat, A = a, Min = min, Max = max };
        return Intern(ref n);
    }

    // ---------------------------------------------------------------- partitions and derivatives

    internal Partition EnsurePartition(int r)
    {
        Partition? p = _part[r];
        if (p is not null) return p;
        Node n = _nodes[r];
        switch (n.Kind)
        {
            case TermKind.Nothing:
            case TermKind.Empty:
                p = _trivial;
                break;
            case TermKind.ByteSet:
            {
                bool first = SetContains(n, 0);
                var map = new byte[256];
                bool mixed = false;
                for (int b = 1; b < 256; b++)
                    if (SetContains(n, b) != first) { map[b] = 1; mixed = true; }
                p = mixed ? InternPartition(map, 2) : _trivial;
                break;
            }
            case TermKind.Concat:
                p = EnsurePartition(n.A);
                if (_nullable[n.A]) p = Refine(p, EnsurePartition(n.B));
                break;
            case TermKind.Or:
            case TermKind.And:
                p = _trivial;
                foreach (int o in n.Ops!) p = Refine(p, EnsurePartition(o));
                break;
            default: // Not, Star, Repeat
                p = EnsurePartition(n.A);
                break;
        }
        _part[r] = p;
        _classMap[r] = p.Map;
        return p;
    }

    private Partition InternPartition(byte[] map, int count)
    {
        if (_partitions.TryGetValue(map, out var p)) return p;
        var reps = new byte[count];
        var seen = new bool[count];
        for (int b = 0; b < 256; b++)
            if (!seen[map[b]]) { seen[map[b]] = true; reps[map[b]] = (byte)b; }
        p = new Partition(map, count, reps);
        _partitions.Add(map, p);
        return p;
    }

    private Partition Refine(Partition p, Partition q)
    {
        if (ReferenceEquals(p, q) || q.Count == 1) return p;
        if (p.Count == 1) return q;
        int[] scratch = _pairScratch ??= NewScratch();
        var map = new byte[256];
        int n = 0, qc = q.Count;
        for (int b = 0; b < 256; b++)
        {
            int key = p.Map[b] * qc + q.Map[b];
            int c = scratch[key];
            if (c < 0) scratch[key] = c = n++;
            map[b] = (byte)c;
        }
        for (int b = 0; b < 256; b++) scratch[p.Map[b] * qc + q.Map[b]] = -1;
        if (n == p.Count) return p;
        if (n == q.Count) return q;
        return InternPartition(map, n);
    }

    private static int[] NewScratch()
    {
        var a = new int[65536];
        a.AsSpan().Fill(-1);
        return a;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int DerivativeSlow(int r, byte b)
    {
        Partition p = EnsurePartition(r);
        int[]? d = _deriv[r];
        if (d is null)
        {
            d = new int[p.Count];
            d.AsSpan().Fill(-1);
            _deriv[r] = d;
        }
        int v = ComputeDerivative(r, b);
        d[p.Map[b]] = v;
        return v;
    }

    private int ComputeDerivative(int r, byte b)
    {
        Node n = _nodes[r];
        switch (n.Kind)
        {
            case TermKind.Nothing:
            case TermKind.Empty:
                return Nothing;
            case TermKind.ByteSet:
                return SetContains(n, b) ? Empty : Nothing;
            case TermKind.Concat:
            {
                int d = MakeConcat(Derivative(n.A, b), n.B);
                if (_nullable[n.A]) d = MakeOr([d, Derivative(n.B, b)]);
                return d;
            }
            case TermKind.Or:
            case TermKind.And:
            {
                int[] ops = n.Ops!;
                var ds = new int[ops.Length];
                for (int i = 0; i < ops.Length; i++) ds[i] = Derivative(ops[i], b);
                return n.Kind == TermKind.Or ? MakeOr(ds) : MakeAnd(ds);
            }
            case TermKind.Not:
                return MakeNot(Derivative(n.A, b));
            case TermKind.Star:
                return MakeConcat(Derivative(n.A, b), r);
            case TermKind.Repeat:
            {
                int da = Derivative(n.A, b);
                if (da == Nothing) return Nothing;
                return MakeConcat(da, MakeRepeat(n.A, Math.Max(n.Min - 1, 0), n.Max - 1));
            }
            default:
                throw new InvalidOperationException();
        }
    }

    // ---------------------------------------------------------------- emptiness

    private bool ComputeDead(int r)
    {
        Node n = _nodes[r];
        bool dead;
        switch (n.Kind)
        {
            case TermKind.Concat:
            {
                // Along the spine, iteratively: long literals make long chains.
                int t = r;
                dead = false;
                while (_nodes[t].Kind == TermKind.Concat && !dead)
                {
                    dead = IsDead(_nodes[t].A);
                    t = _nodes[t].B;
                }
                dead = dead || IsDead(t);
                break;
            }
            case TermKind.Or:
                dead = true;
                foreach (int o in n.Ops!)
                    if (!IsDead(o)) { dead = false; break; }
                break;
            case TermKind.Star:
                dead = false;
                break;
            case TermKind.Repeat:
                dead = n.Min > 0 && IsDead(n.A);
                break;
            default: // And, Not: explore the reachable derivative states
                return Explore(r);
        }
        _dead[r] = dead ? (sbyte)1 : (sbyte)-1;
        return dead;
    }

    /// <summary>Breadth-first search of the derivative states reachable from <paramref name="r"/> (one
    /// representative byte per class) for a nullable one. None: every visited state is dead.</summary>
    private bool Explore(int r)
    {
        var visited = new HashSet<int> { r };
        var order = new List<int> { r };
        bool alive = false;
        for (int i = 0; i < order.Count && !alive; i++)
        {
            int s = order[i];
            if (s == Nothing) continue;
            if (_nullable[s] || !_hasBool[s] || _dead[s] < 0) { alive = true; break; }
            if (_dead[s] > 0) continue;
            Partition p = EnsurePartition(s);
            foreach (byte b in p.Reps)
            {
                int t = Derivative(s, b);
                if (visited.Add(t)) order.Add(t);
            }
        }
        if (alive)
        {
            _dead[r] = -1;
            return false;
        }
        foreach (int s in order) _dead[s] = 1;
        return true;
    }

    // ---------------------------------------------------------------- rendering

    private void DescribeInto(System.Text.StringBuilder sb, int r)
    {
        Node n = _nodes[r];
        switch (n.Kind)
        {
            case TermKind.Nothing:
                sb.Append('∅');
                break;
            case TermKind.Empty:
                sb.Append('ε');
                break;
            case TermKind.ByteSet:
                DescribeByteSet(sb, n);
                break;
            case TermKind.Concat:
            {
                int t = r;
                while (_nodes[t].Kind == TermKind.Concat)
                {
                    DescribeOperand(sb, _nodes[t].A, concat: true);
                    t = _nodes[t].B;
                }
                DescribeOperand(sb, t, concat: true);
                break;
            }
            case TermKind.Or:
            {
                int[] ops = n.Ops!;
                int start = ops[0] == Empty ? 1 : 0;
                sb.Append('(');
                for (int i = start; i < ops.Length; i++)
                {
                    if (i > start) sb.Append('|');
                    DescribeInto(sb, ops[i]);
                }
                sb.Append(')');
                if (start == 1) sb.Append('?');
                break;
            }
            case TermKind.And:
                sb.Append('(');
                for (int i = 0; i < n.Ops!.Length; i++)
                {
                    if (i > 0) sb.Append('&');
                    DescribeInto(sb, n.Ops[i]);
                }
                sb.Append(')');
                break;
            case TermKind.Not:
                sb.Append('~');
                DescribeOperand(sb, n.A, concat: false);
                break;
            case TermKind.Star:
                DescribeOperand(sb, n.A, concat: false);
                sb.Append('*');
                break;
            case TermKind.Repeat:
                DescribeOperand(sb, n.A, concat: false);
                sb.Append('{').Append(n.Min).Append(',').Append(n.Max).Append('}');
                break;
        }
    }

    private void DescribeOperand(System.Text.StringBuilder sb, int r, bool concat)
    {
        TermKind k = _nodes[r].Kind;
        bool atomic = k is TermKind.ByteSet or TermKind.Or or TermKind.And or TermKind.Nothing or TermKind.Empty
            || (concat && k is TermKind.Star or TermKind.Repeat or TermKind.Concat);
        if (atomic) DescribeInto(sb, r);
        else
        {
            sb.Append('(');
            DescribeInto(sb, r);
            sb.Append(')');
        }
    }

    private static void DescribeByteSet(System.Text.StringBuilder sb, in Node n)
    {
        int first = -1, count = 0;
        for (int b = 0; b < 256; b++)
            if (SetContains(n, b)) { if (first < 0) first = b; count++; }
        if (count == 1)
        {
            AppendByte(sb, first, inClass: false);
            return;
        }
        sb.Append('[');
        for (int b = 0; b < 256;)
        {
            if (!SetContains(n, b)) { b++; continue; }
            int e = b;
            while (e + 1 < 256 && SetContains(n, e + 1)) e++;
            AppendByte(sb, b, inClass: true);
            if (e > b)
            {
                if (e > b + 1) sb.Append('-');
                AppendByte(sb, e, inClass: true);
            }
            b = e + 1;
        }
        sb.Append(']');
    }

    private static void AppendByte(System.Text.StringBuilder sb, int b, bool inClass)
    {
        if (b >= 0x21 && b <= 0x7E)
        {
            char c = (char)b;
            bool special = inClass ? c is '\\' or ']' or '[' or '^' or '-' : "\\.^$|?*+()[]{}&~".Contains(c);
            if (special) sb.Append('\\');
            sb.Append(c);
        }
        else sb.Append("\\x").Append(b.ToString("X2", CultureInfo.InvariantCulture));
    }

    internal static int PopCount(ulong w0, ulong w1, ulong w2, ulong w3)
        => BitOperations.PopCount(w0) + BitOperations.PopCount(w1) + BitOperations.PopCount(w2)
            + BitOperations.PopCount(w3);
}
