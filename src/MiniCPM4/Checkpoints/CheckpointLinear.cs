namespace MiniCPM4.Checkpoints;

/// <summary>How a linear layer's weights are stored in a checkpoint.</summary>
public enum LinearWeightFormat
{
    /// <summary>A dense <c>weight</c> [out_features, in_features] in F32, F16 or BF16.</summary>
    Dense,

    /// <summary>
    /// int4 (W4A16) in Marlin's packed layout, as CPM.cu's checkpoints store it: <c>qweight</c> I32
    /// [in/16, 2·out] and <c>scales</c> F16 [in/128, out] (permuted). Loaded as it is.
    /// </summary>
    Marlin,

    /// <summary>
    /// int4 (W4A16) in AutoGPTQ's layout: <c>qweight</c> I32 [in/8, out], <c>scales</c> F16 [in/128, out], optional
    /// <c>qzeros</c> I32 [in/128, out/8] (every nibble 7) and <c>g_idx</c> I32 [in] (k/128). Repacked to Marlin at
    /// load.
    /// </summary>
    Gptq,
}

/// <summary>
/// One linear layer of a checkpoint as stored: a dense weight, or int4 tensors. CPM.cu's fused layers
/// (<c>self_attn.qkv_proj</c>, <c>mlp.gate_up_proj</c>) are one entry covering several <see cref="Projections"/>,
/// whose output columns are concatenated in order.
/// </summary>
public sealed class CheckpointLinear
{
    internal CheckpointLinear(string name, LinearWeightFormat format, long inFeatures, string[] projections,
        long[] projectionOutFeatures,
        CheckpointTensor? weight, CheckpointTensor? qweight, CheckpointTensor? scales, CheckpointTensor? qzeros,
            CheckpointTensor? gIdx)
    {
        Name = name;
        Format = format;
        InFeatures = inFeatures;
        Projections = projections;
        ProjectionOutFeatures = projectionOutFeatures;
        OutFeatures = projectionOutFeatures.Sum();
        Weight = weight;
        QWeight = qweight;
        Scales = scales;
        QZeros = qzeros;
        GIdx = gIdx;
    }

    /// <summary>The module name in the checkpoint, e.g. "model.layers.0.self_attn.q_proj" or, fused,
    /// "model.layers.0.self_attn.qkv_proj".</summary>
    public string Name { get; }

    public LinearWeightFormat Format { get; }

    /// <summary>True for the int4 formats.</summary>
    public bool IsInt4 => Format != LinearWeightFormat.Dense;

    /// <summary>Input features (K).</summary>
    public long InFeatures { get; }

    /// <summary>Output features (N; the sum over <see cref="Projections"/> when fused).</summary>
    public long OutFeatures { get; }

    /// <summary>The projections this entry holds, by module name (one unless fused; q, k, v or gate, up when
    /// fused).</summary>
    public IReadOnlyList<string> Projections { get; }

    /// <summary>Output features of each of <see cref="Projections"/>.</summary>
    public IReadOnlyList<long> ProjectionOutFeatures { get; }

    /// <summary>True when one tensor pair holds several projections (CPM.cu's qkv_proj / gate_up_proj).</summary>
    public bool IsFused => Projections.Count > 1;

    /// <summary>The dense weight [out, in] (<see cref="LinearWeightFormat.Dense"/>).</summary>
    public CheckpointTensor? Weight { get; }

    /// <summary>The packed int4 weights (I32).</summary>
    public CheckpointTensor? QWeight { get; }

    /// <summary>The fp16 scales [in/128, out].</summary>
    public CheckpointTensor? Scales { get; }

    /// <summary>AutoGPTQ zero points (optional; checked to be the symmetric 8 at load).</summary>
    public CheckpointTensor? QZeros { get; }

    /// <summary>AutoGPTQ group index (optional; checked to be k/128 at load).</summary>
    public CheckpointTensor? GIdx { get; }

    /// <summary>The tensors of this entry, in file order of importance (weight or qweight, scales, qzeros,
    /// g_idx).</summary>
    public IEnumerable<CheckpointTensor> Tensors
    {
        get
        {
            if (Weight is not null) yield return Weight;
            if (QWeight is not null) yield return QWeight;
            if (Scales is not null) yield return Scales;
            if (QZeros is not null) yield return QZeros;
            if (GIdx is not null) yield return GIdx;
        }
    }

