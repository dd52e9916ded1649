using System.Buffers;
using System.Runtime.InteropServices;
using MiniCPM4.Interop;

namespace MiniCPM4.Checkpoints;

/// <summary>How dense layers are quantized (mcpm_int4_quantize_params).</summary>
internal readonly record struct Int4Settings(bool ClipSearch, int Threads);

/// <summary>
/// The int4 tensors of one linear layer in the Marlin layout, in buffers rented from <see cref="ArrayPool{T}.Shared"/>
/// (returned by <see cref="Dispose"/>): qweight I32 [K/16, 2N] and scales F16 [K/128, N]. Nothing stays pinned:
/// the buffers are fixed only for the duration of a native call.
/// </summary>
internal sealed class MarlinTensors : IDisposable
{
    private byte[]? _qweight;
    private byte[]? _scales;

    public MarlinTensors(long n, long k)
    {
        N = n;
        K = k;
        QWeightBytes = Int4Weights.CheckedBytes(QWeightByteCount(n, k), "qweight");
        ScalesBytes = Int4Weights.CheckedBytes(ScalesByteCount(n, k), "scales");
        _qweight = ArrayPool<byte>.Shared.Rent(QWeightBytes);
        _scales = ArrayPool<byte>.Shared.Rent(ScalesBytes);
    }

    /// <summary>Bytes of the Marlin qweight (I32 [K/16, 2N]) of an N x K layer.</summary>
    public static long QWeightByteCount(long n, long k) => k / 16 * 2 * n * sizeof(int);

    /// <summary>Bytes of the scales (F16 [K/128, N]) of an N x K layer.</summary>
    public static long ScalesByteCount(long n, long k) => k / LinearResolver.GroupSize * n * sizeof(ushort);

    public long N { get; }
    public long K { get; }
    public int QWeightBytes { get; }
    public int ScalesBytes { get; }
    public long[] QWeightShape => [K / 16, 2 * N];
    public long[] ScalesShape => [K / LinearResolver.GroupSize, N];

    public Span<byte> QWeight =>
        (_qweight ?? throw new ObjectDisposedException(nameof(MarlinTensors))).AsSpan(0, QWeightBytes);
    public Span<byte> Scales =>
        (_scales ?? throw new ObjectDisposedException(nameof(MarlinTensors))).AsSpan(0, ScalesBytes);

    public void Dispose()
    {
        if (_qweight is not null) ArrayPool<byte>.Shared.Return(_qweight);
        if (_scales is not null) ArrayPool<byte>.Shared.Return(_scales);
        _qweight = null;
        _scales = null;
    }
}

/// <summary>
/// The managed side of int4 (W4A16): quantizing dense weights, repacking AutoGPTQ tensors and concatenating Marlin
/// tensors along the output features, all through the engine's stateless helpers (mcpm_int4_quantize,
/// mcpm_int4_repack_gptq). C# only moves bytes here; the packing and the arithmetic are native.
/// </summary>
internal static unsafe class Int4Weights
{
    internal static int CheckedBytes(long bytes, string what) =>
        bytes is >= 0 and <= int.MaxValue ? (int)bytes
            : throw new MiniCpmUnsupportedException(
                $"an int4 {what} tensor of {bytes} bytes is larger than the 2 GiB a layer may have");

