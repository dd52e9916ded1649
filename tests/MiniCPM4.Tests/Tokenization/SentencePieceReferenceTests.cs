using Microsoft.ML.Tokenizers;
using NUnit.Framework;

namespace MiniCPM4.Tests.Tokenization;

/// <summary>
/// Agreement with SentencePiece on random input (SentencePieceReferenceData.cs, produced by the SentencePiece library
/// itself) and with the naive reference algorithm; and the cause of Microsoft.ML.Tokenizers' disagreement.
/// </summary>
public class SentencePieceReferenceTests
{
    private static readonly Lazy<NaiveSentencePieceBpe> Naive =
        new(() => new NaiveSentencePieceBpe(TestModel.ModelBytes));

    private static LlamaTokenizer CreateLibrary() =>
        LlamaTokenizer.Create(new MemoryStream(TestModel.ModelBytes), addBeginOfSentence: false);

    [Test]
    public void Encode_AgreesWithSentencePiece_OnRandomTexts()
    {
        var tokenizer = TestModel.Plain;
        Assert.Multiple(() =>
        {
            foreach (var (text, ids) in SentencePieceReferenceData.Encoded)
                Assert.That(tokenizer.Encode(text), Is.EqualTo(ids), () =>
                    $"text: {System.Text.Json.JsonSerializer.Serialize(text)}");
        });
    }

    [Test]
    public void Decode_AgreesWithSentencePiece_OnRandomIds()
    {
        var tokenizer = TestModel.Plain;
        Assert.Multiple(() =>
        {
            foreach (var (ids, text) in SentencePieceReferenceData.Decoded)
                Assert.That(tokenizer.Decode(ids), Is.EqualTo(text), () => $"ids: {string.Join(", ", ids)}");
        });
    }

    [Test]
    public void Decode_OfEncode_RestoresRandomTexts()
    {
        var tokenizer = TestModel.Plain;
        Assert.Multiple(() =>
        {
            // A literal U+2581 in the input is indistinguishable from an escaped space, so it comes back as a space.
            foreach (var (text, _) in SentencePieceReferenceData.Encoded)
                Assert.That(tokenizer.Decode(tokenizer.Encode(text)), Is.EqualTo(text.Replace('\u2581', ' ')));
        });
    }

    /// <summary>The test model with normalizer_spec.remove_extra_whitespaces = true (a second normalizer_spec is merged
    /// in).</summary>
    private static byte[] RemoveExtraWhitespacesModel => [.. TestModel.ModelBytes, 0x1A, 0x02, 0x20, 0x01];

    [Test]
    public void Encode_AgreesWithSentencePiece_WhenRemovingExtraWhitespaces()
    {
        var tokenizer =
            MiniCPM4.Tokenization.MiniCpmTokenizer.FromSentencePiece(new MemoryStream(RemoveExtraWhitespacesModel));
        Assert.That(((SentencePieceNormalizer)tokenizer.Library.Normalizer!).RemoveExtraWhiteSpaces, Is.True);
        Assert.Multiple(() =>
        {
            foreach (var (text, ids) in SentencePieceReferenceData.EncodedRemovingExtraWhitespaces)
                Assert.That(tokenizer.Encode(text), Is.EqualTo(ids), () =>
                    $"text: {System.Text.Json.JsonSerializer.Serialize(text)}");
        });
    }

    /// <summary>Why whitespace normalization is not delegated to the library's SentencePieceNormalizer.</summary>
    [Test]
    public void LibraryNormalizer_DropsASingleCharacter_WhenRemovingExtraWhitespaces()
    {
        var normalizer =
            new SentencePieceNormalizer(removeExtraWhiteSpaces: true, addDummyPrefix: true, escapeWhiteSpaces: true,
            treatWhitespaceAsSuffix: false, specialTokens: null);
        Assert.That(normalizer.Normalize("a"), Is.EqualTo(""), "SentencePiece gives \"\u2581a\"");
        var tokenizer =
            MiniCPM4.Tokenization.MiniCpmTokenizer.FromSentencePiece(new MemoryStream(RemoveExtraWhitespacesModel));
        Assert.That(tokenizer.Encode("a"), Is.EqualTo(new[] { tokenizer.TokenToId("\u2581a")!.Value }));
    }

