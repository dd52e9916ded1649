using MiniCPM4.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Checkpoints;

public class ConfigTests : TempDirTest
{
    private const string Path = "/models/x/config.json";

    private const string Base = """
        "architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm",
        "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "max_position_embeddings": 256
        """;

    private static MiniCpmConfig P(string extra = "") => MiniCpmConfig.Parse("{" + Base + extra + "}", Path);

    [Test]
    public void Defaults_AreApplied_AndHeadDimDerived()
    {
        var c = P();
        Assert.Multiple(() =>
        {
            Assert.That(c.HeadDim, Is.EqualTo(16));
            Assert.That(c.NumKeyValueHeads, Is.EqualTo(4));
            Assert.That(c.RmsNormEps, Is.EqualTo(1e-6f));
            Assert.That(c.RopeTheta, Is.EqualTo(10000f));
            Assert.That(c.ScaleEmb, Is.EqualTo(1f));
            Assert.That(c.ScaleDepth, Is.EqualTo(1f));
            Assert.That(c.DimModelBase, Is.EqualTo(64f));
            Assert.That(c.TieWordEmbeddings, Is.True);
            Assert.That(c.RopeScaling, Is.Null);
            Assert.That(c.Sparse, Is.Null);
            Assert.That(c.EosTokenIds, Is.Empty);
        });
    }

    [Test]
    public void HeadDim_Explicit_Wins()
    {
        Assert.That(P(""", "head_dim": 32, "num_key_value_heads": 2""").HeadDim, Is.EqualTo(32));
    }

    [Test]
    public void HeadDim_NotDerivable_Fails()
    {
        Assert.Throws<CheckpointException>(() =>
            MiniCpmConfig.Parse("{" + Base.Replace("\"hidden_size\": 64", "\"hidden_size\": 66") + "}", Path));
    }

    [Test]
    public void Eos_AsInt_AndAsList()
    {
        Assert.That(P(""", "eos_token_id": 7""").EosTokenIds, Is.EqualTo(new[] { 7 }));
        Assert.That(P(""", "eos_token_id": [2, 73440]""").EosTokenIds, Is.EqualTo(new[] { 2, 73440 }));
    }

    [Test]
    public void LongRope_IsParsed()
    {
        string factors =
            string.Join(", ",
            Enumerable.Range(1, 8).Select(i => (i * 0.5).ToString(System.Globalization.CultureInfo.InvariantCulture)));
        var c = P($$""", "rope_scaling": {"rope_type": "longrope", "factor": 1.0, "short_factor": [{{factors}}], "long_factor": [{{factors}}], "original_max_position_embeddings": 128}""");
        Assert.That(c.RopeScaling, Is.Not.Null);
        Assert.That(c.RopeScaling!.Type, Is.EqualTo("longrope"));
        Assert.That(c.RopeScaling.ShortFactor, Has.Length.EqualTo(8));
        Assert.That(c.RopeScaling.LongFactor[7], Is.EqualTo(4.0f));
        Assert.That(c.RopeScaling.OriginalMaxPositionEmbeddings, Is.EqualTo(128));
        // "type" is accepted as an alias of "rope_type".
        var c2 = P($$""", "rope_scaling": {"type": "longrope", "short_factor": [{{factors}}], "long_factor": [{{factors}}]}""");
        Assert.That(c2.RopeScaling!.OriginalMaxPositionEmbeddings, Is.EqualTo(256));
    }

    [Test]
    public void LongRope_WrongFactorCount_Fails()
    {
        var e = Assert.Throws<CheckpointException>(() =>
            P(""", "rope_scaling": {"rope_type": "longrope", "short_factor": [1, 1], "long_factor": [1, 1]}"""))!;
        Assert.That(e.Message, Does.Contain("head_dim/2 = 8"));
    }

    [Test]
    public void RopeScaling_OtherType_Fails()
    {
        var e = Assert.Throws<CheckpointException>(() =>
            P(""", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"""))!;
        Assert.That(e.Message, Does.Contain("unsupported rope_scaling type 'yarn'"));
    }

    [Test]
    public void RopeScaling_Null_IsAbsent()
    {
        Assert.That(P(""", "rope_scaling": null""").RopeScaling, Is.Null);
    }

    [Test]
    public void InvalidJson_Fails()
    {
        var e = Assert.Throws<CheckpointException>(() => MiniCpmConfig.Parse("{\"vocab_size\": 1,", Path))!;
        Assert.That(e.Message, Does.StartWith(Path + ": invalid JSON"));
        Assert.That(e.FilePath, Is.EqualTo(Path));
    }

