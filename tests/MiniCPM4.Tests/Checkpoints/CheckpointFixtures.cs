using System.Buffers.Binary;
using System.Text;
using MiniCPM4.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Checkpoints;

/// <summary>Helpers that build small checkpoints on disk for the checkpoint tests.</summary>
internal static class CheckpointFixtures
{
    /// <summary>A very small, valid MiniCPM config (vocab 16, hidden 8, 1 layer, 2 heads, 1 KV head, head_dim 4, FFN
    /// 12).</summary>
    public static MiniCpmConfig MicroConfig(bool tied = true, int layers = 1) => new()
    {
        Architectures = new[] { "MiniCPMForCausalLM" },
        ModelType = "minicpm",
        VocabSize = 16,
        HiddenSize = 8,
        NumHiddenLayers = layers,
        NumAttentionHeads = 2,
        NumKeyValueHeads = 1,
        HeadDim = 4,
        IntermediateSize = 12,
        MaxPositionEmbeddings = 64,
        ScaleEmb = 12,
        ScaleDepth = 1.4f,
        DimModelBase = 4,
        TieWordEmbeddings = tied,
        BosTokenId = 1,
        EosTokenIds = new[] { 2 },
        TorchDtype = "float32",
    };

    public static List<(string Name, TensorDType DType, long[] Shape, ReadOnlyMemory<byte> Data)> MicroTensors(
        MiniCpmConfig config, int seed = 1, TensorDType dtype = TensorDType.F32)
    {
        var rng = new Random(seed);
        var list = new List<(string, TensorDType, long[], ReadOnlyMemory<byte>)>();
        foreach (var (name, shape, _) in Checkpoint.RequiredTensors(config))
            list.Add(Tensor(name, dtype, shape, rng));
        return list;
    }

    public static (string, TensorDType, long[], ReadOnlyMemory<byte>) Tensor(string name, TensorDType dtype,
        long[] shape, Random rng)
    {
        long n = dtype.SizeInBytes();
        foreach (long d in shape) n *= d;
        var data = new byte[n];
        rng.NextBytes(data);
        return (name, dtype, shape, data);
    }

    /// <summary>Writes config.json and model.safetensors for <paramref name="config"/> into <paramref
    /// name="dir"/>.</summary>
    public static string WriteMicro(string dir, MiniCpmConfig? config = null,
        Action<List<(string Name, TensorDType DType, long[] Shape, ReadOnlyMemory<byte> Data)>>? edit = null)
    {
        config ??= MicroConfig();
        Directory.CreateDirectory(dir);
        config.WriteJson(Path.Combine(dir, "config.json"));
        var tensors = MicroTensors(config);
        edit?.Invoke(tensors);
        string path = Path.Combine(dir, "model.safetensors");
        CheckpointWriter.WriteSafetensors(path, tensors);
        return path;
    }

    /// <summary>A minimal raw safetensors file: 8-byte length, the given header text, then the data bytes.</summary>
    public static byte[] RawSafetensors(string headerJson, byte[] data, ulong? headerLengthOverride = null)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLengthOverride ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        return bytes;
    }
}

/// <summary>Base class giving every test a fresh temporary directory, removed afterwards.</summary>
public abstract class TempDirTest
{
    protected string Dir { get; private set; } = "";

    [SetUp]
    public void CreateTempDir()
    {
        Dir = Path.Combine(Path.GetTempPath(), "minicpm4-ckpt-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Dir);
    }

    [TearDown]
    public void DeleteTempDir()
    {
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Asserts that <paramref name="action"/> throws a CheckpointException whose message contains every
    /// fragment.</summary>
    protected static CheckpointException AssertFails(Action action, params string[] fragments)
    {
        var e = Assert.Throws<CheckpointException>(action)!;
        foreach (var f in fragments)
            Assert.That(e.Message, Does.Contain(f), "message: " + e.Message);
        return e;
    }
}
