using System.Text.Json;

namespace MiniCPM4.Checkpoints;

/// <summary>LongRoPE scaling parameters (config.json "rope_scaling" with rope_type "longrope").</summary>
public sealed record RopeScalingConfig(string Type, float[] ShortFactor, float[] LongFactor,
    int OriginalMaxPositionEmbeddings);

/// <summary>
/// InfLLM-v2 sparse attention settings (config.json "sparse_config"), run by the engine's CPU backend (see
/// <see cref="MiniCpmLoadOptions.SparseAttention"/>). Absent fields take the MiniCPM4-8B defaults. DenseLen -1 means
/// always sparse.
/// </summary>
public sealed record SparseAttentionConfig(
    int KernelSize = 32,
    int KernelStride = 16,
    int InitBlocks = 1,
    int BlockSize = 64,
    int WindowSize = 2048,
    int TopK = 64,
    bool UseNope = false,
    int DenseLen = 8192);

/// <summary>
/// Changes to InfLLM v2's settings at load time (<see cref="MiniCpmLoadOptions.SparseOverrides"/>): each non-null
/// field replaces the checkpoint's sparse_config value of the same name; all lengths are in tokens. The engine checks
/// the result (block_size a multiple of kernel_stride, window_size a multiple of block_size, ...) and names the field
/// it rejects.
/// </summary>
public sealed record SparseAttentionOverrides
{
    public int? KernelSize { get; init; }
    public int? KernelStride { get; init; }
    public int? InitBlocks { get; init; }
    public int? BlockSize { get; init; }
    public int? WindowSize { get; init; }
    public int? TopK { get; init; }
    /// <summary>Total context length from which attention turns sparse; -1 = from the first token.</summary>
    public int? DenseLen { get; init; }

    /// <summary>The config.json names these fields override, as accepted by <see cref="Parse"/>.</summary>
    public static IReadOnlyList<string> Keys { get; } =
        ["kernel_size", "kernel_stride", "init_blocks", "block_size", "window_size", "topk", "dense_len"];

    /// <summary><paramref name="config"/> with every field set here replaced.</summary>
    public SparseAttentionConfig ApplyTo(SparseAttentionConfig config) => config with
    {
        KernelSize = KernelSize ?? config.KernelSize,
        KernelStride = KernelStride ?? config.KernelStride,
        InitBlocks = InitBlocks ?? config.InitBlocks,
        BlockSize = BlockSize ?? config.BlockSize,
        WindowSize = WindowSize ?? config.WindowSize,
        TopK = TopK ?? config.TopK,
        DenseLen = DenseLen ?? config.DenseLen,
    };

    /// <summary>
    /// Parses "key=value[,key=value...]" with the sparse_config names of <see cref="Keys"/> ("topk=16,dense_len=4096").
    /// </summary>
    /// <exception cref="FormatException">An unknown or repeated key, or a value that is not an integer.</exception>
    public static SparseAttentionOverrides Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new SparseAttentionOverrides();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=');
            string key = eq < 0 ? part : part[..eq].Trim().ToLowerInvariant();
            if (eq < 0 || !Keys.Contains(key))
                throw new FormatException($"'{part}': expected key=value with a key of {string.Join(", ", Keys)}");
            if (!seen.Add(key))
                throw new FormatException($"'{key}' is given twice");
            if (!int.TryParse(part[(eq + 1)..].Trim(), System.Globalization.NumberStyles.AllowLeadingSign,
                    System.Globalization.CultureInfo.InvariantCulture, out int value))
                throw new FormatException($"'{part}': the value of {key} must be an integer");
            result = key switch
            {
                "kernel_size" => result with { KernelSize = value },
                "kernel_stride" => result with { KernelStride = value },
                "init_blocks" => result with { InitBlocks = value },
                "block_size" => result with { BlockSize = value },
                "window_size" => result with { WindowSize = value },
                "topk" => result with { TopK = value },
                _ => result with { DenseLen = value },
            };
        }
        if (seen.Count == 0)
            throw new FormatException($"no setting given (expected key=value with a key of {string.Join(", ", Keys)})");
        return result;
    }
}

/// <summary>
/// The architecture of a MiniCPM / MiniCPM4 checkpoint as read from its Hugging Face config.json. All values
/// are validated and resolved (defaults applied, head_dim derived), so they can be handed to the engine.
/// </summary>
public sealed record MiniCpmConfig
{
    /// <summary>Upper bound on num_hidden_layers accepted from a config file (a sanity limit, not a model
    /// limit).</summary>
    public const int MaxLayers = 4096;

    /// <summary>Largest config.json accepted.</summary>
    internal const long MaxFileBytes = 16 << 20;

