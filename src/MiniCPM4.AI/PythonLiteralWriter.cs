using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MiniCPM4.AI;

/// <summary>Writes .NET values (including <see cref="JsonElement"/>) as Python literals.</summary>
internal static class PythonLiteralWriter
{
    public static void Write(StringBuilder sb, object? value, int depth = 0)
    {
        if (depth > 64) throw new InvalidOperationException("value nested too deeply");
        switch (value)
        {
            case null: sb.Append("None"); break;
            case bool b: sb.Append(b ? "True" : "False"); break;
            case string s: WriteString(sb, s); break;
            case char ch: WriteString(sb, ch.ToString()); break;
            case float or double or decimal:
                sb.Append(Convert.ToString(value, CultureInfo.InvariantCulture)); break;
            case sbyte or byte or short or ushort or int or uint or long or ulong:
                sb.Append(Convert.ToString(value, CultureInfo.InvariantCulture)); break;
            case JsonElement e: WriteJson(sb, e, depth); break;
            case IDictionary dict:
                sb.Append('{');
                bool first = true;
                foreach (DictionaryEntry entry in dict)
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    WriteString(sb, Convert.ToString(entry.Key, CultureInfo.InvariantCulture) ?? "");
                    sb.Append(": ");
                    Write(sb, entry.Value, depth + 1);
                }
                sb.Append('}');
                break;
            case IEnumerable items:
                sb.Append('[');
                bool firstItem = true;
                foreach (var item in items)
                {
                    if (!firstItem) sb.Append(", ");
                    firstItem = false;
                    Write(sb, item, depth + 1);
                }
                sb.Append(']');
                break;
            default:
                WriteJson(sb,
                    JsonSerializer.SerializeToElement(value, Microsoft.Extensions.AI.AIJsonUtilities.DefaultOptions),
                    depth);
                break;
        }
    }

    private static void WriteJson(StringBuilder sb, JsonElement e, int depth)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String: WriteString(sb, e.GetString()!); break;
            case JsonValueKind.Number: sb.Append(e.GetRawText()); break;
            case JsonValueKind.True: sb.Append("True"); break;
            case JsonValueKind.False: sb.Append("False"); break;
            case JsonValueKind.Array:
                sb.Append('[');
                int i = 0;
                foreach (var item in e.EnumerateArray())
                {
                    if (i++ > 0) sb.Append(", ");
                    WriteJson(sb, item, depth + 1);
                }
                sb.Append(']');
                break;
            case JsonValueKind.Object:
                sb.Append('{');
                int j = 0;
                foreach (var p in e.EnumerateObject())
                {
                    if (j++ > 0) sb.Append(", ");
                    WriteString(sb, p.Name);
                    sb.Append(": ");
                    WriteJson(sb, p.Value, depth + 1);
                }
                sb.Append('}');
                break;
            default: sb.Append("None"); break;
        }
    }

    public static void WriteString(StringBuilder sb, string s)
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
                default:
                    if (char.IsControl(c)) sb.Append("\\u").Append(
                        ((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
