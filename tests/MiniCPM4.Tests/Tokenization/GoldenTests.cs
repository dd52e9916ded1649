using Microsoft.ML.Tokenizers;
using NUnit.Framework;

namespace MiniCPM4.Tests.Tokenization;

/// <summary>Agreement with the SentencePiece C++ library (TestData/tokenizer-golden.json).</summary>
public class GoldenTests
{
    private static IEnumerable<TestCaseData> Cases() =>
        TestModel.GoldenCases.Select(c => new TestCaseData(c).SetArgDisplayNames(c.ToString()));

    [TestCaseSource(nameof(Cases))]
    public void Encode_MatchesSentencePieceIds(TestModel.GoldenCase golden)
    {
        Assert.That(TestModel.Plain.Encode(golden.Text), Is.EqualTo(golden.Ids));
    }

    [TestCaseSource(nameof(Cases))]
    public void Encode_MatchesSentencePiecePieces(TestModel.GoldenCase golden)
    {
        var tokenizer = TestModel.Plain;
        var pieces = tokenizer.Encode(golden.Text).Select(id => tokenizer.IdToToken(id)).ToArray();
        Assert.That(pieces, Is.EqualTo(golden.Pieces));
    }

    [TestCaseSource(nameof(Cases))]
    public void Decode_RestoresText(TestModel.GoldenCase golden)
    {
        Assert.That(TestModel.Plain.Decode(golden.Ids), Is.EqualTo(golden.Text));
    }

    [TestCaseSource(nameof(Cases))]
    public void Pieces_MapToGoldenIds(TestModel.GoldenCase golden)
    {
        var ids = golden.Pieces.Select(p => TestModel.Plain.TokenToId(p)).ToArray();
        Assert.That(ids, Is.EqualTo(golden.Ids.Cast<int?>().ToArray()));
    }

    [Test]
    public void GoldenFile_HasAllCases()
    {
        Assert.That(TestModel.GoldenCases, Has.Count.EqualTo(25));
    }

    [Test]
    public void EncodeWithBos_PrependsBos()
    {
        Assert.That(TestModel.Plain.Encode("Hello world!", addBos: true), Is.EqualTo(new[] { 1, 15043, 3186, 29991 }));
    }

    [Test]
    public void SpecialIds_ComeFromTheModel()
    {
        var t = TestModel.Plain;
        Assert.Multiple(() =>
        {
            Assert.That(t.VocabSize, Is.EqualTo(32000));
            Assert.That(t.UnkId, Is.EqualTo(0));
            Assert.That(t.BosId, Is.EqualTo(1));
            Assert.That(t.EosId, Is.EqualTo(2));
            Assert.That(t.AddBosByDefault, Is.True);
            Assert.That(t.AddedTokens, Is.Empty);
            Assert.That(t.ChatTemplate, Is.Null);
            Assert.That(t.IdToToken(0), Is.EqualTo("<unk>"));
            Assert.That(t.IdToToken(1), Is.EqualTo("<s>"));
            Assert.That(t.IdToToken(259), Is.EqualTo("▁▁"));
            Assert.That(t.IdToToken(32000), Is.Null);
            Assert.That(t.IdToToken(-1), Is.Null);
            Assert.That(t.TokenToId("▁Hello"), Is.EqualTo(15043));
            Assert.That(t.TokenToId("no such piece"), Is.Null);
        });
    }

    /// <summary>Explores the library on every golden case; prints where it differs (the dedicated test asserts
    /// it).</summary>
    [Test]
    public void Library_AgreesOnEveryCaseButRepeatedCharacterRuns()
    {
        var library = LlamaTokenizer.Create(new MemoryStream(TestModel.ModelBytes), addBeginOfSentence: false);
        var differing = new List<string>();
        foreach (var c in TestModel.GoldenCases)
        {
            var ids = library.EncodeToIds(c.Text, addBeginningOfSentence: false, addEndOfSentence: false);
            if (!ids.SequenceEqual(c.Ids))
            {
                differing.Add(c.Text);
                TestContext.Out.WriteLine(
                    $"library differs on {c}: " +
                    $"{string.Join(" ", ids.Select(i => library.Vocabulary.First(kv => kv.Value == i).Key))}");
            }
        }

        Assert.That(differing, Is.EqualTo(new[] { "Repeated aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }));
    }
}
