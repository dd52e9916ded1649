using System.Globalization;
using System.Text;

namespace MiniCPM4.Chat.Jinja;

/// <summary>Binds positional and keyword arguments to a parameter list, as Python does.</summary>
internal static class ArgBinder
{
    public static readonly object Required = new();

    public static object?[] Bind(string function, List<object?> args, List<(string Name, object? Value)> kwargs,
        params (string Name, object? Default)[] parameters)
    {
        if (args.Count > parameters.Length)
            throw PyOps.TypeError($"{function}() takes at most {parameters.Length} argument(s) ({args.Count} given)");
        var values = new object?[parameters.Length];
        var set = new bool[parameters.Length];
        for (int i = 0; i < args.Count; i++)
        {
            values[i] = args[i];
            set[i] = true;
        }
        foreach (var (name, value) in kwargs)
        {
            int index = Array.FindIndex(parameters, p => p.Name == name);
            if (index < 0) throw PyOps.TypeError($"{function}() got an unexpected keyword argument '{name}'");
            if (set[index]) throw PyOps.TypeError($"{function}() got multiple values for argument '{name}'");
            values[index] = value;
            set[index] = true;
        }
        for (int i = 0; i < parameters.Length; i++)
        {
            if (set[i]) continue;
            if (ReferenceEquals(parameters[i].Default, Required))
                throw PyOps.TypeError($"{function}() missing required argument '{parameters[i].Name}'");
            values[i] = parameters[i].Default;
        }
        return values;
    }

    public static string String(object? v, string function, string parameter) => v switch
    {
        string s => s,
        Undefined u => throw PyOps.UndefinedError(u),
        _ => throw PyOps.TypeError($"{function}() argument '{parameter}' must be str, not {PyOps.TypeName(v)}"),
    };

    public static string? OptionalString(object? v, string function, string parameter) =>
        v is null ? null : String(v, function, parameter);

    public static long Integer(object? v, string function, string parameter) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        Undefined u => throw PyOps.UndefinedError(u),
        _ => throw PyOps.TypeError($"{function}() argument '{parameter}' must be int, not {PyOps.TypeName(v)}"),
    };
}

/// <summary>The methods of str, dict, list and tuple that templates call; mutating ones are refused (immutable
/// sandbox).</summary>
internal static class Methods
{
    private static readonly HashSet<string> StringMethods = new(StringComparer.Ordinal)
    {
        "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "replace", "upper",
            "lower",
        "title", "capitalize", "find", "rfind", "index", "rindex", "count", "join", "isdigit", "isalpha", "isalnum",
        "isspace", "isupper", "islower", "isnumeric", "isdecimal", "zfill", "center", "ljust", "rjust", "format",
        "partition", "rpartition", "removeprefix", "removesuffix", "casefold", "swapcase",
    };

    private static readonly HashSet<string> DictMethods =
        new(StringComparer.Ordinal) { "items", "keys", "values", "get", "copy" };
    private static readonly HashSet<string> ListMethods = new(StringComparer.Ordinal) { "index", "count", "copy" };
    private static readonly HashSet<string> TupleMethods = new(StringComparer.Ordinal) { "index", "count" };

    private static readonly HashSet<string> MutatingDict =
        new(StringComparer.Ordinal) { "clear", "pop", "popitem", "setdefault", "update" };
    private static readonly HashSet<string> MutatingList =
        new(StringComparer.Ordinal) { "append", "clear", "pop", "reverse", "insert", "sort", "extend", "remove" };

    public static bool Has(object? obj, string name) => obj switch
    {
        string => StringMethods.Contains(name),
        PyDict => DictMethods.Contains(name),
        List<object?> => ListMethods.Contains(name),
        PyTuple => TupleMethods.Contains(name),
        _ => false,
    };

    /// <summary>Attributes the immutable sandbox refuses: dunder names and methods that modify lists and
    /// dicts.</summary>
    public static bool IsUnsafe(object? obj, string name) =>
        (name.StartsWith("__", StringComparison.Ordinal) && name.EndsWith("__", StringComparison.Ordinal)
            && obj is not PyDict) ||
        obj switch
        {
            PyDict => MutatingDict.Contains(name),
            List<object?> => MutatingList.Contains(name),
            _ => false,
        };