    /// <summary>Quantizes a dense [n, k] weight (F32/F16/BF16 at <paramref name="w"/>) into the Marlin
    /// layout.</summary>
    /// <exception cref="CheckpointException">The engine rejected the weight (e.g. non-finite values); names the
    /// tensor.</exception>
    public static MarlinTensors Quantize(string name, string filePath, TensorDType dtype, byte* w, long wBytes, long n,
        long k,
        Int4Settings settings)
    {
        if (LinearResolver.Int4ShapeProblem(name, n, k) is { } problem) throw new MiniCpmUnsupportedException(problem);
        var result = new MarlinTensors(n, k);
        try
        {
            var p = Params(NativeConstants.MCPM_INT4_LAYOUT_MARLIN, settings);
            fixed (byte* q = result.QWeight)
            fixed (byte* s = result.Scales)
            {
                Check(name, filePath, "cannot quantize to int4",
                    NativeMethods.mcpm_int4_quantize(dtype.ToNative(name), w, (nuint)wBytes, n, k,
                    &p, (int*)q, (nuint)result.QWeightBytes, (ushort*)s, (nuint)result.ScalesBytes));
            }
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>Quantizes a dense [n, k] weight into AutoGPTQ's layout: qweight I32 [k/8, n] and scales F16 [k/128,
    /// n].</summary>
    public static void QuantizeGptq(string name, string filePath, TensorDType dtype, byte* w, long wBytes, long n,
        long k,
        Int4Settings settings, Span<byte> qweight, Span<byte> scales)
    {
        if (LinearResolver.Int4ShapeProblem(name, n, k) is { } problem) throw new MiniCpmUnsupportedException(problem);
        var p = Params(NativeConstants.MCPM_INT4_LAYOUT_GPTQ, settings);
        fixed (byte* q = qweight)
        fixed (byte* s = scales)
        {
            int* qp = (int*)q;
            ushort* sp = (ushort*)s;
            nuint ql = (nuint)qweight.Length, sl = (nuint)scales.Length;
            Check(name, filePath, "cannot quantize to int4",
                NativeMethods.mcpm_int4_quantize(dtype.ToNative(name), w, (nuint)wBytes, n, k,
                &p, qp, ql, sp, sl));
        }
    }

    /// <summary>Repacks an AutoGPTQ linear (validating qzeros and g_idx when present) into the Marlin layout.</summary>
    /// <exception cref="CheckpointException">The engine rejected the tensors (act-order g_idx, asymmetric qzeros,
    /// ...).</exception>
    public static MarlinTensors RepackGptq(CheckpointLinear linear)
    {
        if (linear.Format != LinearWeightFormat.Gptq) throw new ArgumentException(
            $"{linear.Name} is not an AutoGPTQ linear", nameof(linear));
        long n = linear.OutFeatures, k = linear.InFeatures;
        var result = new MarlinTensors(n, k);
        try
        {
            var q = linear.QWeight!;
            var s = linear.Scales!;
            var z = linear.QZeros;
            var g = linear.GIdx;
            fixed (byte* oq = result.QWeight)
            fixed (byte* os = result.Scales)
            {
                int* oqp = (int*)oq;
                ushort* osp = (ushort*)os;
                Check(linear.Name, q.FilePath, "cannot repack the AutoGPTQ tensors",
                    NativeMethods.mcpm_int4_repack_gptq(n, k,
                    (int*)q.Pointer, (nuint)q.ByteLength, (ushort*)s.Pointer, (nuint)s.ByteLength,
                    z is null ? null : (int*)z.Pointer, z is null ? 0 : (nuint)z.ByteLength,
                    g is null ? null : (int*)g.Pointer, g is null ? 0 : (nuint)g.ByteLength,
                    oqp, (nuint)result.QWeightBytes, osp, (nuint)result.ScalesBytes));
            }
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>A copy of a stored Marlin pair (for writers that reassemble fused layers).</summary>
    public static MarlinTensors CopyMarlin(CheckpointLinear linear)
    {
        var result = new MarlinTensors(linear.OutFeatures, linear.InFeatures);
        new ReadOnlySpan<byte>(linear.QWeight!.Pointer, result.QWeightBytes).CopyTo(result.QWeight);
        new ReadOnlySpan<byte>(linear.Scales!.Pointer, result.ScalesBytes).CopyTo(result.Scales);
        return result;
    }

    /// <summary>
    /// Concatenates Marlin tensors of layers that share K along N (CPM.cu's qkv_proj, gate_up_proj and the draft's fc):
    /// row by row, because the Marlin packing commutes with concatenation at multiples of 64 columns.
    /// </summary>
    public static MarlinTensors ConcatN(IReadOnlyList<MarlinTensors> parts)
    {
        long k = parts[0].K;
        if (parts.Any(p => p.K != k)) throw new ArgumentException("parts must share K", nameof(parts));
        var result = new MarlinTensors(parts.Sum(p => p.N), k);
        try
        {
            ConcatRows(parts, p => p.QWeight, p => (int)(2 * p.N * 4), result.QWeight, k / 16);
            ConcatRows(parts, p => p.Scales, p => (int)(p.N * 2), result.Scales, k / LinearResolver.GroupSize);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    private delegate Span<byte> SpanOf(MarlinTensors t);

    private static void ConcatRows(IReadOnlyList<MarlinTensors> parts, SpanOf span, Func<MarlinTensors, int> rowBytes,
        Span<byte> dest, long rows)
    {
        int offset = 0;
        for (long r = 0; r < rows; r++)
        {
            foreach (var p in parts)
            {
                int rb = rowBytes(p);
                span(p).Slice((int)(r * rb), rb).CopyTo(dest[offset..]);
                offset += rb;
            }
        }
    }

    /// <summary>
    /// The draft's fc.weight [H, 2H] quantized as CPM.cu stores it: the embedding half (columns [0, H)) and the feature
    /// half (columns [H, 2H)) quantized separately and concatenated along N (fc.qweight [H/16, 4H], fc.scales [H/128,
    /// 2H]).
    /// </summary>
    public static MarlinTensors QuantizeDraftFc(CheckpointTensor fc, long hidden, Int4Settings settings)
    {
        if (LinearResolver.Int4ShapeProblem("fc", hidden, hidden) is { } problem) throw new MiniCpmUnsupportedException(
            problem);
        int es = fc.DType.SizeInBytes();
        int halfBytes = CheckedBytes(hidden * hidden * es, "fc half");
        long rowBytes = 2 * hidden * es, halfRow = hidden * es;
        byte[] half = ArrayPool<byte>.Shared.Rent(halfBytes);
        var parts = new List<MarlinTensors>(2);
        try
        {
            for (int h = 0; h < 2; h++)
            {
                byte* src = fc.Pointer;
                for (long r = 0; r < hidden; r++)
                    new ReadOnlySpan<byte>(src + r * rowBytes + h * halfRow, (int)halfRow).CopyTo(
                        half.AsSpan((int)(r * halfRow)));
                fixed (byte* p = half)
                    parts.Add(
                        Quantize(fc.Name + (h == 0 ? " (embedding half)" : " (feature half)"), fc.FilePath, fc.DType, p,
                        halfBytes,
                        hidden, hidden, settings));
            }
            return ConcatN(parts);
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
            ArrayPool<byte>.Shared.Return(half);
        }
    }

    private static mcpm_int4_quantize_params Params(int layout, Int4Settings settings)
    {
        mcpm_int4_quantize_params p = default;
        p.struct_size = (uint)sizeof(mcpm_int4_quantize_params);
        NativeStatus.Check(NativeMethods.mcpm_int4_quantize_params_default(&p));
        p.layout = layout;
        p.clip_search = settings.ClipSearch ? 1 : 0;
        p.num_threads = Math.Max(0, settings.Threads);
        return p;
    }

    /// <summary>Runs a native int4 helper; an INVALID_ARGUMENT (bad data in a checkpoint) becomes a CheckpointException
    /// naming the layer.</summary>
    private static void Check(string name, string filePath, string what, int status)
    {
        try
        {
            NativeStatus.Check(status);
        }
        catch (MiniCpmInvalidArgumentException e)
        {
            throw new CheckpointException(filePath, $"{what} '{name}': {e.Message}", e);
        }
    }

    /// <summary>Reinterprets rented bytes as the int32 words a writer needs.</summary>
    internal static Span<int> AsInts(Span<byte> bytes) => MemoryMarshal.Cast<byte, int>(bytes);
}
