using System.Text.Json;

namespace MiniCPM4.Checkpoints;

/// <summary>
/// A checkpoint's <c>quantization_config</c> (config.json; GPTQ / Marlin fields as AutoGPTQ, Hugging Face and CPM.cu
/// write them). Only what the engine runs is accepted: GPTQ-style symmetric 4-bit weights with group size 128 along the
/// input features, no act-order, an unquantized LM head (W4A16; see <see cref="Supported"/>). Absent fields take those
/// values, so a minimal config such as <c>{"bits": 4, "group_size": 128}</c> (how some EAGLE drafts spell it) is
/// enough.
/// Whether the tensors are in Marlin's packed layout or AutoGPTQ's is read from the tensors, not from this record.
/// </summary>
/// <param name="QuantMethod">"gptq" (also "marlin", "gptq_marlin"); null when absent.</param>
/// <param name="Bits">Bits per weight (4).</param>
/// <param name="GroupSize">Weights per scale along the input features (128).</param>
/// <param name="Sym">Symmetric quantization (zero point 8).</param>
/// <param name="DescAct">Act-order: groups in a permuted input order (not supported).</param>
/// <param name="CheckpointFormat">"gptq" (CPM.cu writes it for Marlin files too), "marlin" or "gptq_marlin"; null when
/// absent.</param>
/// <param name="StaticGroups">AutoGPTQ's static_groups (irrelevant without act-order); null when absent.</param>
/// <param name="LmHead">Whether the LM head is quantized (must be false).</param>
public sealed record QuantizationConfig(
    string? QuantMethod = "gptq",
    int Bits = 4,
    int GroupSize = 128,
    bool Sym = true,
    bool DescAct = false,
    string? CheckpointFormat = "gptq",
    bool? StaticGroups = true,
    bool LmHead = false)
{
    /// <summary>The settings CPM.cu's Marlin checkpoints carry and <c>minicpm4 quantize</c> writes.</summary>
    public static QuantizationConfig Supported { get; } = new();

    private static readonly string[] Methods = ["gptq", "marlin", "gptq_marlin"];
    private static readonly string[] Formats = ["gptq", "marlin", "gptq_marlin"];

    /// <summary>Reads and validates a quantization_config object; <paramref name="f"/> is that object.</summary>
    /// <exception cref="CheckpointException">A field has a value the engine cannot run; the message names the field and
    /// value.</exception>
    internal static QuantizationConfig Parse(JsonFields f)
    {
        string? method = f.String("quant_method");
        if (method is not null && !Methods.Contains(method.ToLowerInvariant()))
            throw f.Error(
                $"quantization_config.quant_method is '{method}'; only GPTQ-style int4 (\"gptq\", \"marlin\", " +
                $"\"gptq_marlin\") is supported");
        int bits = f.Int("bits") ?? 4;
        if (bits != 4) throw f.Error($"quantization_config.bits is {bits}; only 4 is supported (W4A16)");
        int group = f.Int("group_size") ?? 128;
        if (group != 128)
            throw f.Error($"quantization_config.group_size is {group}; only 128 is supported");
        bool sym = f.Bool("sym") ?? true;
        if (!sym)
            throw f.Error(
                "quantization_config.sym is false: asymmetric (zero-point) quantization is not supported; only " +
                "symmetric int4 is");
        bool descAct = f.Bool("desc_act") ?? false;
        if (descAct)
            throw f.Error(
                "quantization_config.desc_act is true: desc_act (act-order) is not supported; quantize with " +
                "desc_act=false");
        string? format = f.String("checkpoint_format");
        if (format is not null && !Formats.Contains(format.ToLowerInvariant()))
            throw f.Error(
                $"quantization_config.checkpoint_format is '{format}'; only \"gptq\" (AutoGPTQ v1 zero points, or " +
                $"CPM.cu's Marlin files), \"marlin\" and \"gptq_marlin\" are supported");
        bool lmHead = f.Bool("lm_head") ?? false;
        if (lmHead)
            throw f.Error(
                "quantization_config.lm_head is true: a quantized LM head is not supported (the embedding, norms and " +
                "LM head stay bf16/fp16)");
        return new QuantizationConfig(method, bits, group, sym, descAct, format, f.Bool("static_groups"), lmHead);
    }

    /// <summary>Writes this record as the value of a "quantization_config" property.</summary>
    internal void Write(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        if (QuantMethod is not null) w.WriteString("quant_method", QuantMethod);
        w.WriteNumber("bits", Bits);
        w.WriteNumber("group_size", GroupSize);
        w.WriteBoolean("desc_act", DescAct);
        w.WriteBoolean("sym", Sym);
        if (StaticGroups is bool sg) w.WriteBoolean("static_groups", sg);
        if (CheckpointFormat is not null) w.WriteString("checkpoint_format", CheckpointFormat);
        w.WriteBoolean("lm_head", LmHead);
        w.WriteEndObject();
    }

    /// <summary>A one-line description: "int4 W4A16 (gptq, group 128, symmetric)".</summary>
    public string Describe() =>
        $"int{Bits} W{Bits}A16 ({QuantMethod ?? "gptq"}, group {GroupSize}, " +
            $"{(Sym ? "symmetric" : "asymmetric")}{(DescAct ? ", act-order" : "")})";
}