    /// <summary>Bytes of <see cref="Tensors"/>.</summary>
    public long ByteLength => Tensors.Sum(t => t.ByteLength);

    public override string ToString() => $"{Name} {Format} [{OutFeatures}, {InFeatures}]";
}

/// <summary>
/// Finds each linear layer's tensors in a checkpoint's tensor map and validates their presence, dtype and shape:
/// a dense weight, CPM.cu's fused Marlin tensors, or per-projection Marlin / AutoGPTQ tensors (told apart by the
/// qweight's shape). Shared by the model checkpoint and the EAGLE draft loader.
/// </summary>
internal static class LinearResolver
{
    /// <summary>Group size of the int4 format (input features per scale).</summary>
    public const int GroupSize = 128;

    /// <summary>A linear layer the architecture needs: its module name and nn.Linear shape [Out, In].</summary>
    public sealed record Slot(string Name, long Out, long In);

    /// <summary>CPM.cu's fused form of consecutive slots that share their input (q|k|v, gate|up).</summary>
    public sealed record FusedGroup(string Name, Slot[] Members);

    private static readonly string[] ProjectionSuffixes = [".weight", ".qweight", ".scales", ".qzeros", ".g_idx"];

    /// <summary>
    /// Resolves every slot. Slots that are neither dense nor int4 are added to <paramref name="missing"/> (by the name
    /// a
    /// caller should report) and left out of the result. Every tensor name consumed is added to <paramref
    /// name="used"/>.
    /// <paramref name="quantized"/> says whether the config has a quantization_config; int4 tensors without one are an
    /// error.
    /// </summary>
    public static Dictionary<string,
        CheckpointLinear> Resolve(IReadOnlyList<Slot> slots, IReadOnlyList<FusedGroup> groups,
        IReadOnlyDictionary<string, (SafetensorsFile File, TensorInfo Info)> map, bool quantized, List<string> missing,
        HashSet<string> used)
    {
        var result = new Dictionary<string, CheckpointLinear>(StringComparer.Ordinal);
        foreach (var g in groups)
        {
            string qName = g.Name + ".qweight", sName = g.Name + ".scales";
            bool hasQ = map.ContainsKey(qName), hasS = map.ContainsKey(sName);
            if (!hasQ && !hasS) continue;
            foreach (var m in g.Members)
                foreach (var suffix in ProjectionSuffixes)
                    if (map.TryGetValue(m.Name + suffix, out var clash))
                        throw new CheckpointException(clash.File.Path,
                            $"both the fused '{(hasQ ? qName : sName)}' and '{m.Name + suffix}' are present: a layer " +
                                $"is stored once, fused or per projection");
            var linear =
                ResolveMarlin(map, g.Name, g.Members.Select(m => m.Name).ToArray(),
                g.Members.Select(m => m.Out).ToArray(),
                g.Members[0].In, quantized, used);
            foreach (var m in g.Members) result[m.Name] = linear;
        }

        foreach (var slot in slots)
        {
            if (result.ContainsKey(slot.Name)) continue;
            var linear = ResolveOne(map, slot, quantized, used);
            if (linear is null) missing.Add(slot.Name + (quantized ? ".qweight" : ".weight"));
            else result[slot.Name] = linear;
        }
        return result;
    }