    [Test]
    public void WrongArchitecture_Fails_NamingIt()
    {
        string json = "{" + Base.Replace("MiniCPMForCausalLM", "LlamaForCausalLM").Replace("\"minicpm\"", "\"llama\"")
            + "}";
        var e = Assert.Throws<CheckpointException>(() => MiniCpmConfig.Parse(json, Path))!;
        Assert.That(e.Message, Does.Contain("LlamaForCausalLM").And.Contain("'llama'"));
    }

    [Test]
    public void ModelTypeAlone_IsAccepted()
    {
        string json = "{" + Base.Replace("\"architectures\": [\"MiniCPMForCausalLM\"],", "") + "}";
        Assert.That(MiniCpmConfig.Parse(json, Path).ModelType, Is.EqualTo("minicpm"));
    }

    [Test]
    public void MissingRequiredField_Fails()
    {
        string json = "{" + Base.Replace("\"intermediate_size\": 128,", "") + "}";
        var e = Assert.Throws<CheckpointException>(() => MiniCpmConfig.Parse(json, Path))!;
        Assert.That(e.Message, Does.Contain("'intermediate_size' is missing"));
    }

    [TestCase("\"vocab_size\": 100", "\"vocab_size\": 0")]
    [TestCase("\"vocab_size\": 100", "\"vocab_size\": -5")]
    [TestCase("\"vocab_size\": 100", "\"vocab_size\": \"100\"")]
    [TestCase("\"vocab_size\": 100", "\"vocab_size\": 1.5")]
    [TestCase("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 100000000")]
    public void BadRequiredValue_Fails(string from, string to)
    {
        Assert.Throws<CheckpointException>(() => MiniCpmConfig.Parse("{" + Base.Replace(from, to) + "}", Path));
    }

    [Test]
    public void HeadsNotDivisibleByKvHeads_Fails()
    {
        var e = Assert.Throws<CheckpointException>(() => P(""", "num_key_value_heads": 3"""))!;
        Assert.That(e.Message, Does.Contain("not divisible"));
    }

    [Test]
    public void QuantizationConfig_CpmCuMarlin_IsRead()
    {
        // config.json of openbmb/MiniCPM4-8B-marlin-cpmcu (the quantization_config part).
        var c = P("""
            , "quantization_config": {"bits": 4, "group_size": 128, "damp_percent": 0.01, "desc_act": false, "static_groups": true,
            "sym": true, "true_sequential": true, "model_name_or_path": null, "model_file_base_name": null, "quant_method": "gptq",
            "checkpoint_format": "gptq", "lm_head": false}
            """);
        Assert.That(c.Quantization,
            Is.EqualTo(new QuantizationConfig("gptq", 4, 128, true, false, "gptq", true, false)));
        Assert.That(c.Quantization!.Describe(), Does.Contain("int4").And.Contain("group 128"));
        Assert.That(P().Quantization, Is.Null);
    }

    [Test]
    public void QuantizationConfig_AbsentFields_TakeTheSupportedValues()
    {
        Assert.That(P(""", "quantization_config": {"group_size": 128}""").Quantization,
            Is.EqualTo(new QuantizationConfig(null, 4, 128, true, false, null, null, false)));
        Assert.That(P(""", "quantization_config": {}""").Quantization!.Bits, Is.EqualTo(4));
        Assert.That(
            P(""", "quantization_config": {"quant_method": "marlin", "checkpoint_format": "marlin"}""")
            .Quantization!.QuantMethod,
            Is.EqualTo("marlin"));
        Assert.That(P(""", "quantization_config": {"quant_method": "gptq_marlin"}""").Quantization, Is.Not.Null);
    }

    [TestCase("\"bits\": 8", "quantization_config.bits is 8; only 4 is supported")]
    [TestCase("\"bits\": 3", "quantization_config.bits is 3")]
    [TestCase("\"group_size\": 64", "quantization_config.group_size is 64; only 128 is supported")]
    [TestCase("\"group_size\": -1", "quantization_config.group_size is -1; only 128 is supported")]
    [TestCase("\"desc_act\": true", "desc_act (act-order) is not supported")]
    [TestCase("\"sym\": false", "quantization_config.sym is false", "asymmetric")]
    [TestCase("\"lm_head\": true", "quantization_config.lm_head is true", "LM head")]
    [TestCase("\"quant_method\": \"awq\"", "quantization_config.quant_method is 'awq'")]
    [TestCase("\"quant_method\": \"bitsandbytes\"", "quant_method is 'bitsandbytes'")]
    [TestCase("\"checkpoint_format\": \"gptq_v2\"", "quantization_config.checkpoint_format is 'gptq_v2'")]
    [TestCase("\"bits\": \"4\"", "'quantization_config.bits' must be an integer")]
    public void QuantizationConfig_Unsupported_FailsNamingTheField(string field, params string[] fragments)
    {
        var e = Assert.Throws<CheckpointException>(() =>
            P(""", "quantization_config": {"group_size": 128, """ + field + "}"))!;
        foreach (var f in fragments) Assert.That(e.Message, Does.Contain(f));
        Assert.That(e.FilePath, Is.EqualTo(Path));
    }

