using NUnit.Framework;

namespace MiniCPM4.Tests.Tokenization;

public class RoundTripTests
{
    private static readonly string[] Texts =
    [
        "Hello, world! This is plain ASCII text with punctuation: (a+b)*c = d; x_1 <= 42.",
        "你好，世界！这是一个中文句子，包含常见的汉字和标点符号。",
        "日本語のテキストとカタカナ、ひらがな。한국어 문장도 있습니다.",
        "Emoji 😀🎉👍🏽 and ZWJ sequences 👨‍👩‍👧‍👦 and flags 🇯🇵🇩🇪.",
        "𠀀𠀁𪚥 supplementary-plane CJK",
        "  leading and trailing  ",
        "runs of spaces:          and tabs\t\t\t\tand more",
        "line one\nline two\r\nline three\n\n\nafter blank lines\n",
        "\n",
        "\n\nstarts with newlines",
        " ",
        "   ",
        "a",
        "Mixed: café ñandú Ærø — “quotes” … ½ ∑ √ ∞",
        "code:\n    if (x) {\n        return y;\n    }\n",
        "control \u0001\u0002\u001f and NUL \0 inside",
        "",
    ];

    private static IEnumerable<TestCaseData> Cases() =>
        Texts.Select(t =>
            new TestCaseData(t).SetArgDisplayNames(
            System.Text.Json.JsonSerializer.Serialize(t.Length > 30 ? t[..30] : t)));

    [TestCaseSource(nameof(Cases))]
    public void DecodeOfEncode_IsIdentity(string text)
    {
        var tokenizer = TestModel.Plain;
        Assert.That(tokenizer.Decode(tokenizer.Encode(text)), Is.EqualTo(text));
    }

    [TestCaseSource(nameof(Cases))]
    public void DecodeOfEncode_IsIdentity_WithBos(string text)
    {
        var tokenizer = TestModel.Plain;
        var ids = tokenizer.Encode(text, addBos: true);
        Assert.That(ids[0], Is.EqualTo(tokenizer.BosId));
        // <s> is a CONTROL piece: invisible, and the dummy prefix after it is still dropped.
        Assert.That(tokenizer.Decode(ids), Is.EqualTo(text));
    }

    [TestCaseSource(nameof(Cases))]
    public void DecodeOfEncode_IsIdentity_AroundAddedTokens(string text)
    {
        var tokenizer = TestModel.Chat;
        string chat = $"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n{text}";
        Assert.That(tokenizer.Decode(tokenizer.Encode(chat)), Is.EqualTo(chat));
    }

    [Test]
    public void Decode_IgnoresIdsOutsideTheVocabulary()
    {
        var tokenizer = TestModel.Plain;
        int[] ids = [.. tokenizer.Encode("Hello"), 32000, 99999, -1, .. tokenizer.Encode("world")];
        Assert.That(tokenizer.Decode(ids), Is.EqualTo("Hello world"));
    }

    [Test]
    public void Decode_FollowsSentencePieceConventions()
    {
        var t = TestModel.Plain;
        int Id(string piece) => t.TokenToId(piece)!.Value;
        Assert.Multiple(() =>
        {
            // Only the first piece's leading space is dropped, even when that piece is just "▁".
            Assert.That(t.Decode([Id("▁"), Id("▁x")]), Is.EqualTo(" x"));
            // Control pieces are invisible and do not use up the dropped space.
            Assert.That(t.Decode([Id("<s>"), Id("▁x"), Id("</s>"), Id("▁y")]), Is.EqualTo("x y"));
            // <unk> is " ⁇ ".
            Assert.That(t.Decode([Id("<unk>"), Id("▁x")]), Is.EqualTo(" \u2047  x"));
            // Bytes are combined into UTF-8; each invalid byte is one U+FFFD.
            Assert.That(t.Decode([Id("<0xE4>"), Id("<0xB8>"), Id("<0xAD>")]), Is.EqualTo("中"));
            Assert.That(t.Decode([Id("<0xE4>"), Id("<0xB8>"), Id("x")]), Is.EqualTo("\uFFFD\uFFFDx"));
            Assert.That(t.Decode([Id("<0xC0>"), Id("<0x80>")]), Is.EqualTo("\uFFFD\uFFFD")); // overlong
            // surrogate
            Assert.That(t.Decode([Id("<0xED>"), Id("<0xA0>"), Id("<0x80>")]), Is.EqualTo("\uFFFD\uFFFD\uFFFD"));
            Assert.That(t.Decode([Id("<0xF0>"), Id("<0x9F>"), Id("<0x98>"), Id("<0x80>")]), Is.EqualTo("😀"));
            // A byte run is cut by any other piece.
            Assert.That(t.Decode([Id("<0xE4>"), Id("<s>"), Id("<0xB8>"), Id("<0xAD>")]),
                Is.EqualTo("\uFFFD\uFFFD\uFFFD"));
        });
    }

    [Test]
    public void Encode_ReplacesLoneSurrogatesLikeUtf8Conversion()
    {
        var t = TestModel.Plain;
        Assert.That(t.Decode(t.Encode("a\uD800b\uDC00")), Is.EqualTo("a\uFFFDb\uFFFD"));
    }

    [Test]
    public void Tokenizer_IsThreadSafe()
    {
        var t = TestModel.Chat;
        var texts = SentencePieceReferenceData.Encoded.Select(e => e.Text).ToArray();
        var expected = texts.Select(x => t.Encode(x)).ToArray();
        Parallel.For(0, texts.Length * 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            int k = i % texts.Length;
            var ids = t.Encode(texts[k]);
            if (!ids.SequenceEqual(expected[k]) || t.Decode(ids) != t.Decode(expected[k]))
                throw new InvalidOperationException($"mismatch on text {k}");
        });
    }
}
