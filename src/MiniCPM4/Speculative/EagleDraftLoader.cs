using MiniCPM4.Checkpoints;
using MiniCPM4.Interop;

namespace MiniCPM4.Speculative;

/// <summary>Loads a MiniCPM4 EAGLE draft checkpoint directory into the engine, over a loaded target.</summary>
internal static class EagleDraftLoader
{
    // Tensors some draft exports carry although the draft reuses the target's.
    private static readonly HashSet<string> Ignored = new(StringComparer.Ordinal) { "embed_tokens.weight", "lm_head.weight" };

    public static unsafe (DraftHandle Handle, EagleDraftConfig Config) Load(ModelHandle target, MiniCpmConfig targetConfig,
        string directory, IReadOnlyList<int>? vocabulary, Action<string>? log, CancellationToken ct)
    {
        string dir = Path.GetFullPath(directory);
        if (!Directory.Exists(dir))
            throw new CheckpointException(dir, File.Exists(dir) ? "is a file, not a draft checkpoint directory" : "draft directory does not exist");
        var config = EagleDraftConfig.Load(Path.Combine(dir, "config.json"), targetConfig);
        var files = new List<SafetensorsFile>();
        try
        {
            var map = Checkpoint.FindWeights(dir, files, out string source);
            if (map.ContainsKey("fc.qweight"))
                throw new CheckpointException(source, "quantized (Marlin) EAGLE drafts are not supported yet; use the bf16/fp16 draft");
            if (!map.ContainsKey("fc.weight"))
                throw new CheckpointException(source, "tensor 'fc.weight' not found: not an EAGLE-2 draft checkpoint");

            mcpm_draft_config c = default;
            c.struct_size = (uint)sizeof(mcpm_draft_config);
            NativeStatus.Check(NativeMethods.mcpm_draft_config_default(target, &c));
            c.num_layers = config.NumHiddenLayers;
            c.num_heads = config.NumAttentionHeads;
            c.num_kv_heads = config.NumKeyValueHeads;
            c.head_dim = config.HeadDim;
            c.intermediate_size = config.IntermediateSize;
            c.rms_norm_eps = config.RmsNormEps;
            // MiniCPM4 drafts scale their residual branches like one more layer of the target.
            c.residual_scale = targetConfig.ScaleDepth / MathF.Sqrt(targetConfig.NumHiddenLayers + 1);
            c.use_input_norm = map.ContainsKey("input_norm1.weight") ? 1 : 0;
            c.use_attn_norm = map.ContainsKey("layers.0.input_layernorm.weight") ? 1 : 0;
            NativeStatus.Check(NativeMethods.mcpm_draft_create(target, &c, out var handle));
            try
            {
                foreach (var (name, (file, info)) in map.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    ct.ThrowIfCancellationRequested();
                    if (Ignored.Contains(name))
                    {
                        log?.Invoke($"draft: ignoring '{name}' (the target's is used)");
                        continue;
                    }
                    long[] shape = info.Shape;
                    fixed (long* s = shape)
                    {
                        NativeStatus.Check(NativeMethods.mcpm_draft_set_tensor(handle, name, ToNative(info.DType, name),
                            s, shape.Length, file.GetPointer(info), (nuint)info.ByteLength));
                    }
                }
                if (vocabulary is { Count: > 0 })
                {
                    int[] ids = vocabulary.ToArray();
                    fixed (int* p = ids) NativeStatus.Check(NativeMethods.mcpm_draft_set_vocabulary(handle, p, ids.Length));
                }
                NativeStatus.Check(NativeMethods.mcpm_draft_finalize(handle));
                return (handle, config);
            }
            catch
            {
                handle.Dispose();
                throw;
            }
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    private static int ToNative(TensorDType dtype, string name) => dtype switch
    {
        TensorDType.F32 => NativeConstants.MCPM_DTYPE_F32,
        TensorDType.F16 => NativeConstants.MCPM_DTYPE_F16,
        TensorDType.BF16 => NativeConstants.MCPM_DTYPE_BF16,
        _ => throw new MiniCpmUnsupportedException($"draft tensor '{name}' has dtype {dtype}, which cannot be loaded"),
    };
}
