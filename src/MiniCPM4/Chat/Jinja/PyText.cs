using System.Globalization;
using System.Text;

namespace MiniCPM4.Chat.Jinja;

/// <summary>Python's <c>str</c> semantics that differ from .NET's: whitespace, splitting, casing, code-point
/// indexing.</summary>
internal static class PyText
{
    /// <summary>Python's <c>str.isspace</c> for one UTF-16 unit (includes \x1c–\x1f, which .NET does not).</summary>
    public static bool IsSpace(char c) =>
        c is ' ' or '\t' or '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x1f' ||
                                          (c > 0x7f && (char.IsWhiteSpace(c) || c == '\u0085'));

    public static string FromCodePoint(int code) =>
        code is >= 0xD800 and <= 0xDFFF ? ((char)code).ToString() : char.ConvertFromUtf32(code);

    public static string Strip(string s, string? chars = null) => RStrip(LStrip(s, chars), chars);

    public static string LStrip(string s, string? chars = null)
    {
        int i = 0;
        while (i < s.Length && (chars is null ? IsSpace(s[i]) : chars.Contains(s[i]))) i++;
        return s[i..];
    }

    public static string RStrip(string s, string? chars = null)
    {
        int i = s.Length;
        while (i > 0 && (chars is null ? IsSpace(s[i - 1]) : chars.Contains(s[i - 1]))) i--;
        return s[..i];
    }

    /// <summary><c>str.split(sep=None, maxsplit=-1)</c>.</summary>
    public static List<object?> Split(string s, string? sep, long maxSplit)
    {
        var result = new List<object?>();
        if (sep is null)
        {
            int i = 0, splits = 0;
            while (true)
            {
                while (i < s.Length && IsSpace(s[i])) i++;
                if (i >= s.Length) break;
                if (maxSplit >= 0 && splits >= maxSplit)
                {
                    result.Add(RStrip(s[i..]));
                    break;
                }
                int start = i;
                while (i < s.Length && !IsSpace(s[i])) i++;
                result.Add(s[start..i]);
                splits++;
            }
            return result;
        }
        if (sep.Length == 0) throw new JinjaRuntimeError("ValueError: empty separator");
        int pos = 0, count = 0;
        while (maxSplit < 0 || count < maxSplit)
        {
            int at = s.IndexOf(sep, pos, StringComparison.Ordinal);
            if (at < 0) break;
            result.Add(s[pos..at]);
            pos = at + sep.Length;
            count++;
        }
        result.Add(s[pos..]);
        return result;
    }

    /// <summary><c>str.rsplit(sep=None, maxsplit=-1)</c>.</summary>
    public static List<object?> RSplit(string s, string? sep, long maxSplit)
    {
        if (maxSplit < 0) return Split(s, sep, -1);
        var result = new List<object?>();
        if (sep is null)
        {
            int i = s.Length, splits = 0;
            while (true)
            {
                while (i > 0 && IsSpace(s[i - 1])) i--;
                if (i <= 0) break;
                if (splits >= maxSplit)
                {
                    result.Add(LStrip(s[..i]));
                    break;
                }
                int end = i;
                while (i > 0 && !IsSpace(s[i - 1])) i--;
                result.Add(s[i..end]);
                splits++;
            }
            result.Reverse();
            return result;
        }
        if (sep.Length == 0) throw new JinjaRuntimeError("ValueError: empty separator");
        int pos = s.Length, count = 0;
        while (count < maxSplit)
        {
            int at = pos - sep.Length < 0 ? -1 : s.LastIndexOf(sep, pos - 1, pos, StringComparison.Ordinal);
            if (at < 0 || at + sep.Length > pos) break;
            result.Add(s[(at + sep.Length)..pos]);
            pos = at;
            count++;
        }
        result.Add(s[..pos]);
        result.Reverse();
        return result;
    }

    private static bool IsLineBreak(char c) =>
        c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\u0085' or '\u2028' or '\u2029';

