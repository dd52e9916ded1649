using MiniCPM4.Checkpoints;
using MiniCPM4.Interop;
using MiniCPM4.Speculative;

namespace MiniCPM4;

/// <summary>
/// Maps parsed checkpoint configs and <see cref="MiniCpmLoadOptions"/> to the native <c>mcpm_model_options</c>,
/// <c>mcpm_model_config</c> and <c>mcpm_draft_config</c> structs, for the model and the draft loader alike. Options
/// are validated here, before the engine sees them, so that errors name the managed option rather than a struct field.
/// </summary>
internal static unsafe class NativeConfigMapper
{
    /// <summary>Rejects load options the engine would reject (or that contradict each other), naming the
    /// option.</summary>
    public static void ValidateLoadOptions(MiniCpmLoadOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.DraftAttentionWindow < 0)
            throw new ArgumentOutOfRangeException(nameof(options), options.DraftAttentionWindow,
                "MiniCpmLoadOptions.DraftAttentionWindow must be >= 0 (0 = the whole context)");
        if (options.MaxBatchRows != 0 && (options.MaxBatchRows < 2 || options.MaxBatchRows > 4096))
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxBatchRows,
                "MiniCpmLoadOptions.MaxBatchRows must be 0 (no batching) or in [2, 4096]");
        if (options.SparseAttention == false && options.SparseOverrides is not null)
            throw new ArgumentException("MiniCpmLoadOptions.SparseOverrides change InfLLM v2's settings, but " +
                                        "MiniCpmLoadOptions.SparseAttention = false turns it off", nameof(options));
        if (options.Threads is < 0 or > MaxThreads)
            throw new MiniCpmInvalidArgumentException(
                $"MiniCpmLoadOptions.Threads must be in [0, {MaxThreads}] (0 = all cores), got {options.Threads}",
                "MiniCpmLoadOptions.Threads");
        if (options.DeviceIndex < 0)
            throw new MiniCpmInvalidArgumentException(
                $"MiniCpmLoadOptions.DeviceIndex must be >= 0, got {options.DeviceIndex}",
                    "MiniCpmLoadOptions.DeviceIndex");
        if (!Enum.IsDefined(options.Quantization))
            throw new ArgumentException($"unknown MiniCpmLoadOptions.Quantization {options.Quantization}",
                nameof(options));
        if (!Enum.IsDefined(options.CpuPrecision))
            throw new ArgumentException($"unknown MiniCpmLoadOptions.CpuPrecision {options.CpuPrecision}",
                nameof(options));
    }

    /// <summary>The engine's upper bound on <c>num_threads</c>.</summary>
    private const int MaxThreads = 1024;

    /// <summary>The engine's defaults with the load options applied; <paramref name="weightArenaBytes"/> is the
    /// planned size of the weight arena.</summary>
    public static mcpm_model_options ModelOptions(MiniCpmLoadOptions options, long weightArenaBytes)
    {
        ValidateLoadOptions(options);
        mcpm_model_options o = default;
        o.struct_size = (uint)sizeof(mcpm_model_options);
        NativeStatus.Check(NativeMethods.mcpm_model_options_default(&o));
        o.backend = options.Device switch
        {
            ComputeDevice.Cpu => NativeConstants.MCPM_BACKEND_CPU,
            ComputeDevice.Cuda => NativeConstants.MCPM_BACKEND_CUDA,
            _ => NativeConstants.MCPM_BACKEND_AUTO,
        };
        o.device_index = options.DeviceIndex;
        o.num_threads = options.Threads;
        o.cpu_precision = options.CpuPrecision switch
        {
            CpuPrecision.Fast => NativeConstants.MCPM_CPU_PRECISION_FAST,
            CpuPrecision.Exact => NativeConstants.MCPM_CPU_PRECISION_EXACT,
            _ => NativeConstants.MCPM_CPU_PRECISION_DEFAULT,
        };
        o.weight_arena_bytes = (ulong)weightArenaBytes;
        return o;
    }

    /// <summary>
    /// The engine's model config for <paramref name="config"/>, with InfLLM v2 on when <paramref name="sparse"/> is
    /// set. The LongRoPE factors are passed as pointers: the caller pins
    /// <c>config.RopeScaling.ShortFactor</c>/<c>LongFactor</c> for as long as the struct is used.
    /// </summary>
    public static mcpm_model_config ModelConfig(MiniCpmConfig config, SparseAttentionConfig? sparse,
        float* shortFactor, float* longFactor)
    {
        mcpm_model_config c = default;
        c.struct_size = (uint)sizeof(mcpm_model_config);
        NativeStatus.Check(NativeMethods.mcpm_model_config_default(&c));
        c.vocab_size = config.VocabSize;
        c.hidden_size = config.HiddenSize;
        c.num_layers = config.NumHiddenLayers;
        c.num_heads = config.NumAttentionHeads;
        c.num_kv_heads = config.NumKeyValueHeads;
        c.head_dim = config.HeadDim;
        c.intermediate_size = config.IntermediateSize;
        c.max_position_embeddings = config.MaxPositionEmbeddings;
        c.rms_norm_eps = config.RmsNormEps;
        c.rope_theta = config.RopeTheta;
        c.scale_emb = config.ScaleEmb;
        c.scale_depth = config.ScaleDepth;
        c.dim_model_base = config.DimModelBase;
        c.tie_word_embeddings = config.TieWordEmbeddings ? 1 : 0;
        if (config.RopeScaling is { } rope)
        {
            c.rope_scaling = NativeConstants.MCPM_ROPE_SCALING_LONGROPE;
            c.rope_short_factor = shortFactor;
            c.rope_long_factor = longFactor;
            c.rope_factor_count = rope.ShortFactor.Length;
            c.original_max_position_embeddings = rope.OriginalMaxPositionEmbeddings;
        }
        else
        {
            c.rope_scaling = NativeConstants.MCPM_ROPE_SCALING_NONE;
            c.rope_factor_count = 0;
        }
        if (sparse is not null)
        {
            c.sparse_enabled = 1;
            c.sparse_kernel_size = sparse.KernelSize;
            c.sparse_kernel_stride = sparse.KernelStride;
            c.sparse_init_blocks = sparse.InitBlocks;
            c.sparse_block_size = sparse.BlockSize;
            c.sparse_window_size = sparse.WindowSize;
            c.sparse_topk = sparse.TopK;
            c.sparse_dense_len = sparse.DenseLen;
            c.sparse_use_nope = sparse.UseNope ? 1 : 0;
        }
        else
        {
            c.sparse_enabled = 0;
        }
        return c;
    }

    /// <summary>
    /// Applies a draft's config over the engine's defaults for its target (<c>mcpm_draft_config_default</c>, which
    /// needs the loaded target, fills <paramref name="c"/> first). <paramref name="useInputNorm"/> and
    /// <paramref name="useAttnNorm"/> say whether the checkpoint has those norms.
    /// </summary>
    public static void ApplyDraftConfig(ref mcpm_draft_config c, EagleDraftConfig draft, MiniCpmConfig target,
        bool useInputNorm, bool useAttnNorm, MiniCpmLoadOptions options)
    {
        ValidateLoadOptions(options);
        c.num_layers = draft.NumHiddenLayers;
        c.num_heads = draft.NumAttentionHeads;
        c.num_kv_heads = draft.NumKeyValueHeads;
        c.head_dim = draft.HeadDim;
        c.intermediate_size = draft.IntermediateSize;
        c.rms_norm_eps = draft.RmsNormEps;
        // MiniCPM4 drafts scale their residual branches like one more layer of the target.
        c.residual_scale = target.ScaleDepth / MathF.Sqrt(target.NumHiddenLayers + 1);
        c.use_input_norm = useInputNorm ? 1 : 0;
        c.use_attn_norm = useAttnNorm ? 1 : 0;
        c.attention_window = options.DraftAttentionWindow;
    }
}
