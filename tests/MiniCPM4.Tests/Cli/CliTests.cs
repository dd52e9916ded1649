using NUnit.Framework;
using System.Diagnostics;
using System.Text.Json;

namespace MiniCPM4.Tests.Cli;

/// <summary>The minicpm4 CLI end to end, as a separate process (exit codes and streams included).</summary>
[TestFixture]
public class CliTests
{
    private string _temp = null!;

    [OneTimeSetUp]
    public void Setup() => _temp = Directory.CreateTempSubdirectory("minicpm4-cli-").FullName;

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_temp, recursive: true);

    internal static (int Code, string Out, string Err) Run(params string[] args) => RunWithInput(null, args);

    internal static (int Code, string Out, string Err) RunWithInput(string? stdin, params string[] args)
    {
        var cli = Path.Combine(TestContext.CurrentContext.TestDirectory, "minicpm4.dll");
        var psi =
            new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true,
            RedirectStandardInput = true };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(cli);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        if (stdin is not null) p.StandardInput.Write(stdin);
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"minicpm4 {string.Join(' ', args)} timed out");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    private static string Model => TinyModelFixture.Directory;

    [Test]
    public void GenerateStreamsText()
    {
        var (code, output, err) =
            Run("generate", "-m", Model, "-p", "Once upon a time", "--max-tokens", "16", "--device", "cpu");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output.Trim(), Is.Not.Empty);
    }

    [Test]
    public void GenerateJsonHasTheDocumentedFieldsAndIsDeterministic()
    {
        string[] args =
            ["generate", "-m", Model, "-p", "Hello", "--max-tokens", "12", "--json", "--temperature", "0.9", "--seed",
            "5"];
        var (code, output, err) = Run(args);
        Assert.That(code, Is.EqualTo(0), err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        foreach (
            var field in new[] { "text", "token_ids", "prompt_tokens", "generated_tokens", "finish_reason",
            "prefill_tokens_per_s", "decode_tokens_per_s" })
            Assert.That(root.TryGetProperty(field, out _), Is.True, $"missing {field}");
        Assert.That(root.GetProperty("token_ids").GetArrayLength(),
            Is.EqualTo(root.GetProperty("generated_tokens").GetInt32()));
        Assert.That(root.GetProperty("generated_tokens").GetInt32(), Is.GreaterThan(0));
        Assert.That(root.GetProperty("finish_reason").GetString(), Is.AnyOf("stop", "length", "context_full"));
        Assert.That(Strip(Run(args).Out), Is.EqualTo(Strip(output)), "same seed, same output");

        static string Strip(string json)
        {
            using var d = JsonDocument.Parse(json);
            return d.RootElement.GetProperty("text").GetString() + "|" + d.RootElement.GetProperty("token_ids");
        }
    }

    [Test]
    public void TokenizeTextAndJsonLines()
    {
        var (code, output, err) = Run("tokenize", "-m", Model, "--text", "Hello world!");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output.Trim(), Is.EqualTo("[15043,3186,29991]"), "ids of the SentencePiece fixture, no BOS");
        var (_, withBos, _) = Run("tokenize", "-m", Model, "--text", "Hello world!", "--bos");
        Assert.That(withBos.Trim(), Is.EqualTo("[1,15043,3186,29991]"));

        var file = Path.Combine(_temp, "in.jsonl");
        File.WriteAllLines(file, ["\"Hello world!\"", "\"<|im_start|>user\""]);
        var (code2, lines, err2) = Run("tokenize", "-m", Model, "--jsonl", file);
        Assert.That(code2, Is.EqualTo(0), err2);
        var outLines = lines.Trim().Split('\n');
        Assert.That(outLines, Has.Length.EqualTo(2));
        Assert.That(outLines[0].Trim(), Is.EqualTo("[15043,3186,29991]"));
        Assert.That(outLines[1].Trim(), Does.StartWith("[32000,"), "the ChatML token is recognised in text");
    }

    [Test]
    public void LogitsPrefillAndDecodeAgree()
    {
        var prefill = Path.Combine(_temp, "prefill.npy");
        var decode = Path.Combine(_temp, "decode.npy");
        var (c1, _, e1) =
            Run("logits", "-m", Model, "--tokens", "1,450,4996,17354", "--out", prefill, "--mode", "prefill");
        var (c2, _, e2) =
            Run("logits", "-m", Model, "--tokens", "1,450,4996,17354", "--out", decode, "--mode", "decode");
        Assert.That(c1, Is.EqualTo(0), e1);
        Assert.That(c2, Is.EqualTo(0), e2);
        var (shape1, a) = ReadNpy(prefill);
        var (shape2, b) = ReadNpy(decode);
        Assert.That(shape1, Is.EqualTo(new[] { 4, 32002 }));
        Assert.That(shape2, Is.EqualTo(shape1));
        float max = a.Max(Math.Abs);
        Assert.That(max, Is.GreaterThan(0));
        for (int i = 0; i < a.Length; i++)
            Assert.That(b[i], Is.EqualTo(a[i]).Within(1e-4 * Math.Max(1, max)), $"element {i}");
    }

    private static (int[] Shape, float[] Data) ReadNpy(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.That(bytes[..6], Is.EqualTo(new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y' }));
        int headerLength = BitConverter.ToUInt16(bytes, 8);
        Assert.That((10 + headerLength) % 64, Is.EqualTo(0), "header aligned to 64 bytes");
        var header = System.Text.Encoding.ASCII.GetString(bytes, 10, headerLength);
        Assert.That(header, Does.Contain("'descr': '<f4'").And.Contain("'fortran_order': False"));
        var shapeText = header[(header.IndexOf("'shape': (", StringComparison.Ordinal) + 10)..];
        var shape =
            shapeText[..shapeText.IndexOf(')')].Split(',',
            StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
        var data = new float[(bytes.Length - 10 - headerLength) / 4];
        Buffer.BlockCopy(bytes, 10 + headerLength, data, 0, data.Length * 4);
        Assert.That(data.Length, Is.EqualTo(shape.Aggregate(1, (x, y) => x * y)));
        return (shape, data);
    }

    [Test]
    public void ChatRunsSeveralTurnsFromStdin()
    {
        var (code, output, err) = RunWithInput("Hello there\n/stats\nAnd again?\n/reset\nNew start\n/exit\n",
            "chat", "-m", Model, "--max-tokens", "6", "--temperature", "0.7");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output.TrimEnd().Split('\n'), Has.Length.EqualTo(3), "one reply line per user turn");
        Assert.That(err, Does.Contain("context").And.Contain("tok/s"), "/stats reports on stderr");
        Assert.That(err, Does.Contain("conversation cleared"));
    }

    [Test]
    public void InfoDescribesTheCheckpointAndBackends()
    {
        var (code, output, err) = Run("info", "-m", Model);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output,
            Does.Contain("vocab         32002").And.Contain("parameters").And.Contain("backends").And.Contain("cpu"));
        Assert.That(output,
            Does.Contain("context fit   weights as stored: 8 GB (Jetson Orin NX) ").And.Contain("24 GB (RTX 4090)")
            .And.Contain("64 GB (Jetson AGX Orin)"));
        // The CPU-only test library has no CUDA backend: info says so instead of listing devices.
        Assert.That(output,
            Does.Contain("cuda          CUDA unavailable: the CUDA backend is not compiled into this build"));
    }

    [Test]
    public void SparseOverridesFromTheCommandLine()
    {
        var (code, _, err) = Run("generate", "-m", Model, "-p", "Hello", "--max-tokens", "4", "--device", "cpu",
            "--sparse", "kernel_size=8,kernel_stride=4,block_size=16,window_size=32,topk=2,dense_len=-1");
        Assert.That(code, Is.EqualTo(0), err);
        var unknown = Run("generate", "-m", Model, "-p", "Hello", "--sparse", "top_k=2");
        Assert.That(unknown.Code, Is.EqualTo(2));
        Assert.That(unknown.Err, Does.Contain("--sparse").And.Contain("topk"));
        Assert.That(Run("generate", "-m", Model, "-p", "Hello", "--sparse", "topk=2", "--dense").Code, Is.EqualTo(2));
        var invalid = Run("generate", "-m", Model, "-p", "Hello", "--sparse", "block_size=10", "--device", "cpu");
        Assert.That(invalid.Code, Is.EqualTo(1));
        Assert.That(invalid.Err, Does.Contain("SparseAttentionOverrides.BlockSize"));
    }

    [Test]
    public void KvMemorySizesTheContext()
    {
        var (code, output, err) =
            Run("generate", "-m", Model, "-p", "Hello", "--max-tokens", "4", "--kv-memory", "64KiB", "--json",
            "--device", "cpu",
            "--no-cuda-graphs");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("\"generated_tokens\""));
        var tooSmall = Run("generate", "-m", Model, "-p", "Hello", "--kv-memory", "1B", "--device", "cpu");
        Assert.That(tooSmall.Code, Is.EqualTo(1));
        Assert.That(tooSmall.Err, Does.Contain("holds no token"));
        var unitless = Run("generate", "-m", Model, "-p", "Hello", "--kv-memory", "12");
        Assert.That(unitless.Code, Is.EqualTo(2));
        Assert.That(unitless.Err, Does.Contain("--kv-memory").And.Contain("unit"));
    }

    [Test]
    public void LongContextNeedsMiniCpm4Heads()
    {
        // The tiny model has head_dim 32; the published factors are for 128.
        var (code, _, err) = Run("generate", "-m", Model, "-p", "x", "--long-context", "65536");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("head_dim 128").And.Contain("head_dim 32"));
    }

    [Test]
    public void ExitCodes()
    {
        var missing = Run("generate", "-m", Path.Combine(_temp, "nope"), "-p", "x");
        Assert.That(missing.Code, Is.EqualTo(1));
        Assert.That(missing.Err.Trim().Split('\n'), Has.Length.EqualTo(1), "one line, no stack trace");
        Assert.That(missing.Err, Does.Contain("nope"));

        Assert.That(Run("generate", "-m", Model).Code, Is.EqualTo(2), "missing --prompt is a usage error");
        Assert.That(Run("generate", "-m", Model, "-p", "x", "--device", "tpu").Code, Is.EqualTo(2));
        Assert.That(Run("frobnicate").Code, Is.EqualTo(2));
        Assert.That(Run("tokenize", "-m", Model).Code, Is.EqualTo(2), "neither --text nor --jsonl");

        var cuda = Run("generate", "-m", Model, "-p", "x", "--device", "cuda");
        Assert.That(cuda.Code, Is.EqualTo(1));
        Assert.That(cuda.Err, Does.Contain("CUDA").IgnoreCase);

        var verbose = Run("generate", "-m", Path.Combine(_temp, "nope"), "-p", "x", "--verbose");
        Assert.That(verbose.Code, Is.EqualTo(1));
        Assert.That(verbose.Err, Does.Contain(" at "), "--verbose adds the stack trace");
    }

    [Test]
    public void CreateModelWritesALoadableCheckpoint()
    {
        var dir = Path.Combine(_temp, "created");
        var (code, _, err) = Run("create-model", "--preset", "tiny", "--out", dir, "--seed", "9");
        Assert.That(code, Is.EqualTo(0), err);
        var (gen, output, err2) = Run("generate", "-m", dir, "-p", "Hi", "--max-tokens", "4");
        Assert.That(gen, Is.EqualTo(0), err2);
        Assert.That(output, Is.Not.Empty);
        Assert.That(Run("create-model", "--preset", "huge", "--out", dir).Code, Is.EqualTo(2));
    }
}
