using System.Globalization;
namespace MiniCPM4.Constraints.Regex;

/// <summary>
/// How Python's <c>json.dumps(ensure_ascii=False)</c> spells a code point inside a JSON string literal:
/// <c>"</c> → <c>\"</c>, <c>\</c> → <c>\\</c>, U+0008 <c>\b</c>, U+000C <c>\f</c>, U+000A <c>\n</c>, U+000D <c>\r</c>,
/// U+0009 <c>\t</c>, the other code points below U+0020 as <c>\u00xx</c> (lower-case hex), everything else raw UTF-8.
/// </summary>
internal static class JsonStringEncoding
{
    /// <summary>The code points that are written escaped: U+0000–U+001F, <c>"</c> and <c>\</c>.</summary>
    public static readonly CodePointSet Escaped =
        CodePointSet.Range(0, 0x1F).Union(CodePointSet.Single('"')).Union(CodePointSet.Single('\\'));

    /// <summary>The escape of <paramref name="cp"/>, or null when it is written as raw UTF-8.</summary>
    public static string? Escape(int cp) => cp switch
    {
        '"' => "\\\"",
        '\\' => "\\\\",
        '\b' => "\\b",
        '\f' => "\\f",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        < 0x20 => "\\u00" + cp.ToString("x2", CultureInfo.InvariantCulture),
        _ => null,
    };
}
