using NUnit.Framework;
using System.Text;
using MiniCPM4.Constraints.TokenMasks;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Constraints.Tests;

/// <summary>Vocabularies for the mask tests: the 32k SentencePiece tokenizer of the test data, and small synthetic
/// ones.</summary>
internal static class TestVocabularies
{
    private static readonly Lazy<MiniCpmTokenizer> SentencePieceTokenizer = new(() =>
    {
        using var stream =
            File.OpenRead(Path.Combine(TestContext.CurrentContext.TestDirectory, "TestData", "llama-sp-bpe-32k.model"));
        return MiniCpmTokenizer.FromSentencePiece(stream);
    });

    private static readonly Lazy<TokenVocabulary> SentencePieceVocabulary =
        new(() => TokenVocabulary.FromTokenizer(SentencePieceTokenizer.Value));

    public static MiniCpmTokenizer Tokenizer => SentencePieceTokenizer.Value;
    public static TokenVocabulary SentencePiece => SentencePieceVocabulary.Value;

    /// <summary>Random byte strings: ASCII fragments of JSON, whole and split UTF-8 characters, single bytes.</summary>
    public static TokenVocabulary Synthetic(int seed, int size = 3000)
    {
        var rng = new Random(seed);
        string[] fragments =
            ["{", "}", "[", "]", ",", ":", "\"", " ", "\\", "\\\"", "\\n", "\\u00", "true", "false", "null",
            "-", "0", "1", "9", ".", "e", "E", "+", "a", "b", "z", "A", "é", "€", "😀", "\n", "\t", "x", "_", "/"];
        var tokens = new List<byte[]?>();
        for (int b = 0; b < 256; b++) tokens.Add([(byte)b]);  // byte fallback
        var seen = new HashSet<string>();
        while (tokens.Count < size)
        {
            var sb = new StringBuilder();
            int parts = 1 + rng.Next(4);
            for (int i = 0; i < parts; i++) sb.Append(fragments[rng.Next(fragments.Length)]);
            var bytes = Encoding.UTF8.GetBytes(sb.ToString());
            // Some tokens end inside a multi-byte character, as byte-level BPE pieces do.
            if (bytes.Length > 1 && rng.Next(8) == 0) bytes = bytes[..^1];
            if (seen.Add(Convert.ToHexString(bytes))) tokens.Add(bytes);
        }
        tokens.Add(null);  // a control token: never allowed
        var table = tokens.ToArray();
        return new TokenVocabulary(table, table);
    }
}
