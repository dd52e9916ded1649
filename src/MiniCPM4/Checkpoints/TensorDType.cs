namespace MiniCPM4.Checkpoints;

/// <summary>
/// Element types of safetensors tensors. The first three are the dense weight types the engine loads; their values
/// match MCPM_DTYPE_F32/F16/BF16 in minicpm4.h. <see cref="I32"/> holds packed int4 weights (qweight) and AutoGPTQ's
/// qzeros / g_idx (MCPM_DTYPE_I32 in the engine). The others are recognised so files that contain them can be
/// opened, but they are not accepted as model weights.
/// </summary>
public enum TensorDType
{
    F32 = 0,
    F16 = 1,
    BF16 = 2,
    Bool,
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F64,
    F8E4M3,
    F8E5M2,
}

/// <summary>Sizes and safetensors names of <see cref="TensorDType"/> values.</summary>
public static class TensorDTypeInfo
{
    /// <summary>Bytes per element.</summary>
    public static int SizeInBytes(this TensorDType dtype) => dtype switch
    {
        TensorDType.F32 or TensorDType.I32 or TensorDType.U32 => 4,
        TensorDType.F16 or TensorDType.BF16 or TensorDType.I16 or TensorDType.U16 => 2,
        TensorDType.F64 or TensorDType.I64 or TensorDType.U64 => 8,
        TensorDType.Bool or TensorDType.U8 or TensorDType.I8 or TensorDType.F8E4M3 or TensorDType.F8E5M2 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>True for the dtypes model weights may have (F32, F16, BF16).</summary>
    public static bool IsSupportedForWeights(this TensorDType dtype) =>
        dtype is TensorDType.F32 or TensorDType.F16 or TensorDType.BF16;

    /// <summary>The engine's MCPM_DTYPE_* code of a dtype it accepts (F32, F16, BF16, I32).</summary>
    /// <exception cref="MiniCpmUnsupportedException">Any other dtype; the message names <paramref
    /// name="tensorName"/>.</exception>
    internal static int ToNative(this TensorDType dtype, string tensorName) => dtype switch
    {
        TensorDType.F32 => Interop.NativeConstants.MCPM_DTYPE_F32,
        TensorDType.F16 => Interop.NativeConstants.MCPM_DTYPE_F16,
        TensorDType.BF16 => Interop.NativeConstants.MCPM_DTYPE_BF16,
        TensorDType.I32 => Interop.NativeConstants.MCPM_DTYPE_I32,
        _ => throw new MiniCpmUnsupportedException(
            $"tensor '{tensorName}' has dtype {dtype.ToSafetensorsName()}, which the engine cannot load"),
    };

    /// <summary>The dtype string used in safetensors headers ("F32", "BF16", "F8_E4M3", ...).</summary>
    public static string ToSafetensorsName(this TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => "F32",
        TensorDType.F16 => "F16",
        TensorDType.BF16 => "BF16",
        TensorDType.Bool => "BOOL",
        TensorDType.U8 => "U8",
        TensorDType.I8 => "I8",
        TensorDType.I16 => "I16",
        TensorDType.U16 => "U16",
        TensorDType.I32 => "I32",
        TensorDType.U32 => "U32",
        TensorDType.I64 => "I64",
        TensorDType.U64 => "U64",
        TensorDType.F64 => "F64",
        TensorDType.F8E4M3 => "F8_E4M3",
        TensorDType.F8E5M2 => "F8_E5M2",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>Parses a safetensors dtype string (case-sensitive, as the format specifies).</summary>
    public static bool TryParseSafetensorsName(string? name, out TensorDType dtype)
    {
        switch (name)
        {
            case "F32": dtype = TensorDType.F32; return true;
            case "F16": dtype = TensorDType.F16; return true;
            case "BF16": dtype = TensorDType.BF16; return true;
            case "BOOL": dtype = TensorDType.Bool; return true;
            case "U8": dtype = TensorDType.U8; return true;
            case "I8": dtype = TensorDType.I8; return true;
            case "I16": dtype = TensorDType.I16; return true;
            case "U16": dtype = TensorDType.U16; return true;
            case "I32": dtype = TensorDType.I32; return true;
            case "U32": dtype = TensorDType.U32; return true;
            case "I64": dtype = TensorDType.I64; return true;
            case "U64": dtype = TensorDType.U64; return true;
            case "F64": dtype = TensorDType.F64; return true;
            case "F8_E4M3": dtype = TensorDType.F8E4M3; return true;
            case "F8_E5M2": dtype = TensorDType.F8E5M2; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>Formats a shape as "[a, b, c]".</summary>
    public static string FormatShape(ReadOnlySpan<long> shape)
    {
        var sb = new System.Text.StringBuilder("[");
        for (int i = 0; i < shape.Length; i++)
        {
            if (i > 0) sb.Append(", ");
            sb.Append(shape[i]);
        }
        return sb.Append(']').ToString();
    }
}
