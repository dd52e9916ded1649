using System.Globalization;
using System.Text;

namespace MiniCPM4.Chat.Jinja;

/// <summary>Limits and clock of one render.</summary>
public sealed record JinjaRenderOptions
{
    /// <summary>Statement and expression evaluations a render may take (a loop that never ends stops here).</summary>
    public long MaxSteps { get; init; } = 5_000_000;

    /// <summary>The longest string or list a render may build, in characters or items.</summary>
    public long MaxOutputLength { get; init; } = 16 * 1024 * 1024;

    /// <summary>How deeply macro calls may nest.</summary>
    public int MaxCallDepth { get; init; } = 64;

    /// <summary>The time <c>strftime_now</c> formats; null uses the local time when the render starts.</summary>
    public DateTime? Now { get; init; }
}

/// <summary>
/// A Jinja2 template parsed once and rendered many times, with the semantics Hugging Face transformers renders chat
/// templates with: Jinja2's <c>ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)</c> with the loop
/// controls extension, transformers' <c>tojson</c> (Python's <c>json.dumps</c>, <c>ensure_ascii=False</c>) and its
/// globals <c>raise_exception</c> and <c>strftime_now</c>. Undefined values behave like Jinja2's default
/// <c>Undefined</c>. Thread-safe: one parsed template can be rendered from several threads at once.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly List<Stmt> _body;
    private readonly SourceMap _map;

    private JinjaTemplate(string source, List<Stmt> body, SourceMap map)
    {
        Source = source;
        _body = body;
        _map = map;
    }

    /// <summary>The template text as given.</summary>
    public string Source { get; }

    /// <summary>Parses a template. Syntax errors and unsupported constructs throw <see
    /// cref="TemplateSyntaxException"/>.</summary>
    public static JinjaTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        string normalized = Lexer.NormalizeSource(source);
        var map = new SourceMap(normalized);
        var tokens = Lexer.Tokenize(normalized, map);
        var body = Parser.Parse(tokens, map);
        return new JinjaTemplate(source, body, map);
    }

    /// <summary>
    /// Renders with the given variables. Values may be null, booleans, numbers, strings, <see
    /// cref="System.Text.Json.JsonElement"/>,
    /// JSON nodes, dictionaries with string keys and sequences of these.
    /// </summary>
    /// <exception cref="TemplateRaisedException">The template called <c>raise_exception</c>.</exception>
    /// <exception cref="TemplateLimitException">The render ran past a limit of <paramref name="options"/>.</exception>
    /// <exception cref="TemplateRenderException">Any other error while rendering (with the line and
    /// column).</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables, JinjaRenderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(variables);
        options ??= new JinjaRenderOptions();
        var now = options.Now ?? DateTime.Now;
        var globals = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["range"] = new BuiltinFunction("range", Range),
            ["dict"] = new BuiltinFunction("dict", Dict),
            ["namespace"] = new BuiltinFunction("namespace", Namespace),
            ["raise_exception"] = new BuiltinFunction("raise_exception", RaiseException),
            ["strftime_now"] = new BuiltinFunction("strftime_now", (_, args, kwargs, _) =>
            {
                var a = ArgBinder.Bind("strftime_now", args, kwargs, ("format", ArgBinder.Required));
                return Strftime.Format(now, ArgBinder.String(a[0], "strftime_now", "format"));
            }),
        };
        foreach (var (key, value) in variables) globals[key] = JinjaValue.From(value);
        var interpreter = new Interpreter(_map, options, globals);
        return interpreter.Render(_body);
    }

    private static object? Range(Interpreter interp, List<object?> args, List<(string Name, object? Value)> kwargs,
        int pos)
    {
        if (kwargs.Count > 0) throw PyOps.TypeError("range() takes no keyword arguments");
        if (args.Count is < 1 or > 3) throw PyOps.TypeError($"range expected 1 to 3 arguments, got {args.Count}");
        long start = 0, stop, step = 1;
        if (args.Count == 1)
        {
            stop = ArgBinder.Integer(args[0], "range", "stop");
        }
        else
        {
            start = ArgBinder.Integer(args[0], "range", "start");
            stop = ArgBinder.Integer(args[1], "range", "stop");
            if (args.Count == 3) step = ArgBinder.Integer(args[2], "range", "step");
        }
        if (step == 0) throw new JinjaRuntimeError("ValueError: range() arg 3 must not be zero");
        long count = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
            : (start > stop ? (start - stop - step - 1) / -step : 0);
        // The sandbox refuses ranges longer than 100000 items (MAX_RANGE).
        if (count > 100_000) throw new JinjaRuntimeError(
            "OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        var list = new List<object?>((int)count);
        for (long i = 0, v = start; i < count; i++, v += step) list.Add(v);
        return list;
    }

    private static object? Dict(Interpreter interp, List<object?> args, List<(string Name, object? Value)> kwargs,
        int pos)
    {
        var d = new PyDict();
        if (args.Count > 1) throw PyOps.TypeError($"dict expected at most 1 argument, got {args.Count}");
        if (args.Count == 1)
        {
            if (args[0] is PyDict source)
            {
                foreach (var (k, v) in source.Pairs()) d.Set(k, v);
            }
            else
            {
                foreach (var pair in PyOps.Iterate(args[0]))
                {
                    var kv = PyOps.ToList(pair);
                    if (kv.Count != 2) throw new JinjaRuntimeError(
                        "ValueError: dictionary update sequence element has the wrong length");
                    d.Set(kv[0], kv[1]);
                }
            }
        }
        foreach (var (k, v) in kwargs) d.Set(k, v);
        return d;
    }

    private static object? Namespace(Interpreter interp, List<object?> args, List<(string Name, object? Value)> kwargs,
        int pos)
    {
        var ns = new JinjaNamespace();
        foreach (var arg in args)
        {
            if (arg is not PyDict d) throw PyOps.TypeError("namespace() takes mappings as positional arguments");
            foreach (var (k, v) in d.Pairs())
            {
                if (k is not string key) throw PyOps.TypeError("keywords must be strings");
                ns.Attributes[key] = v;
            }
        }
        foreach (var (k, v) in kwargs) ns.Attributes[k] = v;
        return ns;
    }

    private static object? RaiseException(Interpreter interp, List<object?> args,
        List<(string Name, object? Value)> kwargs, int pos)
    {
        var a = ArgBinder.Bind("raise_exception", args, kwargs, ("message", ArgBinder.Required));
        var (line, column) = interp.Position;
        throw new TemplateRaisedException(PyOps.Str(a[0]), line, column);
    }
}

