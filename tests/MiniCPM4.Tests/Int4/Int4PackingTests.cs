using MiniCPM4.Checkpoints;
using MiniCPM4.Interop;
using NUnit.Framework;

namespace MiniCPM4.Tests.Int4;

/// <summary>
/// The engine's int4 helpers (mcpm_int4_quantize, mcpm_int4_repack_gptq) against the independent C# reference of the
/// format, and the managed code built on them (ConcatN, the draft's fc halves). Fresh random weights each run.
/// </summary>
public unsafe class Int4PackingTests
{
    private static readonly Int4Settings Rtn = new(ClipSearch: false, Threads: 2);

    private static MarlinTensors Quantize(float[] w, int n, int k, TensorDType dtype = TensorDType.F32,
        Int4Settings? settings = null)
    {
        byte[] bytes = dtype switch
        {
            TensorDType.F32 => w.SelectMany(BitConverter.GetBytes).ToArray(),
            TensorDType.BF16 => Int4Reference.Bf16Bytes(w),
            _ => Int4Reference.Bytes(w.Select(x => (Half)x).ToArray()),
        };
        fixed (byte* p = bytes) return Int4Weights.Quantize("w", "test", dtype, p, bytes.Length, n, k, settings ?? Rtn);
    }

    /// <summary>The weights as the engine sees them (rounded to <paramref name="dtype"/>).</summary>
    private static float[] Rounded(float[] w, TensorDType dtype) => dtype switch
    {
        TensorDType.BF16 => Int4Reference.FromBf16(Int4Reference.Bf16Bytes(w)),
        TensorDType.F16 => w.Select(x => (float)(Half)x).ToArray(),
        _ => w,
    };

    [Test]
    public void ReferenceClosedForm_EqualsThePermutationConstruction()
    {
        // §4.2 gives the Marlin layout twice: as tile + 1024-permutation + interleave, and as a closed form. Both here.
        int k = 256, n = 192;
        var rng = new Random();
        var q = new byte[k, n];
        for (int i = 0; i < k; i++)
            for (int j = 0; j < n; j++) q[i, j] = (byte)rng.Next(16);

        var perm = new List<int>();
        int[] interleave = [0, 2, 4, 6, 1, 3, 5, 7];
        for (int lane = 0; lane < 32; lane++)
        {
            int t = lane % 4, col = lane / 4;
            var baseI = new List<int>();
            foreach (int blk in new[] { 0, 1 })
                foreach (int row in new[] { 2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9 })
                    baseI.Add(16 * row + col + 8 * blk);
            for (int j = 0; j < 4; j++)
            {
                var group = baseI.Select(b => b + 256 * j).ToArray();
                perm.AddRange(interleave.Select(x => group[x]));
            }
        }
        var expected = new int[k / 16 * 2 * n];
        for (int r = 0; r < k / 16; r++)
        {
            var tile = new int[16 * n];
            for (int nt = 0; nt < n / 16; nt++)
                for (int ki = 0; ki < 16; ki++)
                    for (int ni = 0; ni < 16; ni++) tile[nt * 256 + ki * 16 + ni] = q[16 * r + ki, 16 * nt + ni];
            for (int w = 0; w < 2 * n; w++)
            {
                uint word = 0;
                for (int p = 0; p < 8; p++)
                {
                    int x = 8 * w + p;
                    word |= (uint)tile[1024 * (x / 1024) + perm[x % 1024]] << (4 * p);
                }
                expected[r * 2 * n + w] = (int)word;
            }
        }
        Assert.That(Int4Reference.PackMarlin(q), Is.EqualTo(expected));
    }

    [TestCase(TensorDType.F32, 192, 384)]
    [TestCase(TensorDType.F16, 192, 384)]
    [TestCase(TensorDType.BF16, 192, 384)]
    [TestCase(TensorDType.BF16, 128, 128)] // one group: Marlin's per-channel scale permutation
    [TestCase(TensorDType.F32, 64, 256)]
    public void Quantize_Marlin_EqualsTheReference(TensorDType dtype, int n, int k)
    {
        var w = Int4Reference.RandomWeights(n, k, Environment.TickCount);
        using var m = Quantize(w, n, k, dtype);
        var (q, s) = Int4Reference.Quantize(Rounded(w, dtype), n, k);
        Assert.That(m.QWeightShape, Is.EqualTo(new long[] { k / 16, 2 * n }));
        Assert.That(m.ScalesShape, Is.EqualTo(new long[] { k / 128, n }));
        Assert.That(Int4Reference.Ints(m.QWeight), Is.EqualTo(Int4Reference.PackMarlin(q)));
        Assert.That(m.Scales.ToArray(), Is.EqualTo(Int4Reference.Bytes(Int4Reference.PermuteScales(s))));
    }