    public static object? Invoke(Interpreter interp, object? receiver, string name, List<object?> args,
        List<(string Name, object? Value)> kwargs, int pos) => receiver switch
    {
        string s => StringMethod(interp, s, name, args, kwargs),
        PyDict d => DictMethod(d, name, args, kwargs),
        List<object?> l => SequenceMethod(l, name, args, kwargs),
        PyTuple t => SequenceMethod(t.Items, name, args, kwargs),
        _ => throw PyOps.TypeError($"'{PyOps.TypeName(receiver)}' object has no method '{name}'"),
    };

    private static object? DictMethod(PyDict d, string name, List<object?> args, List<(string, object?)> kwargs)
    {
        switch (name)
        {
            case "items":
                ArgBinder.Bind("items", args, kwargs);
                return d.Pairs().Select(p => (object?)new PyTuple([p.Key, p.Value])).ToList();
            case "keys":
                ArgBinder.Bind("keys", args, kwargs);
                return d.Pairs().Select(p => p.Key).ToList();
            case "values":
                ArgBinder.Bind("values", args, kwargs);
                return d.Pairs().Select(p => p.Value).ToList();
            case "copy":
            {
                ArgBinder.Bind("copy", args, kwargs);
                var copy = new PyDict();
                foreach (var (k, v) in d.Pairs()) copy.Set(k, v);
                return copy;
            }
            case "get":
            {
                if (kwargs.Count > 0) throw PyOps.TypeError("get() takes no keyword arguments");
                var a = ArgBinder.Bind("get", args, kwargs, ("key", ArgBinder.Required), ("default", null));
                if (a[0] is List<object?> or PyDict) throw PyOps.TypeError(
                    $"unhashable type: '{PyOps.TypeName(a[0])}'");
                return d.TryGet(a[0], out var v) ? v : a[1];
            }
        }
        throw PyOps.TypeError($"'dict' object has no method '{name}'");
    }

    private static object? SequenceMethod(IReadOnlyList<object?> items, string name, List<object?> args,
        List<(string, object?)> kwargs)
    {
        switch (name)
        {
            case "count":
            {
                var a = ArgBinder.Bind("count", args, kwargs, ("value", ArgBinder.Required));
                return (long)items.Count(x => PyOps.Equal(x, a[0]));
            }
            case "index":
            {
                var a = ArgBinder.Bind("index", args, kwargs, ("value", ArgBinder.Required));
                for (int i = 0; i < items.Count; i++)
                    if (PyOps.Equal(items[i], a[0])) return (long)i;
                throw new JinjaRuntimeError($"ValueError: {PyOps.Repr(a[0])} is not in list");
            }
            case "copy":
                ArgBinder.Bind("copy", args, kwargs);
                return items.ToList();
        }
        throw PyOps.TypeError($"sequence has no method '{name}'");
    }

