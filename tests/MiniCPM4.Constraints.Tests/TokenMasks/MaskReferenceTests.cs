using NUnit.Framework;
using MiniCPM4.Constraints.TokenMasks;

namespace MiniCPM4.Constraints.Tests.TokenMasks;

/// <summary>
/// Masks against a brute-force reference: in each state reached by a random walk, every token's bytes are tried
/// against the grammar one by one. The mask must be exactly the set of tokens that succeed.
/// </summary>
public class MaskReferenceTests
{
    private static readonly string[] Schemas =
    [
        """{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":150},"tags":{"type":"array","items":{"enum":["a","b","c d"]},"maxItems":3}},"required":["name"]}""",
        """{"type":"array","items":{"anyOf":[{"type":"number"},{"type":"boolean"},{"type":"null"}]}}""",
        """{"$defs":{"node":{"type":"object","properties":{"v":{"type":"string","pattern":"^[a-z]+$"},"next":{"$ref":"#/$defs/node"}},"required":["v"],"additionalProperties":false}},"$ref":"#/$defs/node"}""",
        """{}""",
    ];

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void JsonSchemaMasksMatchBruteForceOnSentencePiece(int schema) =>
        CheckRandomWalks(OutputConstraint.JsonSchema(Schemas[schema]), TestVocabularies.SentencePiece, seed: schema,
            walks: 3, steps: 30);

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void JsonSchemaMasksMatchBruteForceOnSyntheticTokens(int schema) =>
        CheckRandomWalks(OutputConstraint.JsonSchema(Schemas[schema]), TestVocabularies.Synthetic(100 + schema),
            seed: 10 + schema, walks: 5, steps: 40);

    [Test]
    public void RegexAndChoiceMasksMatchBruteForce()
    {
        CheckRandomWalks(OutputConstraint.Regex("[A-Z][a-z]{0,6}( [0-9]+)?"), TestVocabularies.SentencePiece, 5, 4, 12);
        CheckRandomWalks(OutputConstraint.Choice(["yes", "no", "not sure", "é€😀"]), TestVocabularies.Synthetic(7), 6, 6,
            10);
    }

    [Test]
    public void EndOfOutputIsAllowedExactlyWhenComplete()
    {
        var c = OutputConstraint.Choice(["ab", "abc"]);
        var vocab =
            new TokenVocabulary([[(byte)'a'], [(byte)'b'], [(byte)'c'], null],
            [[(byte)'a'], [(byte)'b'], [(byte)'c'], null]);
        var m = c.CreateMatcher(vocab, stopIds: [3]);
        var mask = new uint[vocab.MaskWords];
        m.ComputeMask(mask);
        Assert.That(mask[0], Is.EqualTo(0b0001u));  // only "a"; no end yet
        Assert.That(m.TryAdvance(0), Is.True);
        m.ComputeMask(mask);
        Assert.That(mask[0], Is.EqualTo(0b0010u));
        Assert.That(m.TryAdvance(1), Is.True);
        m.ComputeMask(mask);
        Assert.That(mask[0], Is.EqualTo(0b1100u));  // "c" or end
        Assert.That(m.TryAdvance(2), Is.True);
        m.ComputeMask(mask);
        Assert.That(mask[0], Is.EqualTo(0b1000u));  // only end
    }

    [Test]
    public void FirstPieceLosesItsLeadingSpace()
    {
        // At the start of the output, "▁{" decodes to "{" (the detokenizer drops the dummy prefix); later it is " {".
        var c = OutputConstraint.JsonSchema("""{"type":"object"}""");
        var vocab = TestVocabularies.SentencePiece;
        var tok = TestVocabularies.Tokenizer;
        int? found = tok.TokenToId("▁{");
        Assert.That(found, Is.Not.Null, "the test tokenizer has a ▁{ piece");
        int spaceBrace = found!.Value;
        var m = c.CreateMatcher(vocab, [tok.EosId]);
        var mask = new uint[vocab.MaskWords];
        m.ComputeMask(mask);
        Assert.That(IsSet(mask, spaceBrace), Is.True);
        Assert.That(m.TryAdvance(spaceBrace), Is.True);
        m.ComputeMask(mask);
        Assert.That(IsSet(mask, spaceBrace), Is.False, "a second '{' right after the first is not JSON");
    }

    [Test]
    public void SyncRestoresAnyPrefix()
    {
        var c = OutputConstraint.JsonSchema(Schemas[0]);
        var vocab = TestVocabularies.SentencePiece;
        var tok = TestVocabularies.Tokenizer;
        var ids = tok.EncodeGenerated("""{"name": "Ann", "age": 42, "tags": ["a", "c d"]}""");
        var m = c.CreateMatcher(vocab, [tok.EosId]);
        var expected = new List<uint[]>();
        for (int k = 0; k <= ids.Length; k++)
        {
            m.Sync(ids.AsSpan(0, k));
            var mask = new uint[vocab.MaskWords];
            m.ComputeMask(mask);
            expected.Add(mask);
        }
        Assert.That(IsSet(expected[^1], tok.EosId), Is.True, "the whole instance is complete");
        var rng = new Random(3);
        for (int i = 0; i < 40; i++)
        {
            int k = rng.Next(ids.Length + 1);
            m.Sync(ids.AsSpan(0, k));
            var mask = new uint[vocab.MaskWords];
            m.ComputeMask(mask);
            Assert.That(mask, Is.EqualTo(expected[k]), $"prefix of {k} tokens");
        }
        Assert.Throws<InvalidOperationException>(() => m.Sync([ids[0], ids[0]]));
    }

    internal static bool IsSet(uint[] mask, int id) => (mask[id >> 5] & (1u << (id & 31))) != 0;

    // Random walks through the grammar: at each state the computed mask must equal the brute-force one; the walk
    // then takes a random allowed token.
    private static void CheckRandomWalks(OutputConstraint constraint, TokenVocabulary vocab, int seed, int walks,
        int steps)
    {
        var rng = new Random(seed);
        var mask = new uint[vocab.MaskWords];
        for (int w = 0; w < walks; w++)
        {
            var m = constraint.CreateMatcher(vocab, stopIds: []);
            for (int step = 0; step < steps; step++)
            {
                m.ComputeMask(mask);
                var reference = BruteForce(constraint, vocab, m.Tokens);
                var allowed = new List<int>();
                for (int id = 0; id < vocab.Size; id++)
                {
                    bool expect = reference[id];
                    if (IsSet(mask, id) != expect)
                        Assert.Fail($"walk {w} step {step}: token {id} ({Show(vocab.Bytes[id])}) is " +
                                    $"{(expect ? "allowed" : "not allowed")} by brute force but " +
                                    $"{(expect ? "missing from" : "in")} the mask");
                    if (expect) allowed.Add(id);
                }
                if (allowed.Count == 0) break;
                Assert.That(m.TryAdvance(allowed[rng.Next(allowed.Count)]), Is.True);
            }
        }
    }

    private static bool[] BruteForce(OutputConstraint constraint, TokenVocabulary vocab, IReadOnlyList<int> prefix)
    {
        var result = new bool[vocab.Size];
        var m = constraint.CreateMatcher(vocab, stopIds: []);
        m.Sync(prefix.ToArray());
        for (int id = 0; id < vocab.Size; id++)
        {
            if (!m.TryAdvance(id)) continue;
            result[id] = true;
            m.Sync(prefix.ToArray());
        }
        return result;
    }

    private static string Show(byte[]? bytes) => bytes is null ? "(none)"
        : System.Text.Json.JsonSerializer.Serialize(System.Text.Encoding.UTF8.GetString(bytes));
}