    [Test]
    public void Quantize_Gptq_EqualsTheReference_AndRepacksToTheDirectMarlin()
    {
        int n = 128, k = 256;
        var w = Int4Reference.RandomWeights(n, k, Environment.TickCount);
        var (q, s) = Int4Reference.Quantize(w, n, k);
        var wBytes = w.SelectMany(BitConverter.GetBytes).ToArray();
        var gq = new byte[k / 8 * n * 4];
        var gs = new byte[k / 128 * n * 2];
        fixed (byte* p = wBytes) Int4Weights.QuantizeGptq("w", "test", TensorDType.F32, p, wBytes.Length, n, k, Rtn, gq,
            gs);
        Assert.That(Int4Reference.Ints(gq), Is.EqualTo(Int4Reference.PackGptq(q)));
        Assert.That(gs, Is.EqualTo(Int4Reference.Bytes(Int4Reference.Flat(s))));

        using var direct = Quantize(w, n, k);
        foreach (bool extras in new[] { true, false })
        {
            var (rq, rs) =
                Repack(n, k, gq, gs, extras ? Int4Reference.SymmetricZeros(n, k) : null, extras ? Int4Reference.GIdx(k)
                : null);
            Assert.That(rq, Is.EqualTo(direct.QWeight.ToArray()), "AutoGPTQ -> Marlin repack equals direct packing");
            Assert.That(rs, Is.EqualTo(direct.Scales.ToArray()));
        }
    }

    private static (byte[] Q, byte[] S) Repack(int n, int k, byte[] gq, byte[] gs, int[]? zeros, int[]? gIdx)
    {
        var q = new byte[k / 16 * 2 * n * 4];
        var s = new byte[k / 128 * n * 2];
        fixed (byte* pq = gq, ps = gs, oq = q, os = s)
        fixed (int* z = zeros, g = gIdx)
        {
            NativeStatus.Check(
                NativeMethods.mcpm_int4_repack_gptq(n, k, (int*)pq, (nuint)gq.Length, (ushort*)ps, (nuint)gs.Length,
                z, zeros is null ? 0 : (nuint)(zeros.Length * 4), g, gIdx is null ? 0 : (nuint)(gIdx.Length * 4),
                (int*)oq, (nuint)q.Length, (ushort*)os, (nuint)s.Length));
        }
        return (q, s);
    }

    [Test]
    public void Repack_RejectsActOrderAndAsymmetricZeros()
    {
        int n = 64, k = 256;
        var (q, s) = Int4Reference.Quantize(Int4Reference.RandomWeights(n, k, 5), n, k);
        var gq = Int4Reference.Bytes(Int4Reference.PackGptq(q));
        var gs = Int4Reference.Bytes(Int4Reference.Flat(s));
        var zeros = Int4Reference.SymmetricZeros(n, k);
        zeros[1] = 0x77777778; // one zero point of 9: an asymmetric group
        var e = Assert.Throws<MiniCpmInvalidArgumentException>(() => Repack(n, k, gq, gs, zeros, null))!;
        Assert.That(e.Message, Does.Contain("qzeros"));
        var gIdx = Int4Reference.GIdx(k);
        (gIdx[3], gIdx[200]) = (gIdx[200], gIdx[3]); // act-order: a permuted group index
        e = Assert.Throws<MiniCpmInvalidArgumentException>(() => Repack(n, k, gq, gs, null, gIdx))!;
        Assert.That(e.Message, Does.Contain("g_idx[3]").And.Contain("act-order"));
    }

    [Test]
    public void AllZeroGroup_HasScaleTwoFifteenthsAndCodeEight()
    {
        int n = 64, k = 128;
        using var m = Quantize(new float[n * k], n, k);
        Assert.That(Int4Reference.Ints(m.QWeight).Distinct(), Is.EqualTo(new[] { unchecked((int)0x88888888) }));
        var scales = Enumerable.Range(0, n).Select(i => BitConverter.ToHalf(m.Scales.ToArray(), 2 * i)).Distinct();
        Assert.That(scales, Is.EqualTo(new[] { (Half)(2f / 15f) }));
    }

    [Test]
    public void ConcatAlongN_EqualsQuantizingTheStackedWeight()
    {
        // CPM.cu's fused qkv_proj: packing commutes with concatenation along N at multiples of 64.
        int k = 256;
        int[] ns = [128, 64, 64];
        var ws = ns.Select((n, i) => Int4Reference.RandomWeights(n, k, 100 + i)).ToArray();
        var parts = ws.Select((w, i) => Quantize(w, ns[i], k)).ToList();
        try
        {
            using var fused = Int4Weights.ConcatN(parts);
            using var stacked = Quantize(ws.SelectMany(w => w).ToArray(), ns.Sum(), k);
            Assert.That(fused.QWeight.ToArray(), Is.EqualTo(stacked.QWeight.ToArray()));
            Assert.That(fused.Scales.ToArray(), Is.EqualTo(stacked.Scales.ToArray()));
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
        }
    }

