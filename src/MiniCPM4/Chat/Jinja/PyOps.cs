using System.Globalization;
using System.Text;

namespace MiniCPM4.Chat.Jinja;

/// <summary>Python's operators, conversions and protocols over the runtime values (see <see
/// cref="Undefined"/>).</summary>
internal static class PyOps
{
    public static JinjaRuntimeError TypeError(string message) => new("TypeError: " + message);

    public static JinjaRuntimeError UndefinedError(Undefined u) => new(u.Message);

    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        PyTuple => "tuple",
        PyDict => "dict",
        Undefined => "Undefined",
        JinjaNamespace => "Namespace",
        LoopInfo => "LoopContext",
        Macro => "Macro",
        BoundMethod => "builtin_function_or_method",
        BuiltinFunction => "function",
        _ => v.GetType().Name,
    };

    /// <summary>Jinja2's <c>object_type_repr</c>: "dict object", "None", …</summary>
    public static string ObjectTypeRepr(object? v) => v is null ? "None" : TypeName(v) + " object";

    // ---- truth, equality, ordering ------------------------------------------------------------------------------

    public static bool Truthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        PyTuple t => t.Count > 0,
        PyDict d => d.Count > 0,
        Undefined => false,
        _ => true,
    };

    private static bool IsNumber(object? v) => v is bool or long or double;

    private static double ToDouble(object? v) => v switch
    {
        bool b => b ? 1 : 0,
        long l => l,
        double d => d,
        _ => throw new InvalidOperationException(),
    };

    private static long ToLong(object? v) => v switch
    {
        bool b => b ? 1 : 0,
        long l => l,
        _ => throw new InvalidOperationException(),
    };

    public static bool Equal(object? a, object? b)
    {
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        if (a is null || b is null) return a is null && b is null;
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double) return ToDouble(a) == ToDouble(b);
            return ToLong(a) == ToLong(b);
        }
        switch (a)
        {
            case string sa: return b is string sb && string.Equals(sa, sb, StringComparison.Ordinal);
            case List<object?> la: return b is List<object?> lb && SequenceEqual(la, lb);
            case PyTuple ta: return b is PyTuple tb && SequenceEqual(ta.Items, tb.Items);
            case PyDict da:
                if (b is not PyDict db || da.Count != db.Count) return false;
                foreach (var (k, v) in da.Pairs())
                    if (!db.TryGet(k, out var other) || !Equal(v, other)) return false;
                return true;
            case Undefined: return b is Undefined;
        }
        return ReferenceEquals(a, b);
    }

    private static bool SequenceEqual(IReadOnlyList<object?> a, IReadOnlyList<object?> b)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++)
            if (!Equal(a[i], b[i])) return false;
        return true;
    }

    /// <summary>Python's ordering (<c>&lt;</c> and friends); a TypeError for types Python does not order.</summary>
    public static int Compare(object? a, object? b, string op)
    {
        if (a is Undefined ua) throw UndefinedError(ua);
        if (b is Undefined ub) throw UndefinedError(ub);
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double)
            {
                double x = ToDouble(a), y = ToDouble(b);
                if (double.IsNaN(x) || double.IsNaN(y)) return int.MinValue; // every comparison false
                return x.CompareTo(y);
            }
            return ToLong(a).CompareTo(ToLong(b));
        }
        if (a is string sa && b is string sb) return CompareCodePoints(sa, sb);
        if (a is List<object?> la && b is List<object?> lb) return CompareSequences(la, lb, op);
        if (a is PyTuple ta && b is PyTuple tb) return CompareSequences(ta.Items, tb.Items, op);
        throw TypeError($"'{op}' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    private static int CompareCodePoints(string a, string b)
    {
        // Ordinal UTF-16 order equals code point order except around surrogates; compare code points to be exact.
        int i = 0, j = 0;
        while (i < a.Length && j < b.Length)
        {
            int ca = char.IsHighSurrogate(a[i]) && i + 1 < a.Length && char.IsLowSurrogate(a[i + 1])
                ? char.ConvertToUtf32(a[i], a[++i]) : a[i];
            int cb = char.IsHighSurrogate(b[j]) && j + 1 < b.Length && char.IsLowSurrogate(b[j + 1])
                ? char.ConvertToUtf32(b[j], b[++j]) : b[j];
            if (ca != cb) return ca < cb ? -1 : 1;
            i++;
            j++;
        }
        return (a.Length - i).CompareTo(b.Length - j) switch { < 0 => -1, > 0 => 1, _ => 0 };
    }

    private static int CompareSequences(IReadOnlyList<object?> a, IReadOnlyList<object?> b, string op)
    {
        for (int i = 0; i < Math.Min(a.Count, b.Count); i++)
        {
            if (Equal(a[i], b[i])) continue;
            return Compare(a[i], b[i], op);
        }
        return a.Count.CompareTo(b.Count);
    }

    public static bool CompareOp(string op, object? a, object? b)
    {
        switch (op)
        {
            case "==": return Equal(a, b);
            case "!=": return !Equal(a, b);
            case "in": return Contains(b, a);
            case "notin": return !Contains(b, a);
        }
        int c = Compare(a, b, op);
        if (c == int.MinValue) return false;
        return op switch
        {
            "<" => c < 0,
            "<=" => c <= 0,
            ">" => c > 0,
            ">=" => c >= 0,
            _ => throw new InvalidOperationException(op),
        };
    }

    public static bool Contains(object? container, object? item)
    {
        switch (container)
        {
            case string s:
                if (item is Undefined u) throw UndefinedError(u);
                if (item is not string sub) throw TypeError(
                    $"'in <string>' requires string as left operand, not {TypeName(item)}");
                return s.Contains(sub, StringComparison.Ordinal);
            case List<object?> l: return l.Any(x => Equal(x, item));
            case PyTuple t: return t.Items.Any(x => Equal(x, item));
            case PyDict d:
                if (item is List<object?> or PyDict) throw TypeError($"unhashable type: '{TypeName(item)}'");
                return d.ContainsKey(item);
            case Undefined: return false;
            case JinjaNamespace ns: return item is string key && ns.Attributes.ContainsKey(key);
        }
        throw TypeError($"argument of type '{TypeName(container)}' is not iterable");
    }

    // ---- conversions --------------------------------------------------------------------------------------------

    /// <summary>Python's <c>str(v)</c> (Undefined prints as nothing).</summary>
    public static string Str(object? v) => v switch
    {
        null => "None",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        Undefined => "",
        _ => Repr(v),
    };

    /// <summary>Python's <c>repr(v)</c>.</summary>
    public static string Repr(object? v)
    {
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        switch (v)
        {
            case null: return "None";
            case string s: return PyText.Repr(s);
            case bool or long or double: return Str(v);
            case List<object?> l: return "[" + string.Join(", ", l.Select(Repr)) + "]";
            case PyTuple t: return t.Count == 1 ? "(" + Repr(t[0]) + ",)" : "("
                + string.Join(", ", t.Items.Select(Repr)) + ")";
            case PyDict d:
                return "{" + string.Join(", ", d.Pairs().Select(p => Repr(p.Key) + ": " + Repr(p.Value))) + "}";
            case Undefined: return "Undefined";
            case JinjaNamespace ns:
                return "<Namespace " + "{"
                    + string.Join(", ", ns.Attributes.Select(p => Repr(p.Key) + ": " + Repr(p.Value))) + "}>";
            case Macro m: return $"<Macro '{m.Name}'>";
            case BoundMethod bm: return $"<built-in method {bm.Name} of {TypeName(bm.Receiver)} object>";
            case BuiltinFunction f: return $"<function {f.Name}>";
            case LoopInfo: return "<LoopContext>";
            default: return v.ToString() ?? "";
        }
    }

    /// <summary>Python's <c>repr(float)</c>: the shortest digits that round-trip, exponent form outside 1e-4 ≤ |x| &lt;
    /// 1e16.</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsPositiveInfinity(d)) return "inf";
        if (double.IsNegativeInfinity(d)) return "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        // Shortest round-trip digits come from "R"; its layout varies, so parse it into digits and exponent.
        string shortest = d.ToString("R", CultureInfo.InvariantCulture);
        bool negative = shortest[0] == '-';
        if (negative) shortest = shortest[1..];
        int exponent = 0;
        int e = shortest.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            exponent = int.Parse(shortest[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            shortest = shortest[..e];
        }
        int dot = shortest.IndexOf('.');
        string digits = dot >= 0 ? shortest.Remove(dot, 1) : shortest;
        int pointPos = (dot >= 0 ? dot : shortest.Length) + exponent; // digits before the decimal point
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0')
        {
            lead++;
            pointPos--;
        }
        digits = digits[lead..].TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        var sb = new StringBuilder();
        if (negative) sb.Append('-');
        int decpt = pointPos;
        if (decpt > 16 || decpt < -3)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            int exp = decpt - 1;
            sb.Append('e').Append(exp < 0 ? '-' : '+').Append(
                Math.Abs(exp).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (decpt <= 0)
        {
            sb.Append("0.").Append('0', -decpt).Append(digits);
        }
        else if (decpt >= digits.Length)
        {
            sb.Append(digits).Append('0', decpt - digits.Length).Append(".0");
        }
        else
        {
            sb.Append(digits, 0, decpt).Append('.').Append(digits, decpt, digits.Length - decpt);
        }
        return sb.ToString();
    }

    // ---- iteration and size -------------------------------------------------------------------------------------

    public static IEnumerable<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        PyTuple t => t.Items,
        PyDict d => d.Pairs().Select(p => p.Key),
        string s => PyText.HasSurrogates(s) ? PyText.CodePoints(s) : s.Select(c => (object?)c.ToString()),
        Undefined => [],
        JinjaNamespace => throw TypeError("'Namespace' object is not iterable"),
        _ => throw TypeError($"'{TypeName(v)}' object is not iterable"),
    };

    public static List<object?> ToList(object? v) => v is List<object?> l ? [.. l] : [.. Iterate(v)];

    public static bool IsIterable(object? v) => v is List<object?> or PyTuple or PyDict or string or Undefined;

    public static long Length(object? v) => v switch
    {
        string s => PyText.Length(s),
        List<object?> l => l.Count,
        PyTuple t => t.Count,
        PyDict d => d.Count,
        Undefined => 0,
        JinjaNamespace ns => ns.Attributes.Count,
        _ => throw TypeError($"object of type '{TypeName(v)}' has no len()"),
    };

    // ---- arithmetic ---------------------------------------------------------------------------------------------

    private static void CheckUndefined(object? a, object? b)
    {
        if (a is Undefined ua) throw UndefinedError(ua);
        if (b is Undefined ub) throw UndefinedError(ub);
    }

    private static JinjaRuntimeError Unsupported(string op, object? a, object? b) =>
        TypeError($"unsupported operand type(s) for {op}: '{TypeName(a)}' and '{TypeName(b)}'");

    public static object? Add(object? a, object? b, Interpreter interp)
    {
        CheckUndefined(a, b);
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? (object)(ToDouble(a) + ToDouble(b)) : checked(ToLong(a) + ToLong(b));
        switch (a)
        {
            case string sa when b is string sb:
                interp.CheckSize((long)sa.Length + sb.Length);
                return sa + sb;
            case string when true:
                throw TypeError($"can only concatenate str (not \"{TypeName(b)}\") to str");
            case List<object?> la when b is List<object?> lb:
                interp.CheckSize((long)la.Count + lb.Count);
                return new List<object?>(la.Concat(lb));
            case List<object?>:
                throw TypeError($"can only concatenate list (not \"{TypeName(b)}\") to list");
            case PyTuple ta when b is PyTuple tb:
                return new PyTuple([.. ta.Items, .. tb.Items]);
        }
        throw Unsupported("+", a, b);
    }

    public static object? Sub(object? a, object? b)
    {
        CheckUndefined(a, b);
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? (object)(ToDouble(a) - ToDouble(b)) : checked(ToLong(a) - ToLong(b));
        throw Unsupported("-", a, b);
    }

    public static object? Mul(object? a, object? b, Interpreter interp)
    {
        CheckUndefined(a, b);
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? (object)(ToDouble(a) * ToDouble(b)) : checked(ToLong(a) * ToLong(b));
        if (a is bool or long && b is string or List<object?> or PyTuple) (a, b) = (b, a);
        if (b is bool or long)
        {
            long n = Math.Max(0, ToLong(b));
            switch (a)
            {
                case string s:
                    interp.CheckSize(s.Length * n);
                    return n == 0 || s.Length == 0 ? ""
                        : new StringBuilder(s.Length * (int)n).Insert(0, s, (int)n).ToString();
                case List<object?> l:
                {
                    interp.CheckSize(l.Count * n);
                    var result = new List<object?>();
                    for (long i = 0; i < n; i++) result.AddRange(l);
                    return result;
                }
                case PyTuple t:
                {
                    interp.CheckSize(t.Count * n);
                    var result = new List<object?>();
                    for (long i = 0; i < n; i++) result.AddRange(t.Items);
                    return new PyTuple([.. result]);
                }
            }
        }
        throw Unsupported("*", a, b);
    }

    public static object? TrueDiv(object? a, object? b)
    {
        CheckUndefined(a, b);
        if (!IsNumber(a) || !IsNumber(b)) throw Unsupported("/", a, b);
        double y = ToDouble(b);
        if (y == 0) throw new JinjaRuntimeError("ZeroDivisionError: division by zero");
        return ToDouble(a) / y;
    }

    public static object? FloorDiv(object? a, object? b)
    {
        CheckUndefined(a, b);
        if (!IsNumber(a) || !IsNumber(b)) throw Unsupported("//", a, b);
        if (a is double || b is double)
        {
            double y = ToDouble(b);
            if (y == 0) throw new JinjaRuntimeError("ZeroDivisionError: float floor division by zero");
            return Math.Floor(ToDouble(a) / y);
        }
        long x = ToLong(a), d = ToLong(b);
        if (d == 0) throw new JinjaRuntimeError("ZeroDivisionError: integer division or modulo by zero");
        long q = x / d;
        if ((x % d != 0) && ((x < 0) != (d < 0))) q--;
        return q;
    }

    public static object? Mod(object? a, object? b)
    {
        CheckUndefined(a, b);
        if (a is string) throw TypeError("printf-style formatting with '%' is not supported");
        if (!IsNumber(a) || !IsNumber(b)) throw Unsupported("%", a, b);
        if (a is double || b is double)
        {
            double x = ToDouble(a), y = ToDouble(b);
            if (y == 0) throw new JinjaRuntimeError("ZeroDivisionError: float modulo");
            double r = x % y;
            if (r != 0 && (r < 0) != (y < 0)) r += y;
            return r;
        }
        long lx = ToLong(a), ly = ToLong(b);
        if (ly == 0) throw new JinjaRuntimeError("ZeroDivisionError: integer division or modulo by zero");
        long m = lx % ly;
        if (m != 0 && (m < 0) != (ly < 0)) m += ly;
        return m;
    }

    public static object? Pow(object? a, object? b)
    {
        CheckUndefined(a, b);
        if (!IsNumber(a) || !IsNumber(b)) throw Unsupported("** or pow()", a, b);
        if (a is double || b is double || ToLong(b) < 0) return Math.Pow(ToDouble(a), ToDouble(b));
        long x = ToLong(a), n = ToLong(b), result = 1;
        for (long i = 0; i < n; i++)
        {
            result = checked(result * x);
            if (result == 0 || result == 1 && x == 1) break;
        }
        return result;
    }

    public static object? Negate(object? a)
    {
        if (a is Undefined u) throw UndefinedError(u);
        return a switch
        {
            bool or long => (object)checked(-ToLong(a)),
            double d => -d,
            _ => throw TypeError($"bad operand type for unary -: '{TypeName(a)}'"),
        };
    }

    public static object? Plus(object? a)
    {
        if (a is Undefined u) throw UndefinedError(u);
        return a switch
        {
            bool or long => (object)ToLong(a),
            double d => d,
            _ => throw TypeError($"bad operand type for unary +: '{TypeName(a)}'"),
        };
    }

    // ---- attribute and item access (the sandbox's getattr / getitem) --------------------------------------------

    /// <summary><c>obj.name</c>: a method or loop/namespace attribute first, then <c>obj['name']</c>, else
    /// Undefined.</summary>
    public static object? GetAttr(object? obj, string name)
    {
        if (obj is Undefined u) throw UndefinedError(u);
        if (TryAttribute(obj, name, out var value)) return value;
        if (obj is PyDict d && d.TryGet(name, out var item)) return item;
        return new Undefined(name, obj, hasOwner: true);
    }

    /// <summary><c>obj[key]</c>: the item first, then (for string keys) the attribute, else Undefined.</summary>
    public static object? GetItem(object? obj, object? key)
    {
        if (obj is Undefined u) throw UndefinedError(u);
        switch (obj)
        {
            case PyDict d:
                if (key is List<object?> or PyDict) throw TypeError($"unhashable type: '{TypeName(key)}'");
                if (d.TryGet(key, out var v)) return v;
                break;
            case List<object?> l when key is long or bool:
            {
                long i = ToLong(key);
                if (i < 0) i += l.Count;
                if (i >= 0 && i < l.Count) return l[(int)i];
                break;
            }
            case PyTuple t when key is long or bool:
            {
                long i = ToLong(key);
                if (i < 0) i += t.Count;
                if (i >= 0 && i < t.Count) return t[(int)i];
                break;
            }
            case string s when key is long or bool:
            {
                long i = ToLong(key);
                if (!PyText.HasSurrogates(s))
                {
                    if (i < 0) i += s.Length;
                    if (i >= 0 && i < s.Length) return s[(int)i].ToString();
                }
                else
                {
                    var cps = PyText.CodePoints(s);
                    if (i < 0) i += cps.Count;
                    if (i >= 0 && i < cps.Count) return cps[(int)i];
                }
                break;
            }
        }
        if (key is string name && TryAttribute(obj, name, out var attr)) return attr;
        return UndefinedItem.Create(obj, key);
    }

    private static bool TryAttribute(object? obj, string name, out object? value)
    {
        value = null;
        switch (obj)
        {
            case JinjaNamespace ns:
                return ns.Attributes.TryGetValue(name, out value);
            case LoopInfo loop:
                return Interpreter.LoopAttribute(loop, name, out value);
        }
        if (Methods.IsUnsafe(obj, name))
        {
            value = new Undefined(name, obj, hasOwner: true,
                hint: $"access to attribute {PyText.Repr(name)} of {PyText.Repr(TypeName(obj))} object is unsafe.");
            return true;
        }
        if (Methods.Has(obj, name))
        {
            value = new BoundMethod(obj, name);
            return true;
        }
        return false;
    }

    /// <summary>Python slicing of a list, tuple or string.</summary>
    public static object? Slice(object? obj, object? start, object? stop, object? step)
    {
        if (obj is Undefined u) throw UndefinedError(u);
        long? Index(object? v, string what) => v switch
        {
            null => null,
            bool or long => ToLong(v),
            Undefined un => throw UndefinedError(un),
            _ => throw TypeError($"slice indices must be integers or None, not {TypeName(v)} ({what})"),
        };
        long? s0 = Index(start, "start"), s1 = Index(stop, "stop"), st = Index(step, "step");
        long stepValue = st ?? 1;
        if (stepValue == 0) throw new JinjaRuntimeError("ValueError: slice step cannot be zero");

        IReadOnlyList<object?> items;
        switch (obj)
        {
            case List<object?> l: items = l; break;
            case PyTuple t: items = t.Items; break;
            case string s: items = PyText.HasSurrogates(s) ? PyText.CodePoints(s).Cast<object?>().ToList()
                : s.Select(c => (object?)c.ToString()).ToList(); break;
            default: throw TypeError($"'{TypeName(obj)}' object is not subscriptable");
        }
        long n = items.Count;
        long lo, hi;
        if (stepValue > 0)
        {
            lo = s0 is null ? 0 : s0 < 0 ? Math.Max(0, s0.Value + n) : Math.Min(s0.Value, n);
            hi = s1 is null ? n : s1 < 0 ? Math.Max(0, s1.Value + n) : Math.Min(s1.Value, n);
        }
        else
        {
            lo = s0 is null ? n - 1 : s0 < 0 ? Math.Max(-1, s0.Value + n) : Math.Min(s0.Value, n - 1);
            hi = s1 is null ? -1 : s1 < 0 ? Math.Max(-1, s1.Value + n) : Math.Min(s1.Value, n - 1);
        }
        var picked = new List<object?>();
        if (stepValue > 0)
            for (long i = lo; i < hi; i += stepValue) picked.Add(items[(int)i]);
        else
            for (long i = lo; i > hi; i += stepValue) picked.Add(items[(int)i]);
        return obj switch
        {
            string => string.Concat(picked.Cast<string>()),
            PyTuple => new PyTuple([.. picked]),
            _ => picked,
        };
    }

    // ---- numbers ------------------------------------------------------------------------------------------------

    public static bool IsInteger(object? v) => v is long or bool;
}
