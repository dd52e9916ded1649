using System.Text.Json;
using MiniCPM4.Speculative;
using NUnit.Framework;

namespace MiniCPM4.Tests.Speculative;

/// <summary>`minicpm4 frspec build` and `frspec info` end to end, as a separate process. Neither needs the native
/// engine: build reads only the checkpoint's config and tokenizer.</summary>
[TestFixture]
public class FrSpecCliTests
{
    private string _temp = null!;
    private string _model = null!;

    [OneTimeSetUp]
    public void Setup()
    {
        _temp = Directory.CreateTempSubdirectory("minicpm4-frspec-cli-").FullName;
        // Only what build needs: config.json, the tokenizer files and generation_config.json — no weights.
        _model = Directory.CreateDirectory(Path.Combine(_temp, "model")).FullName;
        foreach (
            var name in new[] { "config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json" })
            File.Copy(Path.Combine(TinyModelFixture.Directory, name), Path.Combine(_model, name));
    }

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_temp, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => Cli.CliTests.Run(args);

    private string WriteCorpus()
    {
        string corpus = Path.Combine(_temp, "corpus.txt");
        var lines = new List<string>();
        for (int i = 0; i < 200; i++)
            lines.Add($"The quick brown fox {i} jumps over the lazy dog, and the dog sleeps. Line number {i * 7}.");
        lines.Add("");
        lines.Add("Once upon a time there was a little model that drafted tokens.");
        File.WriteAllLines(corpus, lines);
        return corpus;
    }

    [Test]
    public void Build_WritesALoadableList_AndInfoChecksIt()
    {
        string corpus = WriteCorpus();
        string output = Path.Combine(_temp, "freq_32.pt");
        var (code, stdout, err) =
            Run("frspec", "build", "-m", _model, "--corpus", corpus, "--size", "32", "--out", output, "--json");
        Assert.That(code, Is.EqualTo(0), err);
        using (var doc = JsonDocument.Parse(stdout))
        {
            var root = doc.RootElement;
            Assert.That(root.GetProperty("count").GetInt32(), Is.EqualTo(32));
            Assert.That(root.GetProperty("path").GetString(), Is.EqualTo(output));
            Assert.That(root.GetProperty("corpus_lines").GetInt64(), Is.EqualTo(202));
            Assert.That(root.GetProperty("eos_token_id").GetInt32(), Is.EqualTo(32001),
                "the tokenizer's eos_token, <|im_end|>");
            double coverage = root.GetProperty("coverage").GetDouble();
            Assert.That(coverage, Is.GreaterThan(0.5).And.LessThanOrEqualTo(1.0));
        }

        var v = FrSpecVocabulary.Load(output, 32002, [32001, 2], 32);
        Assert.That(v.TokenIds[^1], Is.EqualTo(32001));
        Assert.That(v.TokenIds.Distinct().Count(), Is.EqualTo(32));

        var (textCode, text, textErr) =
            Run("frspec", "build", "-m", _model, "--corpus", corpus, "--size", "32", "--out",
            Path.Combine(_temp, "f.npy"));
        Assert.That(textCode, Is.EqualTo(0), textErr);
        Assert.That(text, Does.Contain("coverage").And.Contain("f.npy"));
        Assert.That(FrSpecVocabulary.Load(Path.Combine(_temp, "f.npy"), 32002, [32001], 32).TokenIds,
            Is.EqualTo(v.TokenIds));

        var (infoCode, info, infoErr) = Run("frspec", "info", output, "-m", _model, "--size", "32");
        Assert.That(infoCode, Is.EqualTo(0), infoErr);
        Assert.That(info, Does.Contain("torch.save zip").And.Contain("ok: valid").And.Contain("32001"));

        var (badCode, _, badErr) = Run("frspec", "info", output, "--size", "33");
        Assert.That(badCode, Is.EqualTo(1));
        Assert.That(badErr, Does.Contain("33").And.Contain(output));
    }

    [Test]
    public void Info_RejectsAHostileFile_AndBuild_ChecksItsArguments()
    {
        string evil = Path.Combine(_temp, "evil.pt");
        using (var zip = System.IO.Compression.ZipFile.Open(evil, System.IO.Compression.ZipArchiveMode.Create))
        {
            using var s = zip.CreateEntry("evil/data.pkl").Open();
            s.Write([0x80, 0x02, .. "cos\nsystem\n."u8]); // PROTO 2, GLOBAL os.system, STOP
        }
        var (code, _, err) = Run("frspec", "info", evil, "--json");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("GLOBAL").And.Contain(evil));

        var (usage, _, usageErr) =
            Run("frspec", "build", "-m", _model, "--corpus", WriteCorpus(), "--size", "0", "--out",
            Path.Combine(_temp, "x.pt"));
        Assert.That(usage, Is.EqualTo(2), usageErr);
        var (missing, _, missingErr) =
            Run("frspec", "build", "-m", _model, "--corpus", Path.Combine(_temp, "nope.txt"), "--out",
            Path.Combine(_temp, "x.pt"));
        Assert.That(missing, Is.EqualTo(1));
        Assert.That(missingErr, Does.Contain("nope.txt"));
    }
}
