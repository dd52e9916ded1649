using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace MiniCPM4.Chat.Jinja;

/// <summary>Jinja2's built-in filters that chat templates use, with transformers' <c>tojson</c>.</summary>
internal static partial class Filters
{
    private delegate object? Filter(Interpreter interp, object? value, List<object?> args,
        List<(string Name, object? Value)> kwargs);

    private static readonly Dictionary<string, Filter> Table = new(StringComparer.Ordinal)
    {
        ["abs"] = Abs,
        ["attr"] = Attr,
        ["capitalize"] = (i, v, a, k) => { ArgBinder.Bind("capitalize", a, k); return PyText.Capitalize(SoftStr(v)); },
        ["center"] = Center,
        ["count"] = Length,
        ["d"] = Default,
        ["default"] = Default,
        ["dictsort"] = DictSort,
        ["e"] = Escape,
        ["escape"] = Escape,
        ["first"] = First,
        ["float"] = ToFloat,
        ["forceescape"] = Escape,
        ["format"] = FormatFilter,
        ["indent"] = Indent,
        ["int"] = ToInt,
        ["items"] = Items,
        ["join"] = Join,
        ["last"] = Last,
        ["length"] = Length,
        ["list"] = (i, v, a, k) =>
            { ArgBinder.Bind("list", a, k); return v is Undefined ? new List<object?>() : PyOps.ToList(v); },
        ["lower"] = (i, v, a, k) => { ArgBinder.Bind("lower", a, k); return PyText.Lower(SoftStr(v)); },
        ["map"] = Map,
        ["max"] = (i, v, a, k) => MinMax(i, v, a, k, max: true),
        ["min"] = (i, v, a, k) => MinMax(i, v, a, k, max: false),
        ["reject"] = (i, v, a, k) => Select(i, v, a, k, reject: true),
        ["rejectattr"] = (i, v, a, k) => SelectAttr(i, v, a, k, reject: true),
        ["replace"] = ReplaceFilter,
        ["reverse"] = Reverse,
        ["round"] = Round,
        ["safe"] = (i, v, a, k) =>
            { ArgBinder.Bind("safe", a, k); return v is Undefined ? "" : v is string ? v : PyOps.Str(v); },
        ["select"] = (i, v, a, k) => Select(i, v, a, k, reject: false),
        ["selectattr"] = (i, v, a, k) => SelectAttr(i, v, a, k, reject: false),
        ["sort"] = Sort,
        ["string"] = (i, v, a, k) => { ArgBinder.Bind("string", a, k); return SoftStr(v); },
        ["sum"] = Sum,
        ["title"] = TitleFilter,
        ["tojson"] = ToJson,
        ["trim"] = Trim,
        ["truncate"] = Truncate,
        ["unique"] = Unique,
        ["upper"] = (i, v, a, k) => { ArgBinder.Bind("upper", a, k); return PyText.Upper(SoftStr(v)); },
        ["wordcount"] = (i, v, a, k) =>
            { ArgBinder.Bind("wordcount", a, k); return (long)WordRegex().Count(SoftStr(v)); },
    };

    public static bool Exists(string name) => Table.ContainsKey(name);

    public static object? Apply(Interpreter interp, string name, object? value, List<object?> args,
        List<(string Name, object? Value)> kwargs)
    {
        if (!Table.TryGetValue(name, out var filter)) throw new JinjaRuntimeError($"no filter named '{name}'");
        return filter(interp, value, args, kwargs);
    }

    /// <summary>Jinja2's <c>soft_str</c>: str(), with Undefined as the empty string.</summary>
    private static string SoftStr(object? v) => PyOps.Str(v);

    private static object? Abs(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        ArgBinder.Bind("abs", a, k);
        return v switch
        {
            long l => (object)checked(Math.Abs(l)),
            bool b => b ? 1L : 0L,
            double d => Math.Abs(d),
            Undefined u => throw PyOps.UndefinedError(u),
            _ => throw PyOps.TypeError($"bad operand type for abs(): '{PyOps.TypeName(v)}'"),
        };
    }

    private static object? Attr(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("attr", a, k, ("name", ArgBinder.Required));
        return PyOps.GetAttr(v, ArgBinder.String(p[0], "attr", "name"));
    }

    private static object? Center(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("center", a, k, ("width", 80L));
        return Methods.Pad(interp, SoftStr(v), ArgBinder.Integer(p[0], "center", "width"), " ", "center");
    }