    private static object? StringMethod(Interpreter interp, string s, string name, List<object?> args,
        List<(string, object?)> kwargs)
    {
        switch (name)
        {
            case "strip":
            case "lstrip":
            case "rstrip":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("chars", null));
                string? chars = ArgBinder.OptionalString(a[0], name, "chars");
                return name == "strip" ? PyText.Strip(s, chars) : name == "lstrip" ? PyText.LStrip(s, chars)
                    : PyText.RStrip(s, chars);
            }
            case "split":
            case "rsplit":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("sep", null), ("maxsplit", -1L));
                string? sep = ArgBinder.OptionalString(a[0], name, "sep");
                long max = ArgBinder.Integer(a[1], name, "maxsplit");
                return name == "split" ? PyText.Split(s, sep, max) : PyText.RSplit(s, sep, max);
            }
            case "splitlines":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("keepends", false));
                return PyText.SplitLines(s, PyOps.Truthy(a[0])).Select(x => (object?)x).ToList();
            }
            case "startswith":
            case "endswith":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("prefix", ArgBinder.Required), ("start", null),
                    ("end", null));
                string target = SliceOf(s, a[1], a[2]);
                IEnumerable<object?> options = a[0] is PyTuple t ? t.Items : [a[0]];
                foreach (var option in options)
                {
                    string o = ArgBinder.String(option, name, "prefix");
                    if (name == "startswith" ? target.StartsWith(o, StringComparison.Ordinal)
                        : target.EndsWith(o, StringComparison.Ordinal))
                        return true;
                }
                return false;
            }
            case "replace":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("old", ArgBinder.Required), ("new", ArgBinder.Required),
                    ("count", -1L));
                return Replace(interp, s, ArgBinder.String(a[0], name, "old"), ArgBinder.String(a[1], name, "new"),
                    ArgBinder.Integer(a[2], name, "count"));
            }
            case "upper": ArgBinder.Bind(name, args, kwargs); return PyText.Upper(s);
            case "lower": ArgBinder.Bind(name, args, kwargs); return PyText.Lower(s);
            case "casefold": ArgBinder.Bind(name, args, kwargs); return PyText.Lower(s);
            case "swapcase":
                ArgBinder.Bind(name, args, kwargs);
                return string.Concat(
                    s.Select(c => char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)));
            case "title": ArgBinder.Bind(name, args, kwargs); return PyText.Title(s);
            case "capitalize": ArgBinder.Bind(name, args, kwargs); return PyText.Capitalize(s);
            case "find":
            case "rfind":
            case "index":
            case "rindex":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("sub", ArgBinder.Required), ("start", null), ("end", null));
                string sub = ArgBinder.String(a[0], name, "sub");
                long offset = a[1] is null ? 0
                    : NormalizeIndex(ArgBinder.Integer(a[1], name, "start"), PyText.Length(s));
                string target = SliceOf(s, a[1], a[2]);
                int at = name is "find" or "index" ? target.IndexOf(sub, StringComparison.Ordinal)
                    : target.LastIndexOf(sub, StringComparison.Ordinal);
                if (at < 0)
                {
                    if (name is "index" or "rindex") throw new JinjaRuntimeError("ValueError: substring not found");
                    return -1L;
                }
                return offset + PyText.Length(target[..at]);
            }
            case "count":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("sub", ArgBinder.Required), ("start", null), ("end", null));
                string sub = ArgBinder.String(a[0], name, "sub");
                string target = SliceOf(s, a[1], a[2]);
                if (sub.Length == 0) return (long)PyText.Length(target) + 1;
                long n = 0;
                for (int at = target.IndexOf(sub, StringComparison.Ordinal); at >= 0; at =
                    target.IndexOf(sub, at + sub.Length, StringComparison.Ordinal)) n++;
                return n;
            }
            case "join":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("iterable", ArgBinder.Required));
                var parts = new List<string>();
                long total = 0;
                foreach (var item in PyOps.Iterate(a[0]))
                {
                    if (item is not string part) throw PyOps.TypeError(
                        $"sequence item {parts.Count}: expected str instance, {PyOps.TypeName(item)} found");
                    total += part.Length + s.Length;
                    interp.CheckSize(total);
                    parts.Add(part);
                }
                return string.Join(s, parts);
            }
            case "isdigit":
            case "isdecimal":
            case "isnumeric":
                ArgBinder.Bind(name, args, kwargs);
                return s.Length > 0 && s.All(char.IsDigit);
            case "isalpha": ArgBinder.Bind(name, args, kwargs); return s.Length > 0 && s.All(char.IsLetter);
            case "isalnum": ArgBinder.Bind(name, args, kwargs); return s.Length > 0 && s.All(char.IsLetterOrDigit);
            case "isspace": ArgBinder.Bind(name, args, kwargs); return s.Length > 0 && s.All(PyText.IsSpace);
            case "isupper":
                ArgBinder.Bind(name, args, kwargs);
                return s.Any(char.IsLetter) && !s.Any(char.IsLower);
            case "islower":
                ArgBinder.Bind(name, args, kwargs);
                return s.Any(char.IsLetter) && !s.Any(char.IsUpper);
            case "zfill":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("width", ArgBinder.Required));
                long width = ArgBinder.Integer(a[0], name, "width");
                int len = PyText.Length(s);
                if (width <= len) return s;
                interp.CheckSize(width);
                int signLength = s.Length > 0 && s[0] is '+' or '-' ? 1 : 0;
                return s[..signLength] + new string('0', (int)(width - len)) + s[signLength..];
            }
            case "center":
            case "ljust":
            case "rjust":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("width", ArgBinder.Required), ("fillchar", " "));
                long width = ArgBinder.Integer(a[0], name, "width");
                string fill = ArgBinder.String(a[1], name, "fillchar");
                if (PyText.Length(fill) != 1) throw PyOps.TypeError(
                    "The fill character must be exactly one character long");
                return Pad(interp, s, width, fill, name);
            }
            case "partition":
            case "rpartition":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("sep", ArgBinder.Required));
                string sep = ArgBinder.String(a[0], name, "sep");
                if (sep.Length == 0) throw new JinjaRuntimeError("ValueError: empty separator");
                int at = name == "partition" ? s.IndexOf(sep, StringComparison.Ordinal)
                    : s.LastIndexOf(sep, StringComparison.Ordinal);
                if (at < 0) return name == "partition" ? new PyTuple([s, "", ""]) : new PyTuple(["", "", s]);
                return new PyTuple([s[..at], sep, s[(at + sep.Length)..]]);
            }
            case "removeprefix":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("prefix", ArgBinder.Required));
                string p = ArgBinder.String(a[0], name, "prefix");
                return s.StartsWith(p, StringComparison.Ordinal) ? s[p.Length..] : s;
            }
            case "removesuffix":
            {
                var a = ArgBinder.Bind(name, args, kwargs, ("suffix", ArgBinder.Required));
                string p = ArgBinder.String(a[0], name, "suffix");
                return p.Length > 0 && s.EndsWith(p, StringComparison.Ordinal) ? s[..^p.Length] : s;
            }
            case "format":
                return Format(s, args, kwargs);
        }
        throw PyOps.TypeError($"'str' object has no method '{name}'");
    }

    public static string Pad(Interpreter interp, string s, long width, string fill, string mode)
    {
        int len = PyText.Length(s);
        if (width <= len) return s;
        interp.CheckSize(width);
        int total = (int)(width - len);
        int left = mode switch
        {
            "ljust" => 0,
            "rjust" => total,
            // Python's center: the extra space goes left when the padding and the width are both odd.
            _ => total / 2 + (int)(total & width & 1),
        };
        var sb = new StringBuilder();
        for (int i = 0; i < left; i++) sb.Append(fill);
        sb.Append(s);
        for (int i = 0; i < total - left; i++) sb.Append(fill);
        return sb.ToString();
    }

    public static string Replace(Interpreter interp, string s, string old, string replacement, long count)
    {
        if (count == 0) return s;
        if (old.Length == 0)
        {
            // Python inserts the replacement between every character (and at both ends).
            var parts = PyText.CodePoints(s);
            var sb = new StringBuilder();
            long done = 0;
            for (int i = 0; i <= parts.Count; i++)
            {
                if (count < 0 || done < count)
                {
                    sb.Append(replacement);
                    done++;
                }
                if (i < parts.Count) sb.Append(parts[i]);
                interp.CheckSize(sb.Length);
            }
            return sb.ToString();
        }
        var result = new StringBuilder();
        int pos = 0;
        long n = 0;
        while (count < 0 || n < count)
        {
            int at = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (at < 0) break;
            result.Append(s, pos, at - pos).Append(replacement);
            interp.CheckSize(result.Length);
            pos = at + old.Length;
            n++;
        }
        result.Append(s, pos, s.Length - pos);
        return result.ToString();
    }

    private static long NormalizeIndex(long i, int length) => i < 0 ? Math.Max(0, i + length) : Math.Min(i, length);

    private static string SliceOf(string s, object? start, object? end)
    {
        if (start is null && end is null) return s;
        return (string)PyOps.Slice(s, start, end, null)!;
    }

    /// <summary><c>str.format</c> with <c>{}</c>, <c>{0}</c> and <c>{name}</c> fields (no format specs or
    /// conversions).</summary>
    private static string Format(string s, List<object?> args, List<(string Name, object? Value)> kwargs)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c == '{')
            {
                if (i + 1 < s.Length && s[i + 1] == '{')
                {
                    sb.Append('{');
                    i++;
                    continue;
                }
                int close = s.IndexOf('}', i);
                if (close < 0) throw new JinjaRuntimeError("ValueError: Single '{' encountered in format string");
                string field = s[(i + 1)..close];
                if (field.Contains(':') || field.Contains('!') || field.Contains('.') || field.Contains('['))
                    throw new JinjaRuntimeError(
                        "format specs, conversions and field access in str.format are not supported");
                object? value;
                if (field.Length == 0)
                {
                    if (auto >= args.Count) throw new JinjaRuntimeError("IndexError: Replacement index out of range");
                    value = args[auto++];
                }
                else if (int.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out int index))
                {
                    if (index >= args.Count) throw new JinjaRuntimeError("IndexError: Replacement index out of range");
                    value = args[index];
                }
                else
                {
                    int k = kwargs.FindIndex(p => p.Name == field);
                    if (k < 0) throw new JinjaRuntimeError($"KeyError: {PyText.Repr(field)}");
                    value = kwargs[k].Value;
                }
                sb.Append(PyOps.Str(value));
                i = close;
            }
            else if (c == '}')
            {
                if (i + 1 < s.Length && s[i + 1] == '}') i++;
                else throw new JinjaRuntimeError("ValueError: Single '}' encountered in format string");
                sb.Append('}');
            }
            else
            {
                sb.Append(c);
            }
        }
        return sb.ToString();
    }
}