    [Test]
    public void QuantizationConfig_NotAnObject_Fails()
    {
        var e = Assert.Throws<CheckpointException>(() => P(""", "quantization_config": 4"""))!;
        Assert.That(e.Message, Does.Contain("quantization_config"));
    }

    [Test]
    public void SparseConfig_IsRead()
    {
        var c = P(""", "sparse_config": {"kernel_size": 32, "kernel_stride": 16, "init_blocks": 1, "block_size": 64, "window_size": 2048, "topk": 64, "use_nope": false, "dense_len": 8192}""");
        Assert.That(c.Sparse, Is.EqualTo(new SparseAttentionConfig(32, 16, 1, 64, 2048, 64, false, 8192)));
        // dense_len -1 means always sparse (MiniCPM4 README); below that is an error.
        Assert.That(P(""", "sparse_config": {"dense_len": -1}""").Sparse!.DenseLen, Is.EqualTo(-1));
        var e = Assert.Throws<CheckpointException>(() => P(""", "sparse_config": {"dense_len": -2}"""));
        Assert.That(e!.Message, Does.Contain("dense_len"));
    }

    [Test]
    public void WriteJson_RoundTrips()
    {
        var c = CheckpointWriter.GetPresetConfig(ModelPreset.MiniCpm4_8B) with
        {
            Sparse = new SparseAttentionConfig(WindowSize: 1024),
            Quantization = QuantizationConfig.Supported,
        };
        string path = System.IO.Path.Combine(Dir, "config.json");
        c.WriteJson(path);
        var back = MiniCpmConfig.Load(path);
        Assert.That(back with { RopeScaling = null, EosTokenIds = c.EosTokenIds, Architectures = c.Architectures },
            Is.EqualTo(c with { RopeScaling = null }));
        Assert.That(back.RopeScaling!.ShortFactor, Is.EqualTo(c.RopeScaling!.ShortFactor));
        Assert.That(back.RopeScaling.OriginalMaxPositionEmbeddings, Is.EqualTo(32768));
        Assert.That(back.EosTokenIds, Is.EqualTo(new[] { 2, 32001 }));
        Assert.That(back.RmsNormEps, Is.EqualTo(1e-6f));
    }

    [Test]
    public void GenerationConfig_ParsesAndRoundTrips()
    {
        var g = GenerationConfig.Parse("""{"bos_token_id": 1, "eos_token_id": [2, 73440], "pad_token_id": 2, "do_sample": true, "temperature": 0.8, "top_p": 0.8, "top_k": 0, "repetition_penalty": 1.02, "max_new_tokens": 512, "transformers_version": "4.46"}""", Path);
        Assert.Multiple(() =>
        {
            Assert.That(g.EosTokenIds, Is.EqualTo(new[] { 2, 73440 }));
            Assert.That(g.TopP, Is.EqualTo(0.8f));
            Assert.That(g.MaxNewTokens, Is.EqualTo(512));
            Assert.That(g.RepetitionPenalty, Is.EqualTo(1.02f));
        });
        Assert.That(GenerationConfig.Parse("""{"eos_token_id": 2}""", Path).EosTokenIds, Is.EqualTo(new[] { 2 }));
        string path = System.IO.Path.Combine(Dir, "generation_config.json");
        g.WriteJson(path);
        var back = GenerationConfig.Load(path);
        Assert.That(back with { EosTokenIds = null }, Is.EqualTo(g with { EosTokenIds = null }));
        Assert.That(back.EosTokenIds, Is.EqualTo(g.EosTokenIds));
        Assert.Throws<CheckpointException>(() => GenerationConfig.Parse("""{"top_p": 2}""", Path));
        Assert.Throws<CheckpointException>(() => GenerationConfig.Parse("""{"temperature": "hot"}""", Path));
    }
}
