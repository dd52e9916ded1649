using System.Text;
using System.Text.RegularExpressions;

namespace MiniCPM4.BindingsGenerator;

/// <summary>
/// The raw bytes of the header, used for what the AST does not carry: ordinary /* */ comments
/// (turned into XML doc comments) and the position of each #define (so constants keep header order).
/// clang's offsets are byte offsets, so everything here works on bytes and decodes UTF-8 at the end.
/// </summary>
internal sealed partial class HeaderText
{
    private readonly byte[] _bytes;

    public HeaderText(byte[] bytes) => _bytes = bytes;

    /// <summary>The block comment ending right before <paramref name="offset"/> with no blank line in
    /// between.</summary>
    public string? PrecedingComment(int offset, bool skipTypedefKeyword)
    {
        if (offset <= 0 || offset > _bytes.Length)
            return null;
        int i = offset;
        if (skipTypedefKeyword)
        {
            int j = SkipWhitespaceBackward(i, out _);
            if (j >= 7 && Encoding.ASCII.GetString(_bytes, j - 7, 7) == "typedef")
                i = j - 7;
        }
        int end = SkipWhitespaceBackward(i, out int newlines);
        if (newlines > 1 || end < 2 || _bytes[end - 1] != '/' || _bytes[end - 2] != '*')
            return null;
        int start = LastIndexOf("/*"u8, end - 2);
        if (start < 0 || !StartsLine(start))
            return null; // no comment, or the trailing comment of the previous line
        return Clean(Encoding.UTF8.GetString(_bytes, start + 2, end - 2 - (start + 2)));
    }

    /// <summary>The block comment following the declaration that starts at <paramref name="offset"/>, on the same
    /// line.</summary>
    public string? TrailingComment(int offset)
    {
        if (offset < 0 || offset >= _bytes.Length)
            return null;
        int i = offset;
        while (i < _bytes.Length && _bytes[i] != ';' && _bytes[i] != '\n')
            i++;
        if (i >= _bytes.Length || _bytes[i] != ';')
            return null;
        return CommentAfter(i + 1);
    }

    private string? CommentAfter(int i)
    {
        while (i < _bytes.Length && (_bytes[i] == ' ' || _bytes[i] == '\t'))
            i++;
        if (i + 1 >= _bytes.Length || _bytes[i] != '/' || _bytes[i + 1] != '*')
            return null;
        int close = IndexOf("*/"u8, i + 2);
        if (close < 0)
            return null;
        return Clean(Encoding.UTF8.GetString(_bytes, i + 2, close - (i + 2)));
    }

    /// <summary>
    /// Finds "#define NAME value" in the header: returns its byte offset (or -1) and the comment
    /// documenting it (trailing on the same line, else a comment block right above it).
    /// </summary>
    public (int Offset, string? Doc) FindDefine(string name)
    {
        string text = Encoding.UTF8.GetString(_bytes);
        Match m =
            Regex.Match(text, @"^[ \t]*#[ \t]*define[ \t]+" + Regex.Escape(name) + @"\b[^\n]*", RegexOptions.Multiline);
        if (!m.Success)
            return (-1, null);
        int byteStart = Encoding.UTF8.GetByteCount(text.AsSpan(0, m.Index));
        string line = m.Value;
        int commentAt = line.IndexOf("/*", StringComparison.Ordinal);
        string? doc = null;
        if (commentAt >= 0)
            doc = CommentAfter(byteStart + Encoding.UTF8.GetByteCount(line.AsSpan(0, commentAt)));
        doc ??= PrecedingComment(byteStart, skipTypedefKeyword: false);
        return (byteStart, doc);
    }

    private int SkipWhitespaceBackward(int i, out int newlines)
    {
        newlines = 0;
        while (i > 0 && _bytes[i - 1] is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n')
        {
            if (_bytes[i - 1] == '\n')
                newlines++;
            i--;
        }
        return i;
    }

    /// <summary>True if only blanks precede <paramref name="i"/> on its line.</summary>
    private bool StartsLine(int i)
    {
        while (i > 0 && _bytes[i - 1] is (byte)' ' or (byte)'\t')
            i--;
        return i == 0 || _bytes[i - 1] == '\n';
    }

    private int IndexOf(ReadOnlySpan<byte> needle, int from)
    {
        int k = _bytes.AsSpan(from).IndexOf(needle);
        return k < 0 ? -1 : from + k;
    }

    private int LastIndexOf(ReadOnlySpan<byte> needle, int before) => _bytes.AsSpan(0, before).LastIndexOf(needle);

    /// <summary>Strips comment decoration: leading '*' columns, banner lines, surrounding blank lines.</summary>
    private static string? Clean(string body)
    {
        var lines = new List<string>();
        foreach (string raw in body.Replace("\r", "").Split('\n'))
        {
            string line = raw.Trim();
            if (line.StartsWith('*'))
                line = line[1..].Trim();
            if (line.Length > 0 && BannerRegex().IsMatch(line))
                continue;
            lines.Add(line);
        }
        while (lines.Count > 0 && lines[0].Length == 0)
            lines.RemoveAt(0);
        while (lines.Count > 0 && lines[^1].Length == 0)
            lines.RemoveAt(lines.Count - 1);
        return lines.Count == 0 ? null : string.Join('\n', lines);
    }

    [GeneratedRegex(@"^[-=*/ ]+$")]
    private static partial Regex BannerRegex();
}
