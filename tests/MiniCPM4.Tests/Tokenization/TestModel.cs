using System.Text.Json;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Tests.Tokenization;

/// <summary>Shared access to TestData/llama-sp-bpe-32k.model and tokenizer-golden.json.</summary>
public static class TestModel
{
    public static string DataDirectory => Path.Combine(AppContext.BaseDirectory, "TestData");

    public static string ModelPath => Path.Combine(DataDirectory, "llama-sp-bpe-32k.model");

    public static byte[] ModelBytes => LazyBytes.Value;

    private static readonly Lazy<byte[]> LazyBytes = new(() => File.ReadAllBytes(ModelPath));

    private static readonly Lazy<MiniCpmTokenizer> LazyPlain = new(() =>
        MiniCpmTokenizer.FromSentencePiece(new MemoryStream(ModelBytes)));

    private static readonly Lazy<MiniCpmTokenizer> LazyChat = new(() =>
        MiniCpmTokenizer.FromSentencePiece(new MemoryStream(ModelBytes), ChatTokens));

    /// <summary>The 32k model without added tokens.</summary>
    internal static MiniCpmTokenizer Plain => LazyPlain.Value;

    public static readonly IReadOnlyDictionary<string, int> ChatTokens = new Dictionary<string, int>
    {
        ["<|im_start|>"] = 32000,
        ["<|im_end|>"] = 32001,
    };

    /// <summary>The 32k model with &lt;|im_start|&gt; = 32000 and &lt;|im_end|&gt; = 32001.</summary>
    internal static MiniCpmTokenizer Chat => LazyChat.Value;

    public sealed record GoldenCase(string Text, int[] Ids, string[] Pieces)
    {
        public override string ToString() => JsonSerializer.Serialize(Text.Length > 40 ? Text[..40] + "…" : Text);
    }

    public static IReadOnlyList<GoldenCase> GoldenCases => LazyGolden.Value;

    private static readonly Lazy<IReadOnlyList<GoldenCase>> LazyGolden = new(() =>
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(DataDirectory, "tokenizer-golden.json")));
        var list = new List<GoldenCase>();
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            list.Add(new GoldenCase(
                c.GetProperty("text").GetString()!,
                c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                c.GetProperty("pieces").EnumerateArray().Select(e => e.GetString()!).ToArray()));
        }

        return list;
    });
}