    [Test]
    public void ClipSearch_NeverIncreasesTheError_AndChangesHeavyTailedGroups()
    {
        int n = 64, k = 256;
        var rng = new Random();
        // Mostly small values with a rare outlier per group: clipping the outlier helps the rest.
        var w = new float[n * k];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() * 2 - 1) * (i % 97 == 0 ? 0.5f : 0.02f);
        using var rtn = Quantize(w, n, k);
        using var clip = Quantize(w, n, k, settings: new Int4Settings(true, 2));
        Assert.That(SquaredError(w, n, k, clip), Is.LessThanOrEqualTo(SquaredError(w, n, k, rtn) * (1 + 1e-6)));
        Assert.That(clip.QWeight.ToArray(), Is.Not.EqualTo(rtn.QWeight.ToArray()), "some group clipped");
    }

    /// <summary>Σ (w − ŵ)² with ŵ decoded from Marlin tensors by the closed form.</summary>
    private static double SquaredError(float[] w, int n, int k, MarlinTensors m)
    {
        var words = Int4Reference.Ints(m.QWeight);
        var scales = m.Scales.ToArray();
        int[] rows = [0, 1, 8, 9];
        int[] interleave = [0, 2, 4, 6, 1, 3, 5, 7];
        // Undo the scale permutation: s'[64c + 8a + b] = s[64c + a + 8b].
        float Scale(int g, int col)
        {
            int c = col / 64, within = col % 64, a = within % 8, b = within / 8;
            return (float)BitConverter.ToHalf(scales, 2 * (g * n + 64 * c + 8 * a + b));
        }
        double err = 0;
        for (int r = 0; r < k / 16; r++)
            for (int c = 0; c < n / 64; c++)
                for (int lane = 0; lane < 32; lane++)
                    for (int j = 0; j < 4; j++)
                    {
                        uint word = (uint)words[r * 2 * n + 128 * c + 4 * lane + j];
                        for (int p = 0; p < 8; p++)
                        {
                            int o = interleave[p];
                            int kk = 16 * r + 2 * (lane % 4) + rows[o % 4], nn = 64 * c + 16 * j + 8 * (o / 4)
                                + lane / 4;
                            float deq = ((int)((word >> (4 * p)) & 0xF) - 8) * Scale(kk / 128, nn);
                            double d = w[nn * k + kk] - deq;
                            err += d * d;
                        }
                    }
        return err;
    }

    [Test]
    public void DraftFc_HalvesAreQuantizedSeparatelyAndConcatenated()
    {
        int h = 128;
        var fc = Int4Reference.RandomWeights(h, 2 * h, 7); // [H, 2H]: embedding half | feature half per row
        var emb = new float[h * h];
        var feat = new float[h * h];
        for (int r = 0; r < h; r++)
        {
            Array.Copy(fc, r * 2 * h, emb, r * h, h);
            Array.Copy(fc, r * 2 * h + h, feat, r * h, h);
        }
        string dir =
            Path.Combine(Path.GetTempPath(), $"minicpm4-tests-{Environment.ProcessId}", "fc-"
            + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "fc.safetensors");
        CheckpointWriter.WriteSafetensors(path,
            [("fc.weight", TensorDType.BF16, [h, 2 * h], Int4Reference.Bf16Bytes(fc))]);
        using var file = SafetensorsFile.Open(path);
        using var m = Int4Weights.QuantizeDraftFc(new CheckpointTensor(file, file.Tensors["fc.weight"]), h, Rtn);
        using var a = Quantize(emb, h, h, TensorDType.BF16);
        using var b = Quantize(feat, h, h, TensorDType.BF16);
        using var expected = Int4Weights.ConcatN([a, b]);
        Assert.That(m.QWeightShape, Is.EqualTo(new long[] { h / 16, 4 * h }));
        Assert.That(m.ScalesShape, Is.EqualTo(new long[] { 1, 2 * h }));
        Assert.That(m.QWeight.ToArray(), Is.EqualTo(expected.QWeight.ToArray()));
        Assert.That(m.Scales.ToArray(), Is.EqualTo(expected.Scales.ToArray()));
    }

    [Test]
    public void Quantize_NonFiniteWeightOrBadShape_FailsNamingIt()
    {
        var w = Int4Reference.RandomWeights(64, 128, 1);
        w[130] = float.NaN;
        var e = Assert.Throws<CheckpointException>(() => Quantize(w, 64, 128).Dispose())!;
        Assert.That(e.Message,
            Does.Contain("cannot quantize to int4 'w'").And.Contain("w[1][2] is not a finite number"));
        var u = Assert.Throws<MiniCpmUnsupportedException>(() => Quantize(new float[64 * 96], 64, 96).Dispose())!;
        Assert.That(u.Message, Does.Contain("linear 'w' [64, 96] cannot be int4"));
    }
}
