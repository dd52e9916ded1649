using MiniCPM4.Checkpoints;

namespace MiniCPM4.Speculative;

/// <summary>
/// The config.json of a MiniCPM4 EAGLE draft (the <c>MiniCPM4-8B-Eagle-FRSpec</c> layout): the draft's layer
/// shapes, and the muP scales, which must equal the target's because the draft reuses the target's embedding
/// and LM head.
/// </summary>
public sealed record EagleDraftConfig
{
    public int HiddenSize { get; init; }
    public int NumHiddenLayers { get; init; }
    public int NumAttentionHeads { get; init; }
    public int NumKeyValueHeads { get; init; }
    public int HeadDim { get; init; }
    public int IntermediateSize { get; init; }
    public float RmsNormEps { get; init; }
    public float? ScaleEmb { get; init; }
    public float? ScaleDepth { get; init; }
    public float? DimModelBase { get; init; }
    /// <summary>The draft's quantization_config (CPM.cu's Marlin drafts), or null for a dense draft.</summary>
    public QuantizationConfig? Quantization { get; init; }

    /// <summary>Reads a draft config.json and checks it against the target's config.</summary>
    /// <exception cref="CheckpointException">The file is missing, not JSON, has an unsupported quantization_config, or
    /// disagrees with the target.</exception>
    public static EagleDraftConfig Load(string path, MiniCpmConfig target)
    {
        string full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new CheckpointException(full, "draft config.json not found");
        using var doc = JsonFields.ParseDocument(JsonFields.ReadSmallTextFile(full, MiniCpmConfig.MaxFileBytes), full);
        var f = new JsonFields(doc.RootElement, full);
        QuantizationConfig? quantization = f.Has("quantization_config")
            ? QuantizationConfig.Parse(f.Object("quantization_config")) : null;
        if (f.Has("draft_vocab_size") || f.Has("d2t"))
            throw f.Error(
                "this is an EAGLE-3 draft (draft_vocab_size); only EAGLE-2 drafts (fc [H, 2H]) are supported");
        int hidden = f.RequiredInt("hidden_size");
        int heads = f.RequiredInt("num_attention_heads");
        int kv = f.Int("num_key_value_heads", 1) ?? heads;
        int headDim = MiniCpmConfig.HeadDimOf(f, hidden, heads);
        var c = new EagleDraftConfig
        {
            HiddenSize = hidden,
            NumHiddenLayers = f.RequiredInt("num_hidden_layers", 1, 64),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kv,
            HeadDim = headDim,
            IntermediateSize = f.RequiredInt("intermediate_size"),
            RmsNormEps = f.Float("rms_norm_eps", positive: true) ?? target.RmsNormEps,
            ScaleEmb = f.Float("scale_emb", positive: true),
            ScaleDepth = f.Float("scale_depth", positive: true),
            DimModelBase = f.Float("dim_model_base", positive: true),
            Quantization = quantization,
        };
        if (c.HiddenSize != target.HiddenSize)
            throw f.Error(
                $"hidden_size {c.HiddenSize} differs from the target's {target.HiddenSize}: this draft belongs to " +
                $"another model");
        if (c.HeadDim != target.HeadDim)
            throw f.Error($"head_dim {c.HeadDim} differs from the target's {target.HeadDim}");
        Same(f, "scale_emb", c.ScaleEmb, target.ScaleEmb);
        Same(f, "scale_depth", c.ScaleDepth, target.ScaleDepth);
        Same(f, "dim_model_base", c.DimModelBase, target.DimModelBase);
        return c;
    }

    // The draft shares the target's embedding (x scale_emb) and LM head (x dim_model_base/hidden); CPM.cu
    // asserts these are equal, and so do we.
    private static void Same(JsonFields f, string name, float? draft, float target)
    {
        if (draft is float d && Math.Abs(d - target) > 1e-6f * Math.Max(1f, Math.Abs(target)))
            throw f.Error(
                $"{name} {d} differs from the target's {target}: the draft reuses the target's embedding and LM head");
    }
}