/// <summary>Python's <c>datetime.strftime</c> in the C locale (with glibc's <c>%-d</c> style unpadded
/// fields).</summary>
internal static class Strftime
{
    private static readonly string[] Days =
        ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    private static readonly string[] Months =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
            "December"];

    public static string Format(DateTime t, string format)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c != '%' || i + 1 >= format.Length)
            {
                sb.Append(c);
                continue;
            }
            char f = format[++i];
            bool unpadded = false;
            if (f == '-' && i + 1 < format.Length)
            {
                unpadded = true;
                f = format[++i];
            }
            string Num(int value, int width) =>
                unpadded ? value.ToString(CultureInfo.InvariantCulture)
                    : value.ToString(new string('0', width), CultureInfo.InvariantCulture);
            sb.Append(f switch
            {
                'a' => Days[(int)t.DayOfWeek][..3],
                'A' => Days[(int)t.DayOfWeek],
                'b' or 'h' => Months[t.Month - 1][..3],
                'B' => Months[t.Month - 1],
                'd' => Num(t.Day, 2),
                'e' => t.Day.ToString(CultureInfo.InvariantCulture).PadLeft(unpadded ? 0 : 2),
                'm' => Num(t.Month, 2),
                'y' => Num(t.Year % 100, 2),
                'Y' => t.Year.ToString(CultureInfo.InvariantCulture),
                'H' => Num(t.Hour, 2),
                'I' => Num(t.Hour % 12 == 0 ? 12 : t.Hour % 12, 2),
                'M' => Num(t.Minute, 2),
                'S' => Num(t.Second, 2),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'j' => Num(t.DayOfYear, 3),
                'f' => (t.Ticks % TimeSpan.TicksPerSecond / 10).ToString("000000", CultureInfo.InvariantCulture),
                'w' => ((int)t.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'u' => (t.DayOfWeek == DayOfWeek.Sunday ? 7 : (int)t.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'x' => $"{t.Month:00}/{t.Day:00}/{t.Year % 100:00}",
                'X' => $"{t.Hour:00}:{t.Minute:00}:{t.Second:00}",
                'c' => $"{Days[(int)t.DayOfWeek][..3]} {Months[t.Month - 1][..3]} {t.Day,2} " +
                       $"{t.Hour:00}:{t.Minute:00}:{t.Second:00} {t.Year}",
                'D' => $"{t.Month:00}/{t.Day:00}/{t.Year % 100:00}",
                'F' => $"{t.Year:0000}-{t.Month:00}-{t.Day:00}",
                'T' => $"{t.Hour:00}:{t.Minute:00}:{t.Second:00}",
                'R' => $"{t.Hour:00}:{t.Minute:00}",
                'n' => "\n",
                't' => "\t",
                'z' => "",
                'Z' => "",
                '%' => "%",
                _ => "%" + (unpadded ? "-" : "") + f,
            });
        }
        return sb.ToString();
    }
}