    /// <summary><c>str.splitlines(keepends=False)</c>.</summary>
    public static List<string> SplitLines(string s, bool keepEnds = false)
    {
        var lines = new List<string>();
        int start = 0, i = 0;
        while (i < s.Length)
        {
            if (!IsLineBreak(s[i]))
            {
                i++;
                continue;
            }
            int eol = i;
            i += s[i] == '\r' && i + 1 < s.Length && s[i + 1] == '\n' ? 2 : 1;
            lines.Add(keepEnds ? s[start..i] : s[start..eol]);
            start = i;
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }

    public static string Upper(string s) => s.ToUpperInvariant();
    public static string Lower(string s) => s.ToLowerInvariant();

    /// <summary><c>str.capitalize</c>: first character upper case, the rest lower case.</summary>
    public static string Capitalize(string s)
    {
        if (s.Length == 0) return s;
        int first = char.IsHighSurrogate(s[0]) && s.Length > 1 ? 2 : 1;
        return s[..first].ToUpperInvariant() + s[first..].ToLowerInvariant();
    }

    /// <summary><c>str.title</c>: upper case after every non-letter, lower case elsewhere.</summary>
    public static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (char c in s)
        {
            bool cased = char.IsLetter(c);
            sb.Append(cased ? previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c) : c);
            previousCased = cased;
        }
        return sb.ToString();
    }

    public static bool HasSurrogates(string s)
    {
        foreach (char c in s)
            if (char.IsSurrogate(c)) return true;
        return false;
    }

    /// <summary>The string's characters as Python sees them (code points).</summary>
    public static List<string> CodePoints(string s)
    {
        var list = new List<string>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                list.Add(s.Substring(i, 2));
                i++;
            }
            else
            {
                list.Add(s[i].ToString());
            }
        }
        return list;
    }

    /// <summary>Python's <c>len(str)</c>.</summary>
    public static int Length(string s)
    {
        if (!HasSurrogates(s)) return s.Length;
        int n = 0;
        for (int i = 0; i < s.Length; i++, n++)
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
        return n;
    }

    /// <summary>Python's <c>repr(str)</c>.</summary>
    public static string Repr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder(s.Length + 2).Append(quote);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            switch (c)
            {
                case '\\': sb.Append("\\\\"); continue;
                case '\n': sb.Append("\\n"); continue;
                case '\r': sb.Append("\\r"); continue;
                case '\t': sb.Append("\\t"); continue;
            }
            if (c == quote)
            {
                sb.Append('\\').Append(c);
                continue;
            }
            int code = c;
            int width = 1;
            if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                code = char.ConvertToUtf32(c, s[i + 1]);
                width = 2;
            }
            if (IsPrintable(code))
            {
                sb.Append(s, i, width);
            }
            else if (code < 0x100)
            {
                sb.Append("\\x").Append(code.ToString("x2", CultureInfo.InvariantCulture));
            }
            else if (code < 0x10000)
            {
                sb.Append("\\u").Append(code.ToString("x4", CultureInfo.InvariantCulture));
            }
            else
            {
                sb.Append("\\U").Append(code.ToString("x8", CultureInfo.InvariantCulture));
            }
            i += width - 1;
        }
        return sb.Append(quote).ToString();
    }

    /// <summary>Python's <c>str.isprintable</c> for one code point (approximated by Unicode categories).</summary>
    private static bool IsPrintable(int code)
    {
        if (code == ' ') return true;
        if (code < 0x20 || code == 0x7f) return false;
        if (code is >= 0xD800 and <= 0xDFFF) return false;
        var category = code < 0x10000 ? CharUnicodeInfo.GetUnicodeCategory((char)code)
            : CharUnicodeInfo.GetUnicodeCategory(code);
        return category switch
        {
            UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate or UnicodeCategory
                .PrivateUse or
                UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator or UnicodeCategory
                    .ParagraphSeparator or
                UnicodeCategory.SpaceSeparator => false,
            _ => true,
        };
    }
}
