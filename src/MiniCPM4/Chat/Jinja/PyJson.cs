using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MiniCPM4.Chat.Jinja;

/// <summary>
/// Python's <c>json.dumps</c> as transformers' <c>tojson</c> calls it: <c>ensure_ascii</c>, <c>indent</c>,
/// <c>separators</c> and <c>sort_keys</c>, Python's float repr, keys converted the way Python converts them.
/// </summary>
internal static class PyJson
{
    private const int MaxDepth = 512;

    public static string Dumps(object? value, bool ensureAscii, string? indent, string itemSeparator,
        string keySeparator,
        bool sortKeys, Interpreter interp)
    {
        var sb = new StringBuilder();
        Write(sb, value, ensureAscii, indent, itemSeparator, keySeparator, sortKeys, 0, interp);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? value, bool ascii, string? indent, string itemSep,
        string keySep,
        bool sortKeys, int level, Interpreter interp)
    {
        if (level > MaxDepth) throw new JinjaRuntimeError(
            "RecursionError: maximum recursion depth exceeded while encoding a JSON object");
        interp.CheckSize(sb.Length);
        switch (value)
        {
            case null: sb.Append("null"); return;
            case bool b: sb.Append(b ? "true" : "false"); return;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); return;
            case double d: sb.Append(Float(d)); return;
            case string s: WriteString(sb, s, ascii); return;
            case List<object?> or PyTuple:
            {
                var items = value is PyTuple t ? (IReadOnlyList<object?>)t.Items : (List<object?>)value;
                if (items.Count == 0)
                {
                    sb.Append("[]");
                    return;
                }
                sb.Append('[');
                for (int i = 0; i < items.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    NewLine(sb, indent, level + 1);
                    Write(sb, items[i], ascii, indent, itemSep, keySep, sortKeys, level + 1, interp);
                }
                NewLine(sb, indent, level);
                sb.Append(']');
                return;
            }
            case PyDict dict:
            {
                if (dict.Count == 0)
                {
                    sb.Append("{}");
                    return;
                }
                var pairs = dict.Pairs().Select(p => (Key: KeyString(p.Key), p.Value)).ToList();
                if (sortKeys) pairs = [.. pairs.OrderBy(p => p.Key, StringComparer.Ordinal)];
                sb.Append('{');
                for (int i = 0; i < pairs.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    NewLine(sb, indent, level + 1);
                    WriteString(sb, pairs[i].Key, ascii);
                    sb.Append(keySep);
                    Write(sb, pairs[i].Value, ascii, indent, itemSep, keySep, sortKeys, level + 1, interp);
                }
                NewLine(sb, indent, level);
                sb.Append('}');
                return;
            }
            default:
                throw PyOps.TypeError($"Object of type {PyOps.TypeName(value)} is not JSON serializable");
        }
    }

    private static void NewLine(StringBuilder sb, string? indent, int level)
    {
        if (indent is null) return;
        sb.Append('\n');
        for (int i = 0; i < level; i++) sb.Append(indent);
    }

    private static string KeyString(object? key) => key switch
    {
        string s => s,
        bool b => b ? "true" : "false",
        null => "null",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => Float(d),
        _ => throw PyOps.TypeError($"keys must be str, int, float, bool or None, not {PyOps.TypeName(key)}"),
    };

    private static string Float(double d) =>
        double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity"
            : PyOps.FloatRepr(d);

    public static void WriteString(StringBuilder sb, string s, bool ascii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ascii && c > 0x7e))
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else
                        sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}

/// <summary>Converts host values (JSON, dictionaries, lists, numbers) into template values.</summary>
public static class JinjaValue
{
    private const int MaxDepth = 512;

    /// <summary>
    /// Accepts null, bool, integers, floating-point numbers, strings, <see cref="JsonElement"/>,
    /// <see cref="System.Text.Json.Nodes.JsonNode"/>, dictionaries with string keys and sequences; values already
    /// converted pass through. Anything else is an <see cref="ArgumentException"/>.
    /// </summary>
    internal static object? From(object? value, int depth = 0)
    {
        if (depth > MaxDepth) throw new ArgumentException("the value nests deeper than 512 levels");
        switch (value)
        {
            case null: return null;
            case string or bool or long or double or PyDict or PyTuple or Undefined or JinjaNamespace
                or IJinjaCallable:
                return value;
            case int i: return (long)i;
            case short or byte or sbyte or ushort or uint: return Convert.ToInt64(value, CultureInfo.InvariantCulture);
            case ulong u: return u <= long.MaxValue ? (long)u : (double)u;
            case float f: return (double)f;
            case decimal m: return (double)m;
            case char c: return c.ToString();
            case JsonElement e: return FromJson(e, depth);
            case System.Text.Json.Nodes.JsonNode node: return FromJson(
                JsonSerializer.SerializeToElement(node, JinjaJsonContext.Default.JsonNode), depth);
            case IDictionary<string, object?> map:
            {
                var d = new PyDict();
                foreach (var kv in map) d.Set(kv.Key, From(kv.Value, depth + 1));
                return d;
            }
            case IReadOnlyDictionary<string, object?> map:
            {
                var d = new PyDict();
                foreach (var kv in map) d.Set(kv.Key, From(kv.Value, depth + 1));
                return d;
            }
            case IDictionary map:
            {
                var d = new PyDict();
                foreach (DictionaryEntry kv in map)
                {
                    if (kv.Key is not string key) throw new ArgumentException("dictionary keys must be strings");
                    d.Set(key, From(kv.Value, depth + 1));
                }
                return d;
            }
            case IEnumerable sequence:
            {
                var list = new List<object?>();
                foreach (var item in sequence) list.Add(From(item, depth + 1));
                return list;
            }
        }
        throw new ArgumentException($"a value of type {value.GetType().Name} cannot be passed to a template");
    }

    /// <summary>JSON the way Python's <c>json.loads</c> reads it: numbers with a fraction or exponent are
    /// floats.</summary>
    internal static object? FromJson(JsonElement e, int depth = 0)
    {
        if (depth > MaxDepth) throw new ArgumentException("the JSON value nests deeper than 512 levels");
        switch (e.ValueKind)
        {
            case JsonValueKind.Null: return null;
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            case JsonValueKind.String: return e.GetString();
            case JsonValueKind.Number:
            {
                string raw = e.GetRawText();
                if (raw.IndexOfAny(['.', 'e', 'E']) < 0
                    && long.TryParse(raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l))
                    return l;
                return double.Parse(raw, NumberStyles.Float, CultureInfo.InvariantCulture);
            }
            case JsonValueKind.Array:
            {
                var list = new List<object?>(e.GetArrayLength());
                foreach (var item in e.EnumerateArray()) list.Add(FromJson(item, depth + 1));
                return list;
            }
            case JsonValueKind.Object:
            {
                var d = new PyDict();
                foreach (var p in e.EnumerateObject()) d.Set(p.Name, FromJson(p.Value, depth + 1));
                return d;
            }
        }
        throw new ArgumentException("undefined JSON value");
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(System.Text.Json.Nodes.JsonNode))]
internal sealed partial class JinjaJsonContext : System.Text.Json.Serialization.JsonSerializerContext;
