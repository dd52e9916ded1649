using System.Text.Json;
using NUnit.Framework;

namespace MiniCPM4.Tests.Cli;

/// <summary>`minicpm4 quantize` (both formats, overwrite refusal) and `--quantize int4`, as separate
/// processes.</summary>
[TestFixture]
public class QuantizeCliTests
{
    private string _temp = null!;
    private string _model = null!;

    [OneTimeSetUp]
    public void Setup()
    {
        _temp = Directory.CreateTempSubdirectory("minicpm4-quantize-cli-").FullName;
        _model = Path.Combine(_temp, "tiny");
        var (code, _, err) = Run("create-model", "--preset", "tiny", "--out", _model, "--seed", "5");
        Assert.That(code, Is.EqualTo(0), err);
    }

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_temp, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliTests.Run(args);

    private static string TokenIds(string json, out JsonElement root)
    {
        using var doc = JsonDocument.Parse(json);
        root = doc.RootElement.Clone();
        return root.GetProperty("token_ids").ToString();
    }

    [Test]
    public void QuantizeWritesMarlinAndGptqCheckpoints_ThatGenerateLikeQuantizeOnLoad()
    {
        string marlin = Path.Combine(_temp, "marlin"), gptq = Path.Combine(_temp, "gptq");
        var (code, output, err) = Run("quantize", "-m", _model, "--out", marlin, "--threads", "2");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output,
            Does.Contain("quantized   14 linear layers to int4 (Marlin, fused qkv_proj / gate_up_proj)"));
        Assert.That(output,
            Does.Contain("weights").And.Contain("->").And.Contain("time").And.Contain(
            Path.Combine(marlin, "model_gptq.safetensors")));
        (code, output, err) = Run("quantize", "-m", _model, "--out", gptq, "--format", "gptq");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("(AutoGPTQ)"));
        Assert.That(File.Exists(Path.Combine(gptq, "model.safetensors")), Is.True);
        Assert.That(File.Exists(Path.Combine(gptq, "tokenizer.model")), Is.True);

        string[] gen =
            ["generate", "-p", "Once upon a time", "--max-tokens", "16", "--json", "--device", "cpu", "--threads", "2"];
        var onLoad = Run([.. gen, "-m", _model, "--quantize", "int4"]);
        Assert.That(onLoad.Code, Is.EqualTo(0), onLoad.Err);
        string expected = TokenIds(onLoad.Out, out var root);
        Assert.That(root.GetProperty("quantization").GetString(), Is.EqualTo("int4"));
        Assert.That(root.GetProperty("int4_linears").GetInt32(), Is.EqualTo(14));
        foreach (var dir in new[] { marlin, gptq })
        {
            var r = Run([.. gen, "-m", dir]);
            Assert.That(r.Code, Is.EqualTo(0), r.Err);
            Assert.That(TokenIds(r.Out, out var rr), Is.EqualTo(expected), dir);
            Assert.That(rr.GetProperty("int4_linears").GetInt32(), Is.EqualTo(14));
        }
        var dense = Run([.. gen, "-m", _model]);
        Assert.That(TokenIds(dense.Out, out var d), Is.Not.Empty);
        Assert.That(d.GetProperty("quantization").GetString(), Is.EqualTo("none"));

        // info describes both.
        var (ic, info, ie) = Run("info", "-m", marlin);
        Assert.That(ic, Is.EqualTo(0), ie);
        Assert.That(info,
            Does.Contain(
            "quantization  int4 W4A16 (gptq, group 128, symmetric): 14 of 14 linear layers, Marlin layout (CPM.cu, " +
            "fused qkv_proj / gate_up_proj)"));
        Assert.That(info, Does.Contain("parameters    ").And.Contain("I32"));
        (ic, info, ie) = Run("info", "-m", gptq);
        Assert.That(info, Does.Contain("AutoGPTQ layout (repacked to Marlin at load)"));
        (ic, info, ie) = Run("info", "-m", _model);
        Assert.That(info, Does.Contain("quantization  none (dense); with --quantize int4 the weights take"));
    }

    [Test]
    public void QuantizeRefusesToOverwriteUnlessForced_AndRefusesItsSource()
    {
        string outDir = Path.Combine(_temp, "occupied");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "notes.txt"), "keep me");
        var (code, _, err) = Run("quantize", "-m", _model, "--out", outDir);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("not empty").And.Contain("--force"));
        Assert.That(Directory.GetFiles(outDir), Has.Length.EqualTo(1), "nothing written");

        (code, _, err) = Run("quantize", "-m", _model, "--out", outDir, "--force", "--clip-search");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(File.Exists(Path.Combine(outDir, "model_gptq.safetensors")), Is.True);
        Assert.That(File.ReadAllText(Path.Combine(outDir, "notes.txt")), Is.EqualTo("keep me"));

        (code, _, err) = Run("quantize", "-m", _model, "--out", _model + "/");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("source checkpoint"));

        (code, _, err) = Run("quantize", "-m", _model, "--out", Path.Combine(_temp, "x"), "--format", "awq");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--format"));

        (code, _, err) =
            Run("quantize", "-m", Path.Combine(_temp, "marlin-src-missing"), "--out", Path.Combine(_temp, "y"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1));
    }

    [Test]
    public void BadQuantizeOptionsAreUsageErrors()
    {
        var (code, _, err) = Run("generate", "-m", _model, "-p", "x", "--quantize", "int8");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--quantize"));
        (code, _, err) = Run("generate", "-m", _model, "-p", "x", "--clip-search");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--clip-search needs --quantize int4"));
    }

    [Test]
    public void BenchAndChatTakeQuantize()
    {
        var (code, output, err) =
            Run("bench", "-m", _model, "--prompt-tokens", "8", "--gen-tokens", "4", "--quantize", "int4", "--json",
            "--threads", "2");
        Assert.That(code, Is.EqualTo(0), err);
        using var doc = JsonDocument.Parse(output);
        Assert.That(doc.RootElement.GetProperty("quantization").GetString(), Is.EqualTo("int4"));
        (code, output, err) =
            CliTests.RunWithInput("Hello\n/exit\n", "chat", "-m", _model, "--max-tokens", "4", "--quantize", "int4",
            "--clip-search");
        Assert.That(code, Is.EqualTo(0), err);
    }
}
