namespace MiniCPM4.Tokenization;

/// <summary>
/// The pieces of a checkpoint's SentencePiece <c>tokenizer.model</c> with their scores and types, as a converter to
/// another format (tools/compare-llamacpp's GGUF writer) needs them.
/// </summary>
/// <param name="Pieces">The pieces by id.</param>
/// <param name="Scores">Each piece's score.</param>
/// <param name="Types">Each piece's SentencePiece type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
/// 6 byte; the same numbers as llama.cpp's token types).</param>
/// <param name="AddDummyPrefix">Whether the tokenizer prepends "▁" to the text.</param>
public sealed record SentencePieceVocabulary(string[] Pieces, float[] Scores, int[] Types, bool AddDummyPrefix)
{
    /// <summary>Reads <c>tokenizer.model</c> of a checkpoint directory.</summary>
    public static SentencePieceVocabulary Load(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var model = SentencePieceModelFile.Parse(File.ReadAllBytes(Path.Combine(directory, "tokenizer.model")));
        var tokenizer = MiniCpmTokenizer.Load(directory);
        return new SentencePieceVocabulary(model.Pieces, model.Scores, model.Types.Select(t => (int)t).ToArray(),
            tokenizer.Library.AddDummyPrefix);
    }
}
