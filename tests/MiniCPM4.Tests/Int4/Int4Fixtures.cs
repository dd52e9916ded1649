using MiniCPM4.Checkpoints;
using MiniCPM4.Tests.Checkpoints;

namespace MiniCPM4.Tests.Int4;

/// <summary>Hand-built int4 checkpoints (tensor names and shapes only matter here; the data is random).</summary>
public static class Int4Fixtures
{
    public enum Layout { MarlinFused, MarlinPerProjection, Gptq, GptqWithoutZerosAndGIdx }

    /// <summary>Small int4-compatible shapes: hidden 128, 2 heads x 64 (1 KV head), FFN 128, vocab 16.</summary>
    internal static MiniCpmConfig Config(int layers = 1, int intermediate = 128, bool quantized = true) =>
        CheckpointFixtures.MicroConfig(layers: layers) with
        {
            HiddenSize = 128,
            NumAttentionHeads = 2,
            NumKeyValueHeads = 1,
            HeadDim = 64,
            IntermediateSize = intermediate,
            Quantization = quantized ? QuantizationConfig.Supported : null,
        };

    internal static List<(string Name, TensorDType DType, long[] Shape, ReadOnlyMemory<byte> Data)> Tensors(
        MiniCpmConfig c, Layout layout, int seed = 1)
    {
        var rng = new Random(seed);
        var list = new List<(string, TensorDType, long[], ReadOnlyMemory<byte>)>();
        long h = c.HiddenSize, q = (long)c.NumAttentionHeads * c.HeadDim, kv = (long)c.NumKeyValueHeads * c.HeadDim,
            inter = c.IntermediateSize;
        foreach (var (name, shape, role) in Checkpoint.RequiredTensors(c))
        {
            if (role != Checkpoint.TensorRole.Linear)
            {
                list.Add(CheckpointFixtures.Tensor(name, TensorDType.F32, shape, rng));
                continue;
            }
            string module = name[..^".weight".Length];
            if (layout == Layout.MarlinFused)
            {
                if (module.EndsWith("k_proj") || module.EndsWith("v_proj") || module.EndsWith("up_proj")
                    && !module.EndsWith("gate_up_proj")) continue;
                if (module.EndsWith("q_proj")) list.AddRange(
                    Marlin(module[..^"q_proj".Length] + "qkv_proj", q + 2 * kv, h, rng));
                else if (module.EndsWith("gate_proj")) list.AddRange(
                    Marlin(module[..^"gate_proj".Length] + "gate_up_proj", 2 * inter, h, rng));
                else list.AddRange(Marlin(module, shape[0], shape[1], rng));
            }
            else if (layout == Layout.MarlinPerProjection)
            {
                list.AddRange(Marlin(module, shape[0], shape[1], rng));
            }
            else
            {
                list.AddRange(Gptq(module, shape[0], shape[1], rng, layout == Layout.Gptq));
            }
        }
        return list;
    }

    internal static IEnumerable<(string, TensorDType, long[], ReadOnlyMemory<byte>)> Marlin(string module, long n,
        long k, Random rng)
    {
        yield return CheckpointFixtures.Tensor(module + ".qweight", TensorDType.I32, [k / 16, 2 * n], rng);
        yield return Scales(module + ".scales", n, k, rng);
    }

    internal static IEnumerable<(string, TensorDType, long[], ReadOnlyMemory<byte>)> Gptq(string module, long n, long k,
        Random rng, bool extras)
    {
        yield return CheckpointFixtures.Tensor(module + ".qweight", TensorDType.I32, [k / 8, n], rng);
        yield return Scales(module + ".scales", n, k, rng);
        if (!extras) yield break;
        yield return (module + ".qzeros", TensorDType.I32, [k / 128, n / 8],
            Int4Reference.Bytes(Int4Reference.SymmetricZeros((int)n, (int)k)));
        yield return (module + ".g_idx", TensorDType.I32, [k], Int4Reference.Bytes(Int4Reference.GIdx((int)k)));
    }

    /// <summary>Finite, positive fp16 scales.</summary>
    internal static (string, TensorDType, long[], ReadOnlyMemory<byte>) Scales(string name, long n, long k, Random rng)
    {
        var values = new Half[k / 128 * n];
        for (int i = 0; i < values.Length; i++) values[i] = (Half)(0.001 + 0.01 * rng.NextDouble());
        return (name, TensorDType.F16, [k / 128, n], Int4Reference.Bytes(values));
    }

    /// <summary>Writes config.json and the weights file (model_gptq.safetensors by default) into <paramref
    /// name="dir"/>.</summary>
    internal static string Write(string dir, MiniCpmConfig config, Layout layout,
        Action<List<(string Name, TensorDType DType, long[] Shape, ReadOnlyMemory<byte> Data)>>? edit = null,
        string fileName = Checkpoint.GptqFileName)
    {
        Directory.CreateDirectory(dir);
        config.WriteJson(Path.Combine(dir, "config.json"));
        var tensors = Tensors(config, layout);
        edit?.Invoke(tensors);
        string path = Path.Combine(dir, fileName);
        CheckpointWriter.WriteSafetensors(path, tensors);
        return path;
    }

    internal static void Replace(
        List<(string Name, TensorDType DType, long[] Shape, ReadOnlyMemory<byte> Data)> tensors, string name,
        TensorDType dtype, long[] shape)
    {
        int i = tensors.FindIndex(t => t.Name == name);
        if (i < 0) throw new ArgumentException($"no tensor {name}");
        tensors[i] = CheckpointFixtures.Tensor(name, dtype, shape, new Random(i));
    }
}