    private static CheckpointLinear? ResolveOne(IReadOnlyDictionary<string,
        (SafetensorsFile File, TensorInfo Info)> map, Slot slot,
        bool quantized, HashSet<string> used)
    {
        string wName = slot.Name + ".weight", qName = slot.Name + ".qweight", sName = slot.Name + ".scales";
        bool hasW = map.TryGetValue(wName, out var w), hasQ = map.TryGetValue(qName, out var q),
            hasS = map.TryGetValue(sName, out var s);
        if (hasW)
        {
            if (hasQ || hasS)
                throw new CheckpointException(w.File.Path,
                    $"both '{wName}' and '{(hasQ ? qName : sName)}' are present: a layer is stored once, dense or " +
                        $"int4");
            RequireDense(wName, w, [slot.Out, slot.In]);
            used.Add(wName);
            return new CheckpointLinear(slot.Name, LinearWeightFormat.Dense, slot.In, [slot.Name], [slot.Out],
                new CheckpointTensor(w.File, w.Info), null, null, null, null);
        }
        if (!hasQ && !hasS) return null;

        var any = hasQ ? q : s;
        if (!quantized)
            throw new CheckpointException(any.File.Path,
                $"tensor '{(hasQ ? qName : sName)}' is an int4 tensor but config.json has no quantization_config " +
                    $"(quantization is read from config.json)");
        if (!hasQ)
            throw new CheckpointException(s.File.Path,
                $"tensor '{qName}' is missing: '{sName}' is present, and an int4 layer needs both");
        if (!hasS)
            throw new CheckpointException(q.File.Path, $"tensor '{sName}' is missing: '{qName}' needs its fp16 scales");
        RequireInt4Shape(q.File.Path, slot.Name, slot.Out, slot.In);
        if (q.Info.DType != TensorDType.I32)
            throw new CheckpointException(q.File.Path,
                $"tensor '{qName}' has dtype {q.Info.DType.ToSafetensorsName()}; packed int4 weights (qweight) must " +
                    $"be I32");

        long[] marlin = [slot.In / 16, 2 * slot.Out], gptq = [slot.In / 8, slot.Out];
        LinearWeightFormat format;
        if (q.Info.Shape.AsSpan().SequenceEqual(marlin)) format = LinearWeightFormat.Marlin;
        else if (q.Info.Shape.AsSpan().SequenceEqual(gptq)) format = LinearWeightFormat.Gptq;
        else
            throw new CheckpointException(q.File.Path,
                $"tensor '{qName}' has shape {Fmt(q.Info.Shape)}; a linear with {slot.In} inputs and {slot.Out} " +
                    $"outputs needs " +
                $"{Fmt(marlin)} (Marlin, [in/16, 2*out]) or {Fmt(gptq)} (AutoGPTQ, [in/8, out])");
        RequireScales(sName, s, slot.In, slot.Out);
        used.Add(qName);
        used.Add(sName);

        CheckpointTensor? zeros = null, gIdx = null;
        if (format == LinearWeightFormat.Gptq)
        {
            string zName = slot.Name + ".qzeros", gName = slot.Name + ".g_idx";
            if (map.TryGetValue(zName, out var z))
            {
                Require(zName, z, TensorDType.I32, [slot.In / GroupSize, slot.Out / 8],
                    "AutoGPTQ zero points (qzeros)");
                zeros = new CheckpointTensor(z.File, z.Info);
                used.Add(zName);
            }
            if (map.TryGetValue(gName, out var g))
            {
                Require(gName, g, TensorDType.I32, [slot.In], "the AutoGPTQ group index (g_idx)");
                gIdx = new CheckpointTensor(g.File, g.Info);
                used.Add(gName);
            }
        }
        return new CheckpointLinear(slot.Name, format, slot.In, [slot.Name], [slot.Out], null,
            new CheckpointTensor(q.File, q.Info), new CheckpointTensor(s.File, s.Info), zeros, gIdx);
    }

    /// <summary>
    /// A Marlin tensor pair "<paramref name="name"/>.qweight" / ".scales" holding the column concatenation of
    /// projections that share <paramref name="inFeatures"/> (CPM.cu's fused layers, and the draft's fc).
    /// </summary>
    public static CheckpointLinear ResolveMarlin(IReadOnlyDictionary<string,
        (SafetensorsFile File, TensorInfo Info)> map, string name,
        string[] projections, long[] outs, long inFeatures, bool quantized, HashSet<string> used)
    {
        string qName = name + ".qweight", sName = name + ".scales";
        bool hasQ = map.TryGetValue(qName, out var q), hasS = map.TryGetValue(sName, out var s);
        var any = hasQ ? q : s;
        if (!quantized)
            throw new CheckpointException(any.File.Path,
                $"tensor '{(hasQ ? qName : sName)}' is an int4 tensor but config.json has no quantization_config " +
                    $"(quantization is read from config.json)");
        if (!hasQ) throw new CheckpointException(s.File.Path,
            $"tensor '{qName}' is missing: '{sName}' is present, and an int4 layer needs both");
        if (!hasS) throw new CheckpointException(q.File.Path,
            $"tensor '{sName}' is missing: '{qName}' needs its fp16 scales");
        for (int i = 0; i < projections.Length; i++) RequireInt4Shape(q.File.Path, projections[i], outs[i], inFeatures);
        long n = outs.Sum();
        Require(qName, q, TensorDType.I32, [inFeatures / 16, 2 * n],
            "packed int4 weights in the Marlin layout (qweight, [in/16, 2*out])");
        RequireScales(sName, s, inFeatures, n);
        used.Add(qName);
        used.Add(sName);
        return new CheckpointLinear(name, LinearWeightFormat.Marlin, inFeatures, projections, outs, null,
            new CheckpointTensor(q.File, q.Info), new CheckpointTensor(s.File, s.Info), null, null);
    }