    public int VocabSize { get; init; }
    public int HiddenSize { get; init; }
    public int NumHiddenLayers { get; init; }
    public int NumAttentionHeads { get; init; }
    public int NumKeyValueHeads { get; init; }
    public int HeadDim { get; init; }
    public int IntermediateSize { get; init; }
    public int MaxPositionEmbeddings { get; init; }
    public float RmsNormEps { get; init; } = 1e-6f;
    public float RopeTheta { get; init; } = 10000f;
    public RopeScalingConfig? RopeScaling { get; init; }
    public float ScaleEmb { get; init; } = 1f;
    public float ScaleDepth { get; init; } = 1f;
    public float DimModelBase { get; init; }
    public bool TieWordEmbeddings { get; init; } = true;
    public int? BosTokenId { get; init; }
    public int[] EosTokenIds { get; init; } = Array.Empty<int>();
    public string? TorchDtype { get; init; }
    public string[] Architectures { get; init; } = Array.Empty<string>();
    public string? ModelType { get; init; }
    public SparseAttentionConfig? Sparse { get; init; }
    /// <summary>
    /// config.json's quantization_config (an int4 W4A16 checkpoint: Marlin or AutoGPTQ tensors for the linear layers),
    /// or null for a dense checkpoint. Parsing rejects settings the engine cannot run.
    /// </summary>
    public QuantizationConfig? Quantization { get; init; }