    [Test]
    public void Encode_AgreesWithNaiveReference_OnRandomStrings()
    {
        var tokenizer = TestModel.Plain;
        var random = new Random(12345);
        string[] alphabet =
            [.. "aaaaabbbcc   -==.\n\t0119éü中文字▁xyzAB".Select(c => c.ToString()), "😀", "🎉", "\U00020000"];
        for (int n = 0; n < 2000; n++)
        {
            var chars = new System.Text.StringBuilder();
            int length = random.Next(1, 60);
            while (chars.Length < length)
            {
                string c = alphabet[random.Next(alphabet.Length)];
                // Runs of one character are where merge order matters most.
                chars.Append(random.Next(5) == 0 ? string.Concat(Enumerable.Repeat(c, random.Next(2, 30))) : c);
            }

            string text = chars.ToString();
            Assert.That(tokenizer.Encode(text), Is.EqualTo(Naive.Value.Encode(text)), () =>
                $"text: {System.Text.Json.JsonSerializer.Serialize(text)}");
        }
    }

    [Test]
    public void NaiveReference_AgreesWithSentencePiece()
    {
        // Keeps the naive reference honest: it must reproduce SentencePiece itself.
        foreach (var (text, ids) in SentencePieceReferenceData.Encoded.Take(100))
            Assert.That(Naive.Value.Encode(text), Is.EqualTo(ids));
    }

    /// <summary>
    /// Documents why the BPE merge is reimplemented: Microsoft.ML.Tokenizers 2.0.1 merges equally scored pairs
    /// rightmost-first (its SymbolPair.CompareTo orders ties by descending left index in a min-heap), SentencePiece
    /// leftmost-first. On a run of 40 'a' that gives "▁aa aa aaaa×9" instead of "▁a aaaa×9 aa a".
    /// </summary>
    [Test]
    public void Library_MergesTiesRightmostFirst_WhichIsWhyTheMergeIsReplaced()
    {
        const string text = "Repeated aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        var golden = TestModel.GoldenCases.Single(c => c.Text == text);
        var library = CreateLibrary();
        int[] libraryIds = library.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false).ToArray();

        Assert.Multiple(() =>
        {
            // The library is wrong on this case ...
            Assert.That(libraryIds, Is.Not.EqualTo(golden.Ids));
            // ... in exactly the way a rightmost-first tie break predicts ...
            Assert.That(libraryIds, Is.EqualTo(Naive.Value.Encode(text, rightmostOnTies: true)));
            Assert.That(libraryIds.Select(id => TestModel.Plain.IdToToken(id)),
                Is.EqualTo(new[] { "▁Re", "pe", "ated", "▁aa", "aa" }.Concat(Enumerable.Repeat("aaaa", 9))));
            // ... while SentencePiece (leftmost first) and this tokenizer agree.
            Assert.That(Naive.Value.Encode(text), Is.EqualTo(golden.Ids));
            Assert.That(TestModel.Plain.Encode(text), Is.EqualTo(golden.Ids));
        });
    }

    [Test]
    public void Library_MatchesRightmostFirstReference_OnRandomRuns()
    {
        // The tie order is the whole difference: on runs of repeated characters the library always equals the
        // rightmost-first variant of the reference, and often differs from SentencePiece.
        var library = CreateLibrary();
        int differences = 0;
        foreach (string c in new[] { "a", "e", "0", "=", "-", ".", " ", "\n", "中", "o" })
        {
            for (int n = 1; n <= 40; n++)
            {
                string text = "x" + string.Concat(Enumerable.Repeat(c, n));
                var libraryIds =
                    library.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false).ToArray();
                Assert.That(libraryIds, Is.EqualTo(Naive.Value.Encode(text, rightmostOnTies: true)), () =>
                    $"text: {System.Text.Json.JsonSerializer.Serialize(text)}");
                Assert.That(TestModel.Plain.Encode(text), Is.EqualTo(Naive.Value.Encode(text)));
                if (!libraryIds.SequenceEqual(TestModel.Plain.Encode(text)))
                    differences++;
            }
        }

        Assert.That(differences, Is.GreaterThan(0));
        TestContext.Out.WriteLine($"library differs from SentencePiece on {differences} of 400 runs");
    }
}
