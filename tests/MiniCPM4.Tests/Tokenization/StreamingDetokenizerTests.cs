using System.Text;
using MiniCPM4.Tokenization;
using NUnit.Framework;

namespace MiniCPM4.Tests.Tokenization;

public class StreamingDetokenizerTests
{
    private static string Stream(MiniCpmTokenizer tokenizer, IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        var detokenizer = tokenizer.CreateStreamingDetokenizer(skipSpecialTokens);
        var sb = new StringBuilder();
        foreach (int id in ids)
            sb.Append(detokenizer.Push(id));
        sb.Append(detokenizer.Flush());
        return sb.ToString();
    }

    /// <summary>Random ids mixing normal pieces, byte-fallback pieces, control pieces, added tokens and junk.</summary>
    private static int[] RandomIds(Random random, MiniCpmTokenizer tokenizer)
    {
        var ids = new List<int>();
        int count = random.Next(0, 40);
        while (ids.Count < count)
        {
            switch (random.Next(10))
            {
                case 0 or 1 or 2:
                    ids.Add(random.Next(259, 32000)); // normal pieces
                    break;
                case 3 or 4:
                    ids.Add(random.Next(3, 259)); // byte pieces, mostly invalid UTF-8
                    break;
                case 5 or 6:
                    // a valid multi-byte character spelled as bytes
                    string c =
                        char.ConvertFromUtf32(random.Next(2) == 0 ? random.Next(0x80, 0xD800)
                        : random.Next(0x10000, 0x110000));
                    ids.AddRange(Encoding.UTF8.GetBytes(c).Select(b => b + 3));
                    break;
                case 7:
                    ids.Add(random.Next(0, 3)); // <unk> <s> </s>
                    break;
                case 8:
                    ids.Add(random.Next(32000, 32002)); // added tokens (out of range for the plain tokenizer)
                    break;
                default:
                    ids.Add(random.Next(2) == 0 ? 29871 /* ▁ */ : random.Next(-3, 40000));
                    break;
            }
        }

        return ids.ToArray();
    }

    [Test]
    public void ConcatenatedStream_EqualsDecode_ForRandomIdSequences()
    {
        var random = new Random(4242);
        foreach (var tokenizer in new[] { TestModel.Plain, TestModel.Chat })
        {
            for (int n = 0; n < 3000; n++)
            {
                int[] ids = RandomIds(random, tokenizer);
                foreach (bool skip in new[] { false, true })
                {
                    string expected = tokenizer.Decode(ids, skip);
                    Assert.That(Stream(tokenizer, ids, skip), Is.EqualTo(expected), () =>
                        $"ids: {string.Join(", ", ids)} skip: {skip}");
                }
            }
        }
    }

    [Test]
    public void ConcatenatedStream_EqualsDecode_ForSentencePieceReferenceSequences()
    {
        foreach (var (ids, text) in SentencePieceReferenceData.Decoded)
            Assert.That(Stream(TestModel.Plain, ids), Is.EqualTo(text));
    }

    [Test]
    public void ConcatenatedStream_EqualsDecode_ForEncodedText()
    {
        var tokenizer = TestModel.Chat;
        foreach (var (text, _) in SentencePieceReferenceData.Encoded)
        {
            int[] ids = tokenizer.Encode("<|im_start|>user\n" + text + "<|im_end|>\n" + text, addBos: true);
            Assert.That(Stream(tokenizer, ids), Is.EqualTo(tokenizer.Decode(ids)));
        }
    }

    [Test]
    public void Push_HoldsBackIncompleteUtf8()
    {
        var tokenizer = TestModel.Plain;
        var d = tokenizer.CreateStreamingDetokenizer();
        // "中" = E4 B8 AD, "😀" = F0 9F 98 80
        Assert.Multiple(() =>
        {
            Assert.That(d.Push(0xE4 + 3), Is.EqualTo(""));
            Assert.That(d.HasPendingText, Is.True);
            Assert.That(d.Push(0xB8 + 3), Is.EqualTo(""));
            Assert.That(d.Push(0xAD + 3), Is.EqualTo("中"));
            Assert.That(d.HasPendingText, Is.False);
            Assert.That(d.Push(0xF0 + 3), Is.EqualTo(""));
            Assert.That(d.Push(0x9F + 3), Is.EqualTo(""));
            Assert.That(d.Push(0x98 + 3), Is.EqualTo(""));
            Assert.That(d.Push(0x80 + 3), Is.EqualTo("😀"));
            // An invalid continuation releases the held bytes as U+FFFD immediately.
            Assert.That(d.Push(0xE4 + 3), Is.EqualTo(""));
            Assert.That(d.Push('A' + 3), Is.EqualTo("\uFFFDA"));
            // A normal piece ends a byte run.
            Assert.That(d.Push(0xE4 + 3), Is.EqualTo(""));
            Assert.That(d.Push(tokenizer.TokenToId("▁x")!.Value), Is.EqualTo("\uFFFD x"));
            // Flush releases whatever is left.
            Assert.That(d.Push(0xF0 + 3), Is.EqualTo(""));
            Assert.That(d.Flush(), Is.EqualTo("\uFFFD"));
        });
    }

    [Test]
    public void Push_DropsOnlyTheFirstLeadingSpace()
    {
        var tokenizer = TestModel.Chat;
        var d = tokenizer.CreateStreamingDetokenizer();
        string[] parts = tokenizer.Encode("Hello world<|im_end|>again").Select(d.Push).ToArray();
        Assert.That(parts, Is.EqualTo(new[] { "Hello", " world", "<|im_end|>", "again" }));
        Assert.That(d.Flush(), Is.EqualTo(""));

        // " again" after an added token is "▁" "▁again": the dummy prefix "▁" is dropped, the real space kept.
        parts = tokenizer.Encode("<|im_end|> again").Select(d.Push).ToArray();
        Assert.That(parts, Is.EqualTo(new[] { "<|im_end|>", "", " again" }));
    }

    [Test]
    public void Flush_ResetsToTheInitialState()
    {
        var tokenizer = TestModel.Plain;
        var d = tokenizer.CreateStreamingDetokenizer();
        int hello = tokenizer.TokenToId("▁Hello")!.Value;
        Assert.That(d.Push(hello), Is.EqualTo("Hello"));
        Assert.That(d.Flush(), Is.EqualTo(""));
        Assert.That(d.Push(hello), Is.EqualTo("Hello"));
    }

    [Test]
    public void SkipSpecialTokens_OmitsAddedTokens()
    {
        var tokenizer = TestModel.Chat;
        int[] ids = tokenizer.Encode("<|im_start|>assistant\n你好 😀<|im_end|>");
        Assert.That(Stream(tokenizer, ids, skipSpecialTokens: true), Is.EqualTo("assistant\n你好 😀"));
        Assert.That(Stream(tokenizer, ids), Is.EqualTo("<|im_start|>assistant\n你好 😀<|im_end|>"));
    }

    [Test]
    public void Push_ReturnsCachedPieceText()
    {
        // O(1) per id: a normal piece that needs no change is returned without building a new string.
        var tokenizer = TestModel.Plain;
        int world = tokenizer.TokenToId("▁world")!.Value;
        var d = tokenizer.CreateStreamingDetokenizer();
        d.Push(tokenizer.TokenToId("▁Hello")!.Value);
        Assert.That(d.Push(world), Is.SameAs(d.Push(world)));
    }
}
