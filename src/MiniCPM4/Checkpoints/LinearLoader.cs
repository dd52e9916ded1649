namespace MiniCPM4.Checkpoints;

/// <summary>
/// Hands a checkpoint's linear layers to the engine (model or draft) in the form the load options ask for: dense as
/// stored; Marlin tensors as stored (CPM.cu's fused names included; the engine splits them); AutoGPTQ tensors repacked
/// to Marlin under the projection's name; dense layers quantized to Marlin when <see cref="WeightQuantization.Int4"/>
/// is requested. One layer's buffers exist at a time.
/// </summary>
internal static unsafe class LinearLoader
{
    /// <summary>Copies one tensor into the engine (mcpm_model_set_tensor or mcpm_draft_set_tensor); throws on
    /// failure.</summary>
    public delegate void SetTensor(string name, TensorDType dtype, long[] shape, byte* data, long byteLength);

    /// <summary>The first dense linear that <see cref="WeightQuantization.Int4"/> cannot quantize, as an exception, or
    /// null.</summary>
    public static MiniCpmUnsupportedException? CheckQuantizable(
        IEnumerable<(string Name, long Out, long In)> denseLinears)
    {
        var bad =
            denseLinears.Select(l => LinearResolver.Int4ShapeProblem(l.Name, l.Out, l.In)).OfType<string>().ToList();
        if (bad.Count == 0) return null;
        string more = bad.Count > 1 ? $" ({bad.Count - 1} more linear layer(s) have the same problem)" : "";
        return new MiniCpmUnsupportedException($"cannot quantize to int4: {bad[0]}{more}");
    }

    /// <summary>Sends one linear to the engine; returns the number of projections it now holds as int4.</summary>
    public static int Load(CheckpointLinear linear, bool quantize, Int4Settings settings, SetTensor set)
    {
        switch (linear.Format)
        {
            case LinearWeightFormat.Dense:
            {
                var w = linear.Weight!;
                if (!quantize)
                {
                    set(w.Name, w.DType, w.Shape, w.Pointer, w.ByteLength);
                    return 0;
                }
                using var m =
                    Int4Weights.Quantize(w.Name, w.FilePath, w.DType, w.Pointer, w.ByteLength, linear.OutFeatures,
                    linear.InFeatures, settings);
                SetMarlin(linear.Name, m, set);
                return 1;
            }
            case LinearWeightFormat.Marlin:
            {
                var q = linear.QWeight!;
                var s = linear.Scales!;
                FromCheckpoint(linear, q, () =>
                {
                    set(q.Name, TensorDType.I32, q.Shape, q.Pointer, q.ByteLength);
                    set(s.Name, TensorDType.F16, s.Shape, s.Pointer, s.ByteLength);
                });
                return linear.Projections.Count;
            }
            case LinearWeightFormat.Gptq:
            {
                using var m = Int4Weights.RepackGptq(linear);
                FromCheckpoint(linear, linear.Scales!, () => SetMarlin(linear.Name, m, set));
                return 1;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(linear), linear.Format, "unknown linear format");
        }
    }

    /// <summary>Sends Marlin tensors as "<paramref name="module"/>.qweight" / ".scales".</summary>
    public static void SetMarlin(string module, MarlinTensors m, SetTensor set)
    {
        fixed (byte* q = m.QWeight)
            set(module + ".qweight", TensorDType.I32, m.QWeightShape, q, m.QWeightBytes);
        fixed (byte* s = m.Scales)
            set(module + ".scales", TensorDType.F16, m.ScalesShape, s, m.ScalesBytes);
    }

    /// <summary>
    /// The engine rejecting int4 data read from a checkpoint (non-finite scales, say) is a defect of that checkpoint:
    /// it becomes a CheckpointException naming the file and the layer, with the engine's message (which names the
    /// tensor it was given: for CPM.cu's fused layers, the projection it split off).
    /// </summary>
    private static void FromCheckpoint(CheckpointLinear linear, CheckpointTensor tensor, Action action)
    {
        try
        {
            action();
        }
        catch (MiniCpmInvalidArgumentException e)
        {
            throw new CheckpointException(tensor.FilePath, $"int4 layer '{linear.Name}': {e.Message}", e);
        }
    }
}
