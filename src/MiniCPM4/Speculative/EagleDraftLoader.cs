using MiniCPM4.Checkpoints;
using MiniCPM4.Interop;

namespace MiniCPM4.Speculative;

/// <summary>
/// Loads a MiniCPM4 EAGLE draft checkpoint directory into the engine, over a loaded target. Dense drafts and CPM.cu's
/// Marlin drafts (quantization_config in the draft's config.json; fc.qweight / fc.scales and int4 layers, fused or
/// not) are accepted; <see cref="WeightQuantization.Int4"/> quantizes a dense draft while loading.
/// </summary>
internal static class EagleDraftLoader
{
    // Tensors some draft exports carry although the draft reuses the target's.
    private static readonly HashSet<string> Ignored =
        new(StringComparer.Ordinal) { "embed_tokens.weight", "lm_head.weight" };

    /// <summary>Loads the draft; returns its handle, config and the number of its linear layers held as int4 (fc
    /// counted once).</summary>
    public static unsafe (DraftHandle Handle, EagleDraftConfig Config, int Int4Linears) Load(ModelHandle target,
        MiniCpmConfig targetConfig,
        string directory, IReadOnlyList<int>? vocabulary, MiniCpmLoadOptions options, CancellationToken ct)
    {
        var log = options.Log;
        string dir = Path.GetFullPath(directory);
        if (!Directory.Exists(dir))
            throw new CheckpointException(dir, File.Exists(dir) ? "is a file, not a draft checkpoint directory"
                : "draft directory does not exist");
        string configPath = Path.Combine(dir, "config.json");
        var config = EagleDraftConfig.Load(configPath, targetConfig);
        bool quantized = config.Quantization is not null;
        bool quantize = options.Quantization == WeightQuantization.Int4;
        var settings = new Int4Settings(options.QuantizationClipSearch, options.Threads);
        var files = new List<SafetensorsFile>();
        try
        {
            var map = Checkpoint.FindWeights(dir, files, out string source, quantized, log);
            var used = new HashSet<string>(StringComparer.Ordinal);
            long h = config.HiddenSize;

            // fc: dense [H, 2H] (embedding half | feature half along the input), or CPM.cu's Marlin pair [H/16, 4H] /
            // [H/128, 2H].
            CheckpointLinear? fcMarlin = null;
            CheckpointTensor? fcDense = null;
            if (map.ContainsKey("fc.qweight") || map.ContainsKey("fc.scales"))
            {
                if (map.TryGetValue("fc.weight", out var both))
                    throw new CheckpointException(both.File.Path,
                        "both 'fc.weight' and 'fc.qweight' are present: fc is stored once, dense or int4");
                fcMarlin =
                    LinearResolver.ResolveMarlin(map, "fc", ["fc (embedding half)", "fc (feature half)"], [h, h], h,
                    quantized, used);
            }
            else if (map.TryGetValue("fc.weight", out var fc))
            {
                LinearResolver.RequireDense("fc.weight", fc, [h, 2 * h]);
                fcDense = new CheckpointTensor(fc.File, fc.Info);
                used.Add("fc.weight");
            }
            else
            {
                throw new CheckpointException(source,
                    "tensor 'fc.weight' (or int4 'fc.qweight' + 'fc.scales') not found: not an EAGLE-2 draft " +
                    "checkpoint");
            }

            long q = (long)config.NumAttentionHeads * config.HeadDim,
                kv = (long)config.NumKeyValueHeads * config.HeadDim;
            var (slots, groups) =
                Checkpoint.LinearLayout(config.NumHiddenLayers, h, q, kv, config.IntermediateSize, prefix: "");
            var missing = new List<string>();
            var resolved = LinearResolver.Resolve(slots, groups, map, quantized, missing, used);
            if (missing.Count > 0)
            {
                string more = missing.Count > 1 ? $" (and {missing.Count - 1} other required tensor(s) are missing)"
                    : "";
                throw new CheckpointException(source, $"missing tensor '{missing[0]}'{more}");
            }
            var linears = slots.Select(s => resolved[s.Name]).Distinct().ToList();
            LinearResolver.CheckConsistent(fcMarlin is null ? linears : [fcMarlin, .. linears], quantized, configPath,
                source);
            if (quantize)
            {
                var dense = linears.Where(l => !l.IsInt4).Select(l => (l.Name, l.OutFeatures, l.InFeatures)).ToList();
                if (fcDense is not null) dense.Insert(0, ("fc (each half of fc.weight)", h, h));
                if (LinearLoader.CheckQuantizable(dense) is { } bad) throw bad;
            }

            mcpm_draft_config c = default;
            c.struct_size = (uint)sizeof(mcpm_draft_config);
            NativeStatus.Check(NativeMethods.mcpm_draft_config_default(target, &c));
            NativeConfigMapper.ApplyDraftConfig(ref c, config, targetConfig,
                useInputNorm: map.ContainsKey("input_norm1.weight"),
                useAttnNorm: map.ContainsKey("layers.0.input_layernorm.weight"), options);
            NativeStatus.Check(NativeMethods.mcpm_draft_create(target, &c, out var handle));
            try
            {
                LinearLoader.SetTensor set = (name, dtype, shape, data, byteLength) =>
                {
                    fixed (long* s = shape)
                    {
                        NativeStatus.Check(
                            NativeMethods.mcpm_draft_set_tensor(handle, name, dtype.ToNative(name), s, shape.Length,
                            data, (nuint)byteLength));
                    }
                };
                int int4 = 0;
                if (fcMarlin is not null)
                {
                    LinearLoader.Load(fcMarlin, quantize, settings, set);
                    int4++;
                }
                else if (quantize)
                {
                    using var m = Int4Weights.QuantizeDraftFc(fcDense!, h, settings);
                    LinearLoader.SetMarlin("fc", m, set);
                    int4++;
                }
                else
                {
                    set(fcDense!.Name, fcDense.DType, fcDense.Shape, fcDense.Pointer, fcDense.ByteLength);
                }
                foreach (var linear in linears)
                {
                    ct.ThrowIfCancellationRequested();
                    int4 += LinearLoader.Load(linear, quantize, settings, set);
                }
                // Everything else (fc.bias, the norms) goes by name; the engine rejects names it does not know.
                foreach (var (name, (file, info)) in map.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    ct.ThrowIfCancellationRequested();
                    if (used.Contains(name)) continue;
                    if (Ignored.Contains(name))
                    {
                        log?.Invoke($"draft: ignoring '{name}' (the target's is used)");
                        continue;
                    }
                    set(name, info.DType, info.Shape, file.GetPointer(info), info.ByteLength);
                }
                if (vocabulary is { Count: > 0 })
                {
                    int[] ids = vocabulary.ToArray();
                    fixed (int* p = ids) NativeStatus.Check(
                        NativeMethods.mcpm_draft_set_vocabulary(handle, p, ids.Length));
                }
                NativeStatus.Check(NativeMethods.mcpm_draft_finalize(handle));
                return (handle, config, int4);
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
}
