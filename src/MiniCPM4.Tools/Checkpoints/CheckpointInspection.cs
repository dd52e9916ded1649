using MiniCPM4.Tokenization;

namespace MiniCPM4.Checkpoints;

/// <summary>What <c>minicpm4 info</c> and <c>minicpm4 template</c> report about a checkpoint beyond its public
/// properties: parameter counts, what int4 quantization would make of it, its tokenizer files' template
/// settings.</summary>
public static class CheckpointInspection
{
    /// <summary>Parameters the config implies (counted from the config: an int4 checkpoint's packed tensors do not
    /// have one element per parameter).</summary>
    public static long ParameterCount(MiniCpmConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return Checkpoint.RequiredTensors(config).Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));
    }

    /// <summary>Why the checkpoint's dense linear layers cannot be quantized to int4, or null when they can.</summary>
    public static string? Int4QuantizationProblem(Checkpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        return checkpoint.Linears.Where(l => !l.IsInt4)
            .Select(l => LinearResolver.Int4ShapeProblem(l.Name, l.OutFeatures, l.InFeatures))
            .OfType<string>().FirstOrDefault();
    }

    /// <summary>Bytes of the weights after int4 quantization of the dense linear layers (see
    /// <see cref="Int4QuantizationProblem"/> for whether that is possible).</summary>
    public static long Int4Bytes(Checkpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var dense = checkpoint.Linears.Where(l => !l.IsInt4).ToList();
        return dense.Sum(l => l.OutFeatures * l.InFeatures / 2
                              + l.OutFeatures * l.InFeatures / LinearResolver.GroupSize * 2)
               + checkpoint.OtherTensors.Sum(t => t.ByteLength);
    }

    /// <summary>The dtypes of the tensors that are not linear layers (embedding, norms, LM head).</summary>
    public static IReadOnlyList<TensorDType> OtherTensorDTypes(Checkpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        return checkpoint.OtherTensors.Select(t => t.DType).Distinct().ToList();
    }

    /// <summary>The chat template, BOS and EOS tokens of a checkpoint directory's tokenizer files.</summary>
    public static (string? ChatTemplate, string? BosToken, string? EosToken) ReadTemplateSettings(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var files = CheckpointTokenizerFiles.Read(directory);
        return (files.ChatTemplate, files.BosToken, files.EosToken);
    }
}
