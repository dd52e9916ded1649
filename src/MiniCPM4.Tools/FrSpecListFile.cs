namespace MiniCPM4.Speculative;

/// <summary>
/// An FR-Spec token-id list file as read from disk, with its format (<c>minicpm4 frspec</c> shows it): the ids in
/// file order, unchecked against any model, so that a list can be inspected before it is used.
/// </summary>
/// <param name="Ids">The token ids in file order.</param>
/// <param name="FormatKey">"torch", "npy" or "safetensors".</param>
/// <param name="FormatName">A description of the format, e.g. "torch.save zip (pickled list)".</param>
public sealed record FrSpecListFile(int[] Ids, string FormatKey, string FormatName)
{
    /// <summary>Reads a list file, detecting its format from its content.</summary>
    /// <exception cref="FrSpecFormatException">The file is not a readable list.</exception>
    public static FrSpecListFile Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        int[] ids = FrSpecFiles.Read(path, out var format);
        string key = format switch
        {
            FrSpecFileFormat.TorchZip => "torch",
            FrSpecFileFormat.Npy => "npy",
            _ => "safetensors",
        };
        return new FrSpecListFile(ids, key, FrSpecFiles.FormatName(format));
    }

    /// <summary>
    /// Why <paramref name="ids"/> is not a usable list for a model with <paramref name="vocabSize"/> ids and
    /// <paramref name="eosTokenIds"/> (each check skipped when its argument is null), or null when it is.
    /// </summary>
    public static string? Validate(int[] ids, int? vocabSize, IReadOnlyCollection<int>? eosTokenIds,
        int? expectedSize) => FrSpecVocabulary.Validate(ids, vocabSize, eosTokenIds, expectedSize);
}
