using MiniCPM4.Checkpoints;

namespace MiniCPM4;

/// <summary>
/// How long a context fits in a memory budget next to the weights: for planning a deployment (an RTX 4090's 24 GB, a
/// Jetson AGX Orin's 64 GB shared by CPU and GPU) before loading anything. An estimate from the architecture: the KV
/// cache grows by <see cref="KvBytesPerToken"/> per token, and <see cref="ReserveBytes"/> covers the runtime
/// (CUDA context, cuBLAS workspace), activations of a 256-token prefill chunk and the logits.
/// </summary>
public static class ContextBudget
{
    /// <summary>Memory set aside for everything but weights and KV cache.</summary>
    public const long ReserveBytes = 1L << 30;

    /// <summary>
    /// KV-cache bytes per token: keys and values of every layer in <paramref name="bytesPerElement"/>-byte elements
    /// (2 for the CUDA backend's bf16 cache, 4 for the CPU backend's fp32 cache), plus, for an InfLLM v2 model, its
    /// mean-pooled keys (fp32; one per kernel_stride tokens at level 1 and per 4 × kernel_stride at level 2).
    /// </summary>
    public static long KvBytesPerToken(MiniCpmConfig config, int bytesPerElement)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfLessThan(bytesPerElement, 1);
        long kvDim = (long)config.NumKeyValueHeads * config.HeadDim;
        long bytes = 2L * config.NumHiddenLayers * kvDim * bytesPerElement;
        if (config.Sparse is { } s && s.KernelStride > 0)
            bytes += (long)Math.Ceiling(
                config.NumHiddenLayers * kvDim * 4.0 * (1.0 / s.KernelStride + 1.0 / (4.0 * s.KernelStride)));
        return bytes;
    }

    /// <summary>
    /// The most tokens whose KV cache fits in <paramref name="budgetBytes"/> after <paramref name="weightBytes"/> and
    /// <see cref="ReserveBytes"/>; 0 when the weights alone do not fit. Not capped at max_position_embeddings (the
    /// caller compares; <see cref="LongContext"/> raises that limit).
    /// </summary>
    public static long LongestContext(MiniCpmConfig config, long weightBytes, long budgetBytes, int bytesPerElement = 2)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(weightBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBytes);
        long free = budgetBytes - weightBytes - ReserveBytes;
        return free <= 0 ? 0 : free / KvBytesPerToken(config, bytesPerElement);
    }
}