    /// <summary>Whether a linear [out, in] can be held as int4 (Marlin needs in % 128 == 0 and out % 64 ==
    /// 0).</summary>
    public static bool CanBeInt4(long outFeatures, long inFeatures) =>
        outFeatures > 0 && inFeatures > 0 && inFeatures % GroupSize == 0 && outFeatures % 64 == 0;

    /// <summary>The reason a linear [out, in] cannot be int4, or null.</summary>
    public static string? Int4ShapeProblem(string name, long outFeatures, long inFeatures) =>
        CanBeInt4(outFeatures, inFeatures)
        ? null
        : $"linear '{name}' [{outFeatures}, {inFeatures}] cannot be int4: the Marlin layout needs in_features % 128 " +
            $"== 0 and " +
          $"out_features % 64 == 0 (in_features {inFeatures} % 128 = {inFeatures % 128}, out_features {outFeatures} " +
              $"% 64 = {outFeatures % 64})";

    private static void RequireInt4Shape(string path, string name, long outFeatures, long inFeatures)
    {
        if (Int4ShapeProblem(name, outFeatures, inFeatures) is { } problem) throw new CheckpointException(path,
            problem);
    }

    private static void RequireScales(string name, (SafetensorsFile File, TensorInfo Info) t, long inFeatures,
        long outFeatures) =>
        Require(name, t, TensorDType.F16, [inFeatures / GroupSize, outFeatures], "int4 scales ([in/128, out], fp16)");

    internal static void RequireDense(string name, (SafetensorsFile File, TensorInfo Info) t, long[] shape)
    {
        if (!t.Info.DType.IsSupportedForWeights())
            throw new CheckpointException(t.File.Path,
                $"tensor '{name}' has dtype {t.Info.DType.ToSafetensorsName()}; weights must be F32, F16 or BF16");
        if (!t.Info.Shape.AsSpan().SequenceEqual(shape))
            throw new CheckpointException(t.File.Path,
                $"tensor '{name}' has shape {Fmt(t.Info.Shape)} but config.json implies {Fmt(shape)}");
    }

    private static void Require(string name, (SafetensorsFile File, TensorInfo Info) t, TensorDType dtype, long[] shape,
        string what)
    {
        if (t.Info.DType != dtype)
            throw new CheckpointException(t.File.Path,
                $"tensor '{name}' has dtype {t.Info.DType.ToSafetensorsName()}; {what} must be " +
                    $"{dtype.ToSafetensorsName()}");
        if (!t.Info.Shape.AsSpan().SequenceEqual(shape))
            throw new CheckpointException(t.File.Path,
                $"tensor '{name}' has shape {Fmt(t.Info.Shape)} but config.json implies {Fmt(shape)} for {what}");
    }

    /// <summary>
    /// Checks that a checkpoint's int4 layers use one layout and that a quantization_config has int4 layers at all.
    /// </summary>
    public static void CheckConsistent(IEnumerable<CheckpointLinear> linears, bool quantized, string configPath,
        string mapSource)
    {
        var list = linears.Distinct().ToList();
        var marlin = list.FirstOrDefault(l => l.Format == LinearWeightFormat.Marlin);
        var gptq = list.FirstOrDefault(l => l.Format == LinearWeightFormat.Gptq);
        if (marlin is not null && gptq is not null)
            throw new CheckpointException(mapSource,
                $"the int4 tensors mix two layouts: '{marlin.QWeight!.Name}' {Fmt(marlin.QWeight.Shape)} is Marlin " +
                    $"([in/16, 2*out]) but " +
                $"'{gptq.QWeight!.Name}' {Fmt(gptq.QWeight.Shape)} is AutoGPTQ ([in/8, out]); a checkpoint uses one " +
                    $"layout");
        if (quantized && marlin is null && gptq is null)
            throw new CheckpointException(configPath,
                "config.json has a quantization_config but no linear layer has int4 tensors (qweight + scales) in " +
                    "the weights");
    }

    internal static string Fmt(ReadOnlySpan<long> shape) => TensorDTypeInfo.FormatShape(shape);
}