    /// <summary>Reads and validates a config.json file.</summary>
    /// <exception cref="CheckpointException">The file is missing, unreadable, not JSON, or not a supported MiniCPM
    /// config.</exception>
    public static MiniCpmConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full)) throw new CheckpointException(full, "config file not found");
        return Parse(JsonFields.ReadSmallTextFile(full, MaxFileBytes), full);
    }

    /// <summary>Parses and validates the text of a config.json; <paramref name="pathForMessages"/> is named in
    /// errors.</summary>
    /// <exception cref="CheckpointException">The text is not JSON or not a supported MiniCPM config.</exception>
    public static MiniCpmConfig Parse(string json, string pathForMessages)
    {
        ArgumentNullException.ThrowIfNull(json);
        using var doc = JsonFields.ParseDocument(json, pathForMessages);
        var f = new JsonFields(doc.RootElement, pathForMessages);

        string[] architectures = f.StringArray("architectures") ?? Array.Empty<string>();
        string? modelType = f.String("model_type");
        if (!architectures.Contains("MiniCPMForCausalLM") && modelType != "minicpm")
        {
            string found = architectures.Length == 0 ? "no architectures" : "architectures ["
                + string.Join(", ", architectures) + "]";
            throw f.Error($"unsupported architecture: found {found} and model_type '{modelType ?? "(none)"}'; " +
                          "expected architectures [\"MiniCPMForCausalLM\"] or model_type \"minicpm\"");
        }

        QuantizationConfig? quantization = f.Has("quantization_config")
            ? QuantizationConfig.Parse(f.Object("quantization_config")) : null;

        int vocab = f.RequiredInt("vocab_size");
        int hidden = f.RequiredInt("hidden_size");
        int layers = f.RequiredInt("num_hidden_layers", 1, MaxLayers);
        int heads = f.RequiredInt("num_attention_heads");
        int intermediate = f.RequiredInt("intermediate_size");
        int maxPos = f.RequiredInt("max_position_embeddings");
        int kvHeads = f.Int("num_key_value_heads", 1) ?? heads;
        if (heads % kvHeads != 0)
            throw f.Error($"num_attention_heads ({heads}) is not divisible by num_key_value_heads ({kvHeads})");
        int headDim = HeadDimOf(f, hidden, heads);
        if (headDim % 2 != 0) throw f.Error($"head_dim ({headDim}) must be even (rotary embeddings rotate pairs)");

        RopeScalingConfig? rope = null;
        if (f.Has("rope_scaling"))
        {
            var r = f.Object("rope_scaling");
            string? type = r.String("rope_type") ?? r.String("type");
            if (type != "longrope")
                throw f.Error($"unsupported rope_scaling type '{type ?? "(none)"}' (only \"longrope\" is supported)");
            float[] shortF = r.FloatArray("short_factor") ?? throw f.Error("rope_scaling.short_factor is missing");
            float[] longF = r.FloatArray("long_factor") ?? throw f.Error("rope_scaling.long_factor is missing");
            int expected = headDim / 2;
            if (shortF.Length != expected)
                throw f.Error(
                    $"rope_scaling.short_factor has {shortF.Length} values; head_dim/2 = {expected} are required");
            if (longF.Length != expected)
                throw f.Error(
                    $"rope_scaling.long_factor has {longF.Length} values; head_dim/2 = {expected} are required");
            if (shortF.Any(x => !(x > 0)) || longF.Any(x => !(x > 0)))
                throw f.Error("rope_scaling factors must be positive");
            int original = r.Int("original_max_position_embeddings", 1) ?? maxPos;
            rope = new RopeScalingConfig("longrope", shortF, longF, original);
        }

        SparseAttentionConfig? sparse = null;
        if (f.Has("sparse_config"))
        {
            var s = f.Object("sparse_config");
            var d = new SparseAttentionConfig();
            sparse = new SparseAttentionConfig(
                s.Int("kernel_size", 1) ?? d.KernelSize,
                s.Int("kernel_stride", 1) ?? d.KernelStride,
                s.Int("init_blocks", 0) ?? d.InitBlocks,
                s.Int("block_size", 1) ?? d.BlockSize,
                s.Int("window_size", 0) ?? d.WindowSize,
                s.Int("topk", 0) ?? d.TopK,
                s.Bool("use_nope") ?? d.UseNope,
                s.Int("dense_len", -1) ?? d.DenseLen);
        }

        return new MiniCpmConfig
        {
            VocabSize = vocab,
            HiddenSize = hidden,
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            IntermediateSize = intermediate,
            MaxPositionEmbeddings = maxPos,
            RmsNormEps = f.Float("rms_norm_eps", positive: true) ?? 1e-6f,
            RopeTheta = f.Float("rope_theta", positive: true) ?? 10000f,
            RopeScaling = rope,
            ScaleEmb = f.Float("scale_emb", positive: true) ?? 1f,
            ScaleDepth = f.Float("scale_depth", positive: true) ?? 1f,
            DimModelBase = f.Float("dim_model_base", positive: true) ?? hidden,
            TieWordEmbeddings = f.Bool("tie_word_embeddings") ?? true,
            BosTokenId = f.Int("bos_token_id", 0),
            EosTokenIds = f.IntOrIntList("eos_token_id") ?? Array.Empty<int>(),
            TorchDtype = f.String("torch_dtype") ?? f.String("dtype"),
            Architectures = architectures,
            ModelType = modelType,
            Sparse = sparse,
            Quantization = quantization,
        };
    }

    /// <summary>config.json's head_dim, or hidden_size / num_attention_heads when it is absent.</summary>
    internal static int HeadDimOf(JsonFields f, int hidden, int heads)
    {
        if (f.Int("head_dim", 1) is int hd) return hd;
        if (hidden % heads != 0)
            throw f.Error(
                $"head_dim is absent and hidden_size ({hidden}) is not divisible by num_attention_heads ({heads})");
        return hidden / heads;
    }

    /// <summary>Writes this config as a Hugging Face config.json (indented UTF-8).</summary>
    public void WriteJson(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        using var w = new Utf8JsonWriter(fs, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteStartArray("architectures");
        foreach (var a in Architectures) w.WriteStringValue(a);
        w.WriteEndArray();
        if (ModelType != null) w.WriteString("model_type", ModelType);
        w.WriteNumber("vocab_size", VocabSize);
        w.WriteNumber("hidden_size", HiddenSize);
        w.WriteNumber("num_hidden_layers", NumHiddenLayers);
        w.WriteNumber("num_attention_heads", NumAttentionHeads);
        w.WriteNumber("num_key_value_heads", NumKeyValueHeads);
        w.WriteNumber("head_dim", HeadDim);
        w.WriteNumber("intermediate_size", IntermediateSize);
        w.WriteNumber("max_position_embeddings", MaxPositionEmbeddings);
        w.WriteString("hidden_act", "silu");
        w.WriteNumber("rms_norm_eps", RmsNormEps);
        w.WriteNumber("rope_theta", RopeTheta);
        if (RopeScaling is { } r)
        {
            w.WriteStartObject("rope_scaling");
            w.WriteString("rope_type", r.Type);
            w.WriteStartArray("short_factor");
            foreach (var x in r.ShortFactor) w.WriteNumberValue(x);
            w.WriteEndArray();
            w.WriteStartArray("long_factor");
            foreach (var x in r.LongFactor) w.WriteNumberValue(x);
            w.WriteEndArray();
            w.WriteNumber("original_max_position_embeddings", r.OriginalMaxPositionEmbeddings);
            w.WriteEndObject();
        }
        else
        {
            w.WriteNull("rope_scaling");
        }
        w.WriteNumber("scale_emb", ScaleEmb);
        w.WriteNumber("scale_depth", ScaleDepth);
        w.WriteNumber("dim_model_base", DimModelBase);
        w.WriteBoolean("tie_word_embeddings", TieWordEmbeddings);
        if (BosTokenId is int bos) w.WriteNumber("bos_token_id", bos);
        if (EosTokenIds.Length == 1) w.WriteNumber("eos_token_id", EosTokenIds[0]);
        else if (EosTokenIds.Length > 1)
        {
            w.WriteStartArray("eos_token_id");
            foreach (var e in EosTokenIds) w.WriteNumberValue(e);
            w.WriteEndArray();
        }
        if (TorchDtype != null) w.WriteString("torch_dtype", TorchDtype);
        if (Sparse is { } s)
        {
            w.WriteStartObject("sparse_config");
            w.WriteNumber("kernel_size", s.KernelSize);
            w.WriteNumber("kernel_stride", s.KernelStride);
            w.WriteNumber("init_blocks", s.InitBlocks);
            w.WriteNumber("block_size", s.BlockSize);
            w.WriteNumber("window_size", s.WindowSize);
            w.WriteNumber("topk", s.TopK);
            w.WriteBoolean("use_nope", s.UseNope);
            w.WriteNumber("dense_len", s.DenseLen);
            w.WriteEndObject();
        }
        if (Quantization is { } q)
        {
            w.WritePropertyName("quantization_config");
            q.Write(w);
        }
        w.WriteEndObject();
        w.Flush();
        fs.WriteByte((byte)'\n');
    }
}
