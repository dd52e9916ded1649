namespace MiniCPM4.Checkpoints;

/// <summary>
/// Sizes the engine's weight arena (<c>mcpm_model_options.weight_arena_bytes</c>): the bytes of every tensor the loader
/// will hand to the engine, in the form it takes there (dense as stored, int4 per projection in the Marlin layout),
/// each rounded up to the engine's 256-byte placement. With that reservation the whole model is one device allocation.
/// </summary>
internal static class WeightArena
{
    /// <summary>The engine places each tensor at a multiple of this many bytes.</summary>
    public const long Alignment = 256;

    public static long Footprint(long bytes) => (bytes + Alignment - 1) / Alignment * Alignment;

    /// <summary>The arena for <paramref name="checkpoint"/> loaded with or without quantize-on-load.</summary>
    public static long PlanBytes(Checkpoint checkpoint, bool quantize)
    {
        long total = checkpoint.OtherTensors.Sum(t => Footprint(t.ByteLength));
        foreach (var linear in checkpoint.Linears)
        {
            if (linear.Format == LinearWeightFormat.Dense && !quantize)
            {
                total += Footprint(linear.Weight!.ByteLength);
                continue;
            }
            // Int4 reaches the engine per projection: CPM.cu's fused tensors are split along N there.
            long k = linear.InFeatures;
            foreach (long n in linear.ProjectionOutFeatures)
                total += Footprint(MarlinTensors.QWeightByteCount(n, k))
                    + Footprint(MarlinTensors.ScalesByteCount(n, k));
        }
        return total;
    }
}
