using System.Buffers.Binary;
using MiniCPM4.Checkpoints;

namespace MiniCPM4.Tests.Int4;

/// <summary>
/// An independent, deliberately plain C# implementation of the int4 format (shared/reference/algorithms.md §4.1–4.2):
/// round-to-nearest symmetric quantization with the per-group absmax scale, AutoGPTQ packing, and Marlin packing from
/// the closed form (lane / sub-tile / nibble interleave), plus the Marlin scale permutation. The tests use it as the
/// oracle for the engine's mcpm_int4_quantize / mcpm_int4_repack_gptq and to build checkpoints by hand.
/// </summary>
internal static class Int4Reference
{
    public const int Group = 128;

    private static readonly int[] Interleave = [0, 2, 4, 6, 1, 3, 5, 7];

    /// <summary>q[k, n] in 0..15 and scales[g, n] (fp16) of a dense w [n, k] (row-major floats).</summary>
    public static (byte[,] Q, Half[,] Scales) Quantize(float[] w, int n, int k)
    {
        var q = new byte[k, n];
        var s = new Half[k / Group, n];
        for (int col = 0; col < n; col++)
        {
            for (int g = 0; g < k / Group; g++)
            {
                float absmax = 0;
                for (int i = 0; i < Group; i++) absmax = Math.Max(absmax, Math.Abs(w[col * k + g * Group + i]));
                if (absmax == 0) absmax = 1;
                Half scale = (Half)(2f * absmax / 15f);
                s[g, col] = scale;
                float sf = (float)scale;
                for (int i = 0; i < Group; i++)
                {
                    int kk = g * Group + i;
                    int v = (int)MathF.Round(w[col * k + kk] / sf, MidpointRounding.ToEven) + 8;
                    q[kk, col] = (byte)Math.Clamp(v, 0, 15);
                }
            }
        }
        return (q, s);
    }

    /// <summary>AutoGPTQ qweight [K/8, N]: nibble j of row i is q[8i + j].</summary>
    public static int[] PackGptq(byte[,] q)
    {
        int k = q.GetLength(0), n = q.GetLength(1);
        var packed = new int[k / 8 * n];
        for (int i = 0; i < k / 8; i++)
            for (int col = 0; col < n; col++)
            {
                uint word = 0;
                for (int j = 0; j < 8; j++) word |= (uint)q[8 * i + j, col] << (4 * j);
                packed[i * n + col] = (int)word;
            }
        return packed;
    }

    /// <summary>Marlin qweight [K/16, 2N] by the closed form of §4.2.</summary>
    public static int[] PackMarlin(byte[,] q)
    {
        int k = q.GetLength(0), n = q.GetLength(1);
        var packed = new int[k / 16 * 2 * n];
        int[] rows = [0, 1, 8, 9];
        for (int r = 0; r < k / 16; r++)
            for (int c = 0; c < n / 64; c++)
                for (int lane = 0; lane < 32; lane++)
                {
                    int t = lane % 4, col = lane / 4;
                    for (int j = 0; j < 4; j++)
                    {
                        uint word = 0;
                        for (int p = 0; p < 8; p++)
                        {
                            int o = Interleave[p], blk = o / 4, rr = o % 4;
                            int kk = 16 * r + 2 * t + rows[rr];
                            int nn = 64 * c + 16 * j + 8 * blk + col;
                            word |= (uint)q[kk, nn] << (4 * p);
                        }
                        packed[r * 2 * n + 128 * c + 4 * lane + j] = (int)word;
                    }
                }
        return packed;
    }

    /// <summary>
    /// Marlin's scale permutation. Grouped (more than one group along K): within each 64-column chunk,
    /// s'[64c + 8a + b] = s[64c + a + 8b]. With a single group (K == 128, the group is the whole column) Marlin treats
    /// the
    /// layer as per-channel, as vLLM's marlin_permute_scales does: within each 32-column chunk,
    /// s'[32c + 8a + m] = s[32c + 2a + off[m]], off = [0, 1, 8, 9, 16, 17, 24, 25].
    /// </summary>
    public static Half[] PermuteScales(Half[,] s)
    {
        int groups = s.GetLength(0), n = s.GetLength(1);
        var result = new Half[groups * n];
        if (groups == 1)
        {
            int[] off = [0, 1, 8, 9, 16, 17, 24, 25];
            for (int c = 0; c < n / 32; c++)
                for (int a = 0; a < 4; a++)
                    for (int m = 0; m < 8; m++)
                        result[32 * c + 8 * a + m] = s[0, 32 * c + 2 * a + off[m]];
            return result;
        }
        for (int g = 0; g < groups; g++)
            for (int c = 0; c < n / 64; c++)
                for (int a = 0; a < 8; a++)
                    for (int b = 0; b < 8; b++)
                        result[g * n + 64 * c + 8 * a + b] = s[g, 64 * c + a + 8 * b];
        return result;
    }

    /// <summary>The scales row-major without permutation (AutoGPTQ's layout).</summary>
    public static Half[] Flat(Half[,] s)
    {
        int groups = s.GetLength(0), n = s.GetLength(1);
        var result = new Half[groups * n];
        for (int g = 0; g < groups; g++)
            for (int col = 0; col < n; col++) result[g * n + col] = s[g, col];
        return result;
    }

    /// <summary>AutoGPTQ's symmetric qzeros: every nibble 7 ([K/128, N/8]).</summary>
    public static int[] SymmetricZeros(int n, int k) => Enumerable.Repeat(0x77777777, k / Group * (n / 8)).ToArray();

    /// <summary>g_idx without act-order: k / 128.</summary>
    public static int[] GIdx(int k) => Enumerable.Range(0, k).Select(i => i / Group).ToArray();

    /// <summary>Random weights with a spread of magnitudes per group (so absmax differs between groups).</summary>
    public static float[] RandomWeights(int n, int k, int seed)
    {
        var rng = new Random(seed);
        var w = new float[n * k];
        for (int i = 0; i < w.Length; i++)
        {
            double scale = 0.02 * (1 + (i / Group) % 7);
            w[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        }
        return w;
    }

    public static byte[] Bytes(int[] values)
    {
        var b = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4 * i), values[i]);
        return b;
    }

    public static byte[] Bytes(Half[] values)
    {
        var b = new byte[values.Length * 2];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(b.AsSpan(2 * i), values[i]);
        return b;
    }

    public static byte[] Bf16Bytes(float[] values)
    {
        var b = new byte[values.Length * 2];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(2 * i),
            CheckpointWriter.FloatToBf16(values[i]));
        return b;
    }

    public static float[] FromBf16(ReadOnlySpan<byte> b)
    {
        var f = new float[b.Length / 2];
        for (int i = 0; i < f.Length; i++) f[i] =
            CheckpointWriter.Bf16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(b[(2 * i)..]));
        return f;
    }

    public static int[] Ints(ReadOnlySpan<byte> b)
    {
        var v = new int[b.Length / 4];
        for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadInt32LittleEndian(b[(4 * i)..]);
        return v;
    }
}
