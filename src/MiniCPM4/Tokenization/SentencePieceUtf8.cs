using System.Text;

namespace MiniCPM4.Tokenization;

/// <summary>
/// UTF-8 decoding of byte-fallback pieces the way SentencePiece does it (<c>util.h</c> <c>DecodeUTF8</c> /
/// <c>IsValidDecodeUTF8</c>, used by <c>SentencePieceProcessor::Decode</c>): at every position either one complete,
/// well-formed character (no overlong forms, no surrogates, at most U+10FFFF) is consumed, or a single byte is
/// consumed and replaced by U+FFFD. So every byte of a broken sequence becomes its own U+FFFD (unlike .NET's
/// decoder, which replaces a maximal invalid subsequence with one U+FFFD).
/// </summary>
internal static class SentencePieceUtf8
{
    public const char Replacement = '\uFFFD';

    /// <summary>Decodes a whole run of bytes (the batch path of <see cref="MiniCpmTokenizer.Decode"/>).</summary>
    public static void Decode(ReadOnlySpan<byte> bytes, StringBuilder output)
    {
        int offset = 0;
        while (offset < bytes.Length)
        {
            int consumed = DecodeOne(bytes[offset..], out int codePoint);
            if (consumed == 0)
            {
                output.Append(Replacement);
                offset += 1;
            }
            else
            {
                AppendCodePoint(output, codePoint);
                offset += consumed;
            }
        }
    }

    /// <summary>
    /// Port of SentencePiece's <c>DecodeUTF8</c>: returns the number of bytes of the well-formed character at the
    /// start of <paramref name="s"/>, or 0 when it is not one (too short, bad trail byte, overlong, surrogate, or out
    /// of range).
    /// </summary>
    private static int DecodeOne(ReadOnlySpan<byte> s, out int codePoint)
    {
        codePoint = 0;
        int len = s.Length;
        byte b0 = s[0];
        if (b0 < 0x80)
        {
            codePoint = b0;
            return 1;
        }

        if (len >= 2 && (b0 & 0xE0) == 0xC0)
        {
            int cp = ((b0 & 0x1F) << 6) | (s[1] & 0x3F);
            if (IsTrail(s[1]) && cp >= 0x80 && IsValidCodePoint(cp))
            {
                codePoint = cp;
                return 2;
            }
        }
        else if (len >= 3 && (b0 & 0xF0) == 0xE0)
        {
            int cp = ((b0 & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
            if (IsTrail(s[1]) && IsTrail(s[2]) && cp >= 0x800 && IsValidCodePoint(cp))
            {
                codePoint = cp;
                return 3;
            }
        }
        else if (len >= 4 && (b0 & 0xF8) == 0xF0)
        {
            int cp = ((b0 & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
            if (IsTrail(s[1]) && IsTrail(s[2]) && IsTrail(s[3]) && cp >= 0x10000 && IsValidCodePoint(cp))
            {
                codePoint = cp;
                return 4;
            }
        }

        return 0;
    }

    internal static bool IsTrail(byte b) => (b & 0xC0) == 0x80;

    internal static bool IsValidCodePoint(int cp) => cp < 0xD800 || (cp >= 0xE000 && cp <= 0x10FFFF);

    internal static void AppendCodePoint(StringBuilder sb, int cp)
    {
        if (cp < 0x10000)
        {
            sb.Append((char)cp);
        }
        else
        {
            cp -= 0x10000;
            sb.Append((char)(0xD800 + (cp >> 10)));
            sb.Append((char)(0xDC00 + (cp & 0x3FF)));
        }
    }
}
