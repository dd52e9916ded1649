namespace MiniCPM4.Tokenization;

/// <summary>
/// Turns a stream of token ids into text as the ids arrive. Every <see cref="Push"/> returns only text that can no
/// longer change; <see cref="Flush"/> returns what is still held back. For any id sequence, the concatenation of all
/// <see cref="Push"/> results followed by <see cref="Flush"/> equals <see cref="MiniCpmTokenizer.Decode"/> of the whole
/// sequence.
/// </summary>
/// <remarks>
/// Text is held back only while byte-fallback pieces (<c>&lt;0xNN&gt;</c>) form an incomplete UTF-8 character (at most
/// three bytes). The leading-space rule is decided from the past alone (has this text segment produced anything
/// yet?), so nothing already returned is ever revised. Each call does a bounded amount of work. Instances are not
/// thread-safe; create one per generation stream.
/// </remarks>
public sealed class StreamingDetokenizer
{
    private readonly MiniCpmTokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly byte[] _pending = new byte[4];
    private int _pendingCount;
    private bool _atSegmentStart = true;

    internal StreamingDetokenizer(MiniCpmTokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>Whether text (incomplete UTF-8 bytes) is being held back.</summary>
    public bool HasPendingText => _pendingCount > 0;

    /// <summary>Adds one id and returns the text that became stable (possibly empty).</summary>
    public string Push(int id)
    {
        var kind = _tokenizer.KindOf(id);
        switch (kind)
        {
            case TokenKind.None:
                return "";

            case TokenKind.Byte:
                _pending[_pendingCount++] = _tokenizer.ByteValueOf(id);
                _atSegmentStart = false; // the bytes always produce at least one character
                return DrainBytes(final: false);

            case TokenKind.AddedSpecial:
            case TokenKind.AddedText:
            {
                string held = DrainBytes(final: true);
                _atSegmentStart = true;
                if (_skipSpecialTokens && kind == TokenKind.AddedSpecial)
                    return held;
                string content = _tokenizer.SurfaceOf(id);
                return held.Length == 0 ? content : held + content;
            }

            default:
            {
                string held = DrainBytes(final: true);
                string text;
                if (kind == TokenKind.Control)
                {
                    text = "";
                }
                else if (kind == TokenKind.PieceWithLeadingSpace && _atSegmentStart && _tokenizer.DropsLeadingSpace)
                {
                    text = _tokenizer.SurfaceOf(id)[1..];
                    _atSegmentStart = false;
                }
                else
                {
                    text = _tokenizer.SurfaceOf(id);
                }

                if (text.Length > 0)
                    _atSegmentStart = false;
                return held.Length == 0 ? text : held + text;
            }
        }
    }

    /// <summary>Returns the text still held back and resets the detokenizer to its initial state.</summary>
    public string Flush()
    {
        string rest = DrainBytes(final: true);
        _atSegmentStart = true;
        return rest;
    }

    /// <summary>
    /// Decodes the pending bytes, keeping a trailing incomplete (but so far well-formed) character unless
    /// <paramref name="final"/>. Invalid bytes become U+FFFD one by one, as in SentencePiece.
    /// </summary>
    private string DrainBytes(bool final)
    {
        if (_pendingCount == 0)
            return "";

        Span<char> output = stackalloc char[8];
        int written = 0;
        int start = 0;
        while (start < _pendingCount)
        {
            byte b0 = _pending[start];
            int available = _pendingCount - start;
            if (b0 < 0x80)
            {
                output[written++] = (char)b0;
                start++;
                continue;
            }

            int need = b0 >= 0xC0 && b0 <= 0xDF ? 2 : b0 >= 0xE0 && b0 <= 0xEF ? 3 : b0 >= 0xF0 && b0 <= 0xF7 ? 4 : 0;
            bool trailsOk = need > 0;
            for (int k = 1; trailsOk && k < Math.Min(need, available); k++)
                trailsOk = SentencePieceUtf8.IsTrail(_pending[start + k]);

            if (trailsOk && available < need && !final)
                break; // a well-formed prefix: wait for the rest of the character

            int cp = -1;
            if (trailsOk && available >= need)
            {
                cp = need switch
                {
                    2 => ((b0 & 0x1F) << 6) | (_pending[start + 1] & 0x3F),
                    3 => ((b0 & 0x0F) << 12) | ((_pending[start + 1] & 0x3F) << 6) | (_pending[start + 2] & 0x3F),
                    _ => ((b0 & 0x07) << 18) | ((_pending[start + 1] & 0x3F) << 12) | (
                        (_pending[start + 2] & 0x3F) << 6) | (_pending[start + 3] & 0x3F),
                };
                int min = need == 2 ? 0x80 : need == 3 ? 0x800 : 0x10000;
                if (cp < min || !SentencePieceUtf8.IsValidCodePoint(cp))
                    cp = -1;
            }

            if (cp < 0)
            {
                output[written++] = SentencePieceUtf8.Replacement;
                start++;
            }
            else if (cp < 0x10000)
            {
                output[written++] = (char)cp;
                start += need;
            }
            else
            {
                cp -= 0x10000;
                output[written++] = (char)(0xD800 + (cp >> 10));
                output[written++] = (char)(0xDC00 + (cp & 0x3FF));
                start += need;
            }
        }

        // Keep the unconsumed tail (at most 3 bytes) at the front of the buffer.
        for (int k = start; k < _pendingCount; k++)
            _pending[k - start] = _pending[k];
        _pendingCount -= start;
        return written == 0 ? "" : new string(output[..written]);
    }
}