    private static object? Default(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("default", a, k, ("default_value", ""), ("boolean", false));
        if (v is Undefined || (PyOps.Truthy(p[1]) && !PyOps.Truthy(v))) return p[0];
        return v;
    }

    private static object? DictSort(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("dictsort", a, k, ("case_sensitive", false), ("by", "key"), ("reverse", false));
        if (v is not PyDict d) throw PyOps.TypeError("dictsort filter expects a dict");
        int position = p[1] switch
        {
            "key" => 0,
            "value" => 1,
            _ => throw new JinjaRuntimeError("FilterArgumentError: You can only sort by either \"key\" or \"value\""),
        };
        bool caseSensitive = PyOps.Truthy(p[0]);
        var pairs = d.Pairs().Select(x => (object?)new PyTuple([x.Key, x.Value])).ToList();
        return SortList(pairs, x => CaseKey(((PyTuple)x!)[position], caseSensitive), PyOps.Truthy(p[2]));
    }

    private static object? Escape(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        ArgBinder.Bind("escape", a, k);
        return SoftStr(v).Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal)
            .Replace(">", "&gt;", StringComparison.Ordinal).Replace("\"", "&#34;", StringComparison.Ordinal)
            .Replace("'", "&#39;", StringComparison.Ordinal);
    }

    private static object? First(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        ArgBinder.Bind("first", a, k);
        foreach (var item in PyOps.Iterate(v)) return item;
        return new Undefined(null, hint: "No first item, sequence was empty.");
    }

    private static object? Last(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        ArgBinder.Bind("last", a, k);
        var items = PyOps.ToList(v);
        return items.Count > 0 ? items[^1] : new Undefined(null, hint: "No last item, sequence was empty.");
    }

    private static object? ToFloat(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("float", a, k, ("default", 0.0));
        switch (v)
        {
            case double d: return d;
            case long l: return (double)l;
            case bool b: return b ? 1.0 : 0.0;
            case string s:
                if (double.TryParse(PyText.Strip(s).Replace("_", "", StringComparison.Ordinal), NumberStyles.Float,
                    CultureInfo.InvariantCulture, out var parsed))
                    return parsed;
                return p[0];
            case Undefined u: throw PyOps.UndefinedError(u);
            default: return p[0];
        }
    }

    private static object? ToInt(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("int", a, k, ("default", 0L), ("base", 10L));
        switch (v)
        {
            case long l: return l;
            case bool b: return b ? 1L : 0L;
            case double d:
                if (double.IsNaN(d) || double.IsInfinity(d)) return p[0];
                return checked((long)Math.Truncate(d));
            case string s:
            {
                long radix = ArgBinder.Integer(p[1], "int", "base");
                string t = PyText.Strip(s).Replace("_", "", StringComparison.Ordinal);
                try
                {
                    if (radix == 10
                        && long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture,
                        out var parsed)) return parsed;
                    if (radix is 2 or 8 or 16)
                    {
                        bool negative = t.StartsWith('-');
                        string digits = t.TrimStart('+', '-');
                        string prefix = radix switch { 2 => "0b", 8 => "0o", _ => "0x" };
                        if (digits.StartsWith(prefix, StringComparison.OrdinalIgnoreCase)) digits = digits[2..];
                        long value = Convert.ToInt64(digits, (int)radix);
                        return negative ? -value : value;
                    }
                }
                catch (Exception e) when (e is FormatException or ArgumentException or OverflowException)
                {
                }
                if (double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) && !double.IsNaN(f)
                    && !double.IsInfinity(f))
                    return checked((long)Math.Truncate(f));
                return p[0];
            }
            case Undefined u: throw PyOps.UndefinedError(u);
            default: return p[0];
        }
    }

    private static object? FormatFilter(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        if (a.Count > 0 && k.Count > 0) throw new JinjaRuntimeError(
            "FilterArgumentError: can't handle positional and keyword arguments at the same time");
        string format = SoftStr(v);
        var sb = new StringBuilder();
        int next = 0;
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c != '%')
            {
                sb.Append(c);
                continue;
            }
            if (i + 1 >= format.Length) throw new JinjaRuntimeError("ValueError: incomplete format");
            char spec = format[++i];
            if (spec == '%')
            {
                sb.Append('%');
                continue;
            }
            if (next >= a.Count) throw PyOps.TypeError("not enough arguments for format string");
            var arg = a[next++];
            switch (spec)
            {
                case 's': sb.Append(PyOps.Str(arg)); break;
                case 'r': sb.Append(PyOps.Repr(arg)); break;
                case 'd' or 'i':
                    sb.Append(arg switch
                    {
                        long l => l.ToString(CultureInfo.InvariantCulture),
                        bool b => b ? "1" : "0",
                        double d => ((long)Math.Truncate(d)).ToString(CultureInfo.InvariantCulture),
                        _ => throw PyOps.TypeError($"%d format: a real number is required, not {PyOps.TypeName(arg)}"),
                    });
                    break;
                case 'f':
                    sb.Append(arg switch
                    {
                        long or bool or double =>
                            Convert.ToDouble(arg is bool b ? (b ? 1 : 0) : arg, CultureInfo.InvariantCulture).ToString(
                            "F6", CultureInfo.InvariantCulture),
                        _ => throw PyOps.TypeError($"must be real number, not {PyOps.TypeName(arg)}"),
                    });
                    break;
                default:
                    throw new JinjaRuntimeError($"the format filter supports %s, %r, %d, %i, %f and %%, not %{spec}");
            }
        }
        if (next < a.Count) throw PyOps.TypeError("not all arguments converted during string formatting");
        return sb.ToString();
    }

    private static object? Indent(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("indent", a, k, ("width", 4L), ("first", false), ("blank", false));
        string indention = p[0] is string w ? w
            : new string(' ', (int)Math.Clamp(ArgBinder.Integer(p[0], "indent", "width"), 0, 1 << 20));
        string s = SoftStr(v) + "\n";
        string rv;
        var lines = PyText.SplitLines(s);
        if (PyOps.Truthy(p[2]))
        {
            rv = string.Join("\n" + indention, lines);
        }
        else
        {
            var sb = new StringBuilder(lines.Count > 0 ? lines[0] : "");
            for (int i = 1; i < lines.Count; i++)
            {
                sb.Append('\n');
                if (lines[i].Length > 0) sb.Append(indention);
                sb.Append(lines[i]);
                interp.CheckSize(sb.Length);
            }
            rv = sb.ToString();
        }
        if (PyOps.Truthy(p[1])) rv = indention + rv;
        return rv;
    }

    private static object? Items(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        ArgBinder.Bind("items", a, k);
        return v switch
        {
            Undefined => new List<object?>(),
            PyDict d => d.Pairs().Select(p => (object?)new PyTuple([p.Key, p.Value])).ToList(),
            _ => throw PyOps.TypeError("Can only get item pairs from a mapping."),
        };
    }

    private static object? Join(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("join", a, k, ("d", ""), ("attribute", null));
        string separator = SoftStr(p[0]);
        IEnumerable<object?> items = PyOps.Iterate(v);
        if (p[1] is not null)
        {
            var getter = AttrGetter(p[1]);
            items = items.Select(getter).ToList();
        }
        var sb = new StringBuilder();
        bool first = true;
        foreach (var item in items)
        {
            if (!first) sb.Append(separator);
            first = false;
            sb.Append(PyOps.Str(item));
            interp.CheckSize(sb.Length);
        }
        return sb.ToString();
    }

    private static object? Length(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        ArgBinder.Bind("length", a, k);
        return PyOps.Length(v);
    }

    /// <summary>Jinja2's attribute getter: dotted paths, integer parts as indexes, item lookup first.</summary>
    private static Func<object?,
        object?> AttrGetter(object? attribute, object? defaultValue = null, bool hasDefault = false)
    {
        var parts = attribute switch
        {
            string s =>
                s.Split('.').Select(part =>
                int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? (object)(long)n : part)
                .ToList(),
            long l => [l],
            _ => throw PyOps.TypeError("attribute must be a string or an integer"),
        };
        return item =>
        {
            foreach (var part in parts)
            {
                item = PyOps.GetItem(item, part);
                if (hasDefault && item is Undefined) return defaultValue;
            }
            return item;
        };
    }

    private static object? Map(Interpreter interp, object? v, List<object?> a, List<(string Name, object? Value)> k)
    {
        if (v is Undefined) return new List<object?>();
        var items = PyOps.Iterate(v);
        if (a.Count == 0 && k.Any(x => x.Name == "attribute"))
        {
            var attribute = k.First(x => x.Name == "attribute").Value;
            bool hasDefault = k.Any(x => x.Name == "default");
            object? defaultValue = hasDefault ? k.First(x => x.Name == "default").Value : null;
            if (k.Any(x => x.Name is not "attribute" and not "default"))
                throw new JinjaRuntimeError("FilterArgumentError: Unexpected keyword argument for map");
            var getter = AttrGetter(attribute, defaultValue, hasDefault);
            return items.Select(getter).ToList();
        }
        if (a.Count == 0) throw new JinjaRuntimeError("FilterArgumentError: map requires a filter argument");
        string name = ArgBinder.String(a[0], "map", "filter");
        if (!Exists(name)) throw new JinjaRuntimeError($"No filter named {PyText.Repr(name)}.");
        var rest = a.Skip(1).ToList();
        return items.Select(item => Apply(interp, name, item, rest, k)).ToList();
    }

    private static object? MinMax(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k, bool max)
    {
        var p = ArgBinder.Bind(max ? "max" : "min", a, k, ("case_sensitive", false), ("attribute", null));
        var items = PyOps.ToList(v);
        if (items.Count == 0) return new Undefined(null, hint: $"No aggregated item, sequence was empty.");
        bool caseSensitive = PyOps.Truthy(p[0]);
        Func<object?, object?> key = p[1] is null ? x => CaseKey(x, caseSensitive) : x =>
            CaseKey(AttrGetter(p[1])(x), caseSensitive);
        object? best = items[0];
        object? bestKey = key(best);
        foreach (var item in items.Skip(1))
        {
            var itemKey = key(item);
            int c = PyOps.Compare(itemKey, bestKey, max ? ">" : "<");
            if (max ? c > 0 : c < 0)
            {
                best = item;
                bestKey = itemKey;
            }
        }
        return best;
    }

    private static object? CaseKey(object? v, bool caseSensitive) => !caseSensitive && v is string s ? PyText.Lower(s)
        : v;

    private static object? Select(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k,
        bool reject)
    {
        var items = PyOps.Iterate(v);
        Func<object?, bool> test;
        if (a.Count == 0)
        {
            test = PyOps.Truthy;
        }
        else
        {
            string name = ArgBinder.String(a[0], reject ? "reject" : "select", "test");
            var rest = a.Skip(1).ToList();
            test = x => PyOps.Truthy(JinjaTests.Run(interp, name, x, rest, k));
        }
        return items.Where(x => test(x) != reject).ToList();
    }

    private static object? SelectAttr(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k,
        bool reject)
    {
        if (a.Count == 0) throw new JinjaRuntimeError("FilterArgumentError: Missing parameter for attribute name");
        var getter = AttrGetter(a[0]);
        var items = PyOps.Iterate(v);
        Func<object?, bool> test;
        if (a.Count == 1)
        {
            test = x => PyOps.Truthy(getter(x));
        }
        else
        {
            string name = ArgBinder.String(a[1], reject ? "rejectattr" : "selectattr", "test");
            var rest = a.Skip(2).ToList();
            test = x => PyOps.Truthy(JinjaTests.Run(interp, name, getter(x), rest, k));
        }
        return items.Where(x => test(x) != reject).ToList();
    }

    private static object? ReplaceFilter(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("replace", a, k, ("old", ArgBinder.Required), ("new", ArgBinder.Required),
            ("count", null));
        long count = p[2] is null ? -1 : ArgBinder.Integer(p[2], "replace", "count");
        return Methods.Replace(interp, SoftStr(v), SoftStr(p[0]), SoftStr(p[1]), count);
    }

    private static object? Reverse(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        ArgBinder.Bind("reverse", a, k);
        if (v is string s)
        {
            var cps = PyText.CodePoints(s);
            cps.Reverse();
            return string.Concat(cps);
        }
        var items = PyOps.ToList(v);
        items.Reverse();
        return items;
    }

    private static object? Round(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("round", a, k, ("precision", 0L), ("method", "common"));
        double value = v switch
        {
            double d => d,
            long l => l,
            bool b => b ? 1 : 0,
            _ => throw PyOps.TypeError($"must be real number, not {PyOps.TypeName(v)}"),
        };
        int digits = (int)ArgBinder.Integer(p[0], "round", "precision");
        double factor = Math.Pow(10, digits);
        return p[1] switch
        {
            "common" => Math.Round(value * factor, MidpointRounding.AwayFromZero) / factor,
            "ceil" => Math.Ceiling(value * factor) / factor,
            "floor" => Math.Floor(value * factor) / factor,
            _ => throw new JinjaRuntimeError("FilterArgumentError: method must be common, ceil or floor"),
        };
    }

    private static object? Sort(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("sort", a, k, ("reverse", false), ("case_sensitive", false), ("attribute", null));
        bool caseSensitive = PyOps.Truthy(p[1]);
        var getter = p[2] is null ? (Func<object?, object?>)(x => x) : AttrGetter(p[2]);
        return SortList(PyOps.ToList(v), x => CaseKey(getter(x), caseSensitive), PyOps.Truthy(p[0]));
    }

    private static List<object?> SortList(List<object?> items, Func<object?, object?> key, bool reverse)
    {
        var keyed = items.Select((item, index) => (Item: item, Key: key(item), Index: index)).ToList();
        keyed.Sort((x, y) =>
        {
            int c = PyOps.Compare(x.Key, y.Key, "<");
            if (c == int.MinValue) c = 0;
            if (reverse) c = -c;
            return c != 0 ? c : x.Index.CompareTo(y.Index);
        });
        return keyed.Select(x => x.Item).ToList();
    }

    private static object? Sum(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("sum", a, k, ("attribute", null), ("start", 0L));
        var getter = p[0] is null ? (Func<object?, object?>)(x => x) : AttrGetter(p[0]);
        object? total = p[1];
        foreach (var item in PyOps.Iterate(v)) total = PyOps.Add(total, getter(item), interp);
        return total;
    }

    private static object? TitleFilter(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        ArgBinder.Bind("title", a, k);
        var sb = new StringBuilder();
        foreach (var item in WordBeginningRegex().Split(SoftStr(v)))
        {
            if (item.Length == 0) continue;
            int first = char.IsHighSurrogate(item[0]) && item.Length > 1 ? 2 : 1;
            sb.Append(item[..first].ToUpperInvariant()).Append(item[first..].ToLowerInvariant());
        }
        return sb.ToString();
    }

    private static object? ToJson(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("tojson", a, k, ("ensure_ascii", false), ("indent", null), ("separators", null),
            ("sort_keys", false));
        string? indent = p[1] switch
        {
            null => null,
            string s => s,
            long or bool => new string(' ', (int)Math.Clamp(ArgBinder.Integer(p[1], "tojson", "indent"), 0, 1 << 20)),
            _ => throw PyOps.TypeError("indent must be an integer or a string"),
        };
        string itemSeparator = indent is null ? ", " : ",", keySeparator = ": ";
        if (p[2] is not null)
        {
            var separators = PyOps.ToList(p[2]);
            if (separators.Count != 2 || separators[0] is not string itemSep || separators[1] is not string keySep)
                throw PyOps.TypeError("separators must be a pair of strings");
            (itemSeparator, keySeparator) = (itemSep, keySep);
        }
        return PyJson.Dumps(v, PyOps.Truthy(p[0]), indent, itemSeparator, keySeparator, PyOps.Truthy(p[3]), interp);
    }

    private static object? Trim(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("trim", a, k, ("chars", null));
        return PyText.Strip(SoftStr(v), ArgBinder.OptionalString(p[0], "trim", "chars"));
    }

    private static object? Truncate(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("truncate", a, k, ("length", 255L), ("killwords", false), ("end", "..."),
            ("leeway", 5L));
        string s = SoftStr(v);
        long length = ArgBinder.Integer(p[0], "truncate", "length");
        string end = SoftStr(p[2]);
        long leeway = ArgBinder.Integer(p[3], "truncate", "leeway");
        if (length < end.Length) throw new JinjaRuntimeError($"expected length >= {end.Length}, got {length}");
        if (leeway < 0) throw new JinjaRuntimeError($"expected leeway >= 0, got {leeway}");
        if (s.Length <= length + leeway) return s;
        if (PyOps.Truthy(p[1])) return s[..(int)(length - end.Length)] + end;
        string result = s[..(int)(length - end.Length)];
        int space = result.LastIndexOf(' ');
        if (space >= 0) result = result[..space];
        return result + end;
    }

    private static object? Unique(Interpreter interp, object? v, List<object?> a, List<(string, object?)> k)
    {
        var p = ArgBinder.Bind("unique", a, k, ("case_sensitive", false), ("attribute", null));
        bool caseSensitive = PyOps.Truthy(p[0]);
        var getter = p[1] is null ? (Func<object?, object?>)(x => x) : AttrGetter(p[1]);
        var seen = new List<object?>();
        var result = new List<object?>();
        foreach (var item in PyOps.Iterate(v))
        {
            var key = CaseKey(getter(item), caseSensitive);
            if (seen.Any(s => PyOps.Equal(s, key))) continue;
            seen.Add(key);
            result.Add(item);
        }
        return result;
    }

    [GeneratedRegex(@"([-\s({\[<]+)")]
    private static partial Regex WordBeginningRegex();

    [GeneratedRegex(@"\w+")]
    private static partial Regex WordRegex();
}
