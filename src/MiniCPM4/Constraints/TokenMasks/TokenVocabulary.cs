using System.Text;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Constraints.TokenMasks;

/// <summary>
/// The bytes each token id adds to generated text, as the streaming detokenizer produces them: a piece's UTF-8 with
/// U+2581 as a space, a byte-fallback token its byte. A generation's first piece loses its leading space (the
/// detokenizer drops the dummy prefix), so a second table holds the bytes at the start of the output. Ids that add
/// no bytes or are not text (control and special tokens, added tokens, unknown) are never allowed by a grammar
/// (the stop ids are added by <see cref="ConstraintMatcher"/> when the output is complete).
/// </summary>
internal sealed class TokenVocabulary
{
    public TokenVocabulary(byte[]?[] bytes, byte[]?[] firstBytes)
    {
        if (bytes.Length != firstBytes.Length) throw new ArgumentException("the two tables differ in length");
        Bytes = bytes;
        FirstBytes = firstBytes;
        Trie = new TokenTrie(bytes);
        FirstTrie = new TokenTrie(firstBytes);
    }

    /// <summary>Token count (mask bits).</summary>
    public int Size => Bytes.Length;
    public int MaskWords => (Size + 31) / 32;
    public byte[]?[] Bytes { get; }
    public byte[]?[] FirstBytes { get; }
    public TokenTrie Trie { get; }
    public TokenTrie FirstTrie { get; }

    /// <summary>The table for <paramref name="tokenizer"/>.</summary>
    public static TokenVocabulary FromTokenizer(MiniCpmTokenizer tokenizer)
    {
        int n = tokenizer.VocabSize;
        var bytes = new byte[]?[n];
        var first = new byte[]?[n];
        for (int id = 0; id < n; id++)
        {
            switch (tokenizer.KindOf(id))
            {
                case TokenKind.Piece:
                case TokenKind.PieceWithLeadingSpace:
                {
                    string surface = tokenizer.SurfaceOf(id);
                    if (surface.Length == 0) break;
                    bytes[id] = Encoding.UTF8.GetBytes(surface);
                    bool drop = tokenizer.KindOf(id) == TokenKind.PieceWithLeadingSpace && tokenizer.DropsLeadingSpace;
                    first[id] = drop ? (surface.Length > 1 ? Encoding.UTF8.GetBytes(surface[1..]) : null) : bytes[id];
                    break;
                }
                case TokenKind.Byte:
                    bytes[id] = first[id] = [tokenizer.ByteValueOf(id)];
                    break;
            }
        }
        return new TokenVocabulary(bytes, first);
    }
}
