using MiniCPM4.Tokenization;
using NUnit.Framework;

namespace MiniCPM4.Tests.Tokenization;

public class AddedTokenTests
{
    private static MiniCpmTokenizer Chat => TestModel.Chat;

    private static string[] Pieces(int[] ids) => ids.Select(id => Chat.IdToToken(id)!).ToArray();

    [Test]
    public void AddedTokens_ExtendTheVocabulary()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Chat.VocabSize, Is.EqualTo(32002));
            Assert.That(Chat.AddedTokens, Is.EquivalentTo(TestModel.ChatTokens));
            Assert.That(Chat.TokenToId("<|im_start|>"), Is.EqualTo(32000));
            Assert.That(Chat.TokenToId("<|im_end|>"), Is.EqualTo(32001));
            Assert.That(Chat.IdToToken(32001), Is.EqualTo("<|im_end|>"));
            Assert.That(Chat.IdToToken(32002), Is.Null);
        });
    }

    [Test]
    public void AddedTokens_AreRecognisedInText_AndEachSegmentGetsTheDummyPrefix()
    {
        var ids = Chat.Encode("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
        Assert.That(Pieces(ids), Is.EqualTo(new[]
        {
            "<|im_start|>", "▁user", "<0x0A>", "Hello", "<|im_end|>", "▁", "<0x0A>", "<|im_start|>", "▁assistant",
                "<0x0A>",
        }));
        // The segment between added tokens is encoded exactly as the same text on its own.
        Assert.That(ids[1..4], Is.EqualTo(Chat.Encode("user\nHello")));
    }

    [Test]
    public void AddedTokens_AdjacentAndAtTheEdges()
    {
        Assert.That(Chat.Encode("<|im_end|><|im_start|>"), Is.EqualTo(new[] { 32001, 32000 }));
        Assert.That(Chat.Encode("<|im_end|>"), Is.EqualTo(new[] { 32001 }));
        Assert.That(Chat.Encode("x<|im_end|>", addBos: true),
            Is.EqualTo(new[] { 1, Chat.TokenToId("▁x")!.Value, 32001 }));
    }

    [Test]
    public void WithoutAddedTokens_TheMarkersAreOrdinaryText()
    {
        var ids = TestModel.Plain.Encode("<|im_end|>");
        Assert.That(ids, Has.Length.GreaterThan(1));
        Assert.That(ids, Has.None.GreaterThanOrEqualTo(32000));
        Assert.That(TestModel.Plain.Decode(ids), Is.EqualTo("<|im_end|>"));
    }

    [Test]
    public void LongestMatchWins()
    {
        var tokenizer =
            MiniCpmTokenizer.FromSentencePiece(new MemoryStream(TestModel.ModelBytes), new Dictionary<string, int>
        {
            ["<|im"] = 32000,
            ["<|im_start|>"] = 32001,
            ["<|im_start|>x"] = 32002,
        });
        Assert.Multiple(() =>
        {
            Assert.That(tokenizer.Encode("<|im_start|>x"), Is.EqualTo(new[] { 32002 }));
            Assert.That(tokenizer.Encode("<|im_start|>y")[0], Is.EqualTo(32001));
            Assert.That(tokenizer.Encode("<|im_end|>")[0], Is.EqualTo(32000));
        });
    }

    [Test]
    public void Decode_RendersAddedTokens_UnlessSkipped()
    {
        var ids = Chat.Encode("<|im_start|>assistant\nHi there<|im_end|>");
        Assert.Multiple(() =>
        {
            Assert.That(Chat.Decode(ids), Is.EqualTo("<|im_start|>assistant\nHi there<|im_end|>"));
            Assert.That(Chat.Decode(ids, skipSpecialTokens: true), Is.EqualTo("assistant\nHi there"));
        });
    }

    [Test]
    public void AddedToken_MayReplaceAModelPieceId()
    {
        // Checkpoints list <unk>/<s>/</s> among their added tokens; text spelling them then maps to the ids.
        var tokenizer =
            MiniCpmTokenizer.FromSentencePiece(new MemoryStream(TestModel.ModelBytes), new Dictionary<string,
            int> { ["<s>"] = 1 });
        Assert.Multiple(() =>
        {
            Assert.That(tokenizer.VocabSize, Is.EqualTo(32000));
            Assert.That(tokenizer.Encode("<s>hi"), Is.EqualTo(new[] { 1, tokenizer.TokenToId("▁hi")!.Value }));
            Assert.That(tokenizer.Decode([1, tokenizer.TokenToId("▁hi")!.Value]), Is.EqualTo("<s>hi"));
            Assert.That(tokenizer.Decode([1, tokenizer.TokenToId("▁hi")!.Value], skipSpecialTokens: true),
                Is.EqualTo("hi"));
        });
    }

    [Test]
    public void InvalidAddedTokens_AreRejected()
    {
        Assert.Multiple(() =>
        {
            Assert.Throws<ArgumentException>(() =>
                MiniCpmTokenizer.FromSentencePiece(new MemoryStream(TestModel.ModelBytes), new Dictionary<string,
                int> { [""] = 32000 }));
            Assert.Throws<ArgumentException>(() =>
                MiniCpmTokenizer.FromSentencePiece(new MemoryStream(TestModel.ModelBytes), new Dictionary<string,
                int> { ["<a>"] = -5 }));
            Assert.Throws<ArgumentException>(() =>
                MiniCpmTokenizer.FromSentencePiece(new MemoryStream(TestModel.ModelBytes), new Dictionary<string,
                int> { ["<a>"] = 32000, ["<b>"] = 32000 }));
        });
    }
}
