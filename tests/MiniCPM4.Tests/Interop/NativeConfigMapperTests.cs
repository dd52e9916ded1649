using MiniCPM4.Checkpoints;
using MiniCPM4.Interop;
using MiniCPM4.Speculative;
using NUnit.Framework;

namespace MiniCPM4.Tests.Interop;

/// <summary>The one mapping of checkpoint configs and load options to the engine's structs.</summary>
[TestFixture]
public unsafe class NativeConfigMapperTests
{
    private static readonly MiniCpmConfig Config = new()
    {
        VocabSize = 32, HiddenSize = 16, NumHiddenLayers = 2, NumAttentionHeads = 2, NumKeyValueHeads = 1,
        HeadDim = 8, IntermediateSize = 32, MaxPositionEmbeddings = 64, ScaleDepth = 1.4f, TieWordEmbeddings = false,
    };

    [Test]
    public void ModelOptions_MapsTheLoadOptions()
    {
        NativeLibraryResolver.EnsureLoaded();
        var options = new MiniCpmLoadOptions
        {
            Device = ComputeDevice.Cpu, Threads = 3, DeviceIndex = 1, CpuPrecision = CpuPrecision.Exact,
        };
        var native = NativeConfigMapper.ModelOptions(options, weightArenaBytes: 4096);
        Assert.That(native.backend, Is.EqualTo(NativeConstants.MCPM_BACKEND_CPU));
        Assert.That(native.num_threads, Is.EqualTo(3));
        Assert.That(native.device_index, Is.EqualTo(1));
        Assert.That(native.cpu_precision, Is.EqualTo(NativeConstants.MCPM_CPU_PRECISION_EXACT));
        Assert.That(native.weight_arena_bytes, Is.EqualTo(4096UL));
        Assert.That(native.struct_size, Is.EqualTo((uint)sizeof(mcpm_model_options)));
    }

    [Test]
    public void ModelConfig_MapsTheCheckpointConfigAndSparseSettings()
    {
        NativeLibraryResolver.EnsureLoaded();
        var dense = NativeConfigMapper.ModelConfig(Config, null, null, null);
        Assert.That(dense.num_layers, Is.EqualTo(2));
        Assert.That(dense.num_kv_heads, Is.EqualTo(1));
        Assert.That(dense.tie_word_embeddings, Is.Zero);
        Assert.That(dense.rope_scaling, Is.EqualTo(NativeConstants.MCPM_ROPE_SCALING_NONE));
        Assert.That(dense.sparse_enabled, Is.Zero);

        var sparse = NativeConfigMapper.ModelConfig(Config, new SparseAttentionConfig(BlockSize: 32), null, null);
        Assert.That(sparse.sparse_enabled, Is.EqualTo(1));
        Assert.That(sparse.sparse_block_size, Is.EqualTo(32));
    }

    [Test]
    public void DraftConfig_MapsTheDraftAndTheWindow()
    {
        var draft = new EagleDraftConfig
        {
            HiddenSize = 16, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = 8,
            IntermediateSize = 24, RmsNormEps = 1e-5f,
        };
        mcpm_draft_config c = default;
        NativeConfigMapper.ApplyDraftConfig(ref c, draft, Config, useInputNorm: true, useAttnNorm: false,
            new MiniCpmLoadOptions { DraftAttentionWindow = 128 });
        Assert.That(c.intermediate_size, Is.EqualTo(24));
        Assert.That(c.use_input_norm, Is.EqualTo(1));
        Assert.That(c.use_attn_norm, Is.Zero);
        Assert.That(c.attention_window, Is.EqualTo(128));
        Assert.That(c.residual_scale, Is.EqualTo(1.4f / MathF.Sqrt(3)).Within(1e-6f));
    }

    [TestCase(-1, "MiniCpmLoadOptions.Threads")]
    [TestCase(5000, "MiniCpmLoadOptions.Threads")]
    public void InvalidThreadsAreRejectedWithTheManagedName(int threads, string name)
    {
        var e = Assert.Throws<MiniCpmInvalidArgumentException>(() =>
            NativeConfigMapper.ValidateLoadOptions(new MiniCpmLoadOptions { Threads = threads }));
        Assert.That(e!.Message, Does.Contain(name).And.Not.Contain("num_threads"));
    }

    [Test]
    public void InvalidDraftWindowIsRejectedWithTheManagedName()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            NativeConfigMapper.ValidateLoadOptions(new MiniCpmLoadOptions { DraftAttentionWindow = -1 }));
        Assert.That(e!.Message, Does.Contain("MiniCpmLoadOptions.DraftAttentionWindow"));
        Assert.Throws<MiniCpmInvalidArgumentException>(() =>
            NativeConfigMapper.ValidateLoadOptions(new MiniCpmLoadOptions { DeviceIndex = -2 }));
    }
}
