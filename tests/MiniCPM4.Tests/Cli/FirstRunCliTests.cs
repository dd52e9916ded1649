using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MiniCPM4.Tests.Demo;
using NUnit.Framework;

namespace MiniCPM4.Tests.Cli;

/// <summary>What a new user runs first, on the demo model (speculative by default): statistics, chat, bench, info and
/// the --context limit, as separate processes.</summary>
[TestFixture]
public class FirstRunCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliTests.Run(args);

    private static string Demo => DemoModelDirectory.Find();

    [Test]
    public void SpeculativeGenerationReportsANonzeroDecodeSpeed()
    {
        // No -m: the demo model with its EAGLE draft, as ./build.sh runs it.
        var (code, output, err) = Run("generate", "-p", "Once upon a time", "--max-tokens", "32",
            "--temperature", "0", "--json", "--threads", "2");
        Assert.That(code, Is.EqualTo(0), err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.That(root.GetProperty("speculative").GetBoolean(), Is.True, "the demo model runs with its draft");
        Assert.That(root.GetProperty("decode_tokens_per_s").GetDouble(), Is.GreaterThan(0));
    }

    [Test]
    public void AdaptiveSpeculationIsTheDefaultKeepsTheTokensAndShowsItsChoice()
    {
        string[] common =
            ["generate", "-p", "The history of the town", "--max-tokens", "64", "--temperature", "0", "--json",
                           "--threads", "2"];
        var auto = Run(common);
        var plain = Run([.. common, "--no-speculative"]);
        var fixedTree = Run([.. common, "--spec-tree", "12"]);
        foreach (var run in new[] { auto, plain, fixedTree }) Assert.That(run.Code, Is.EqualTo(0), run.Err);
        using var a = JsonDocument.Parse(auto.Out);
        using var p = JsonDocument.Parse(plain.Out);
        using var f = JsonDocument.Parse(fixedTree.Out);
        Assert.That(a.RootElement.GetProperty("token_ids").ToString(),
            Is.EqualTo(p.RootElement.GetProperty("token_ids").ToString()));
        Assert.That(f.RootElement.GetProperty("token_ids").ToString(),
            Is.EqualTo(p.RootElement.GetProperty("token_ids").ToString()));
        Assert.That(a.RootElement.GetProperty("spec_tree").GetString(), Is.EqualTo("auto"));
        Assert.That(a.RootElement.GetProperty("spec_plain_tokens").GetInt64(), Is.GreaterThan(0),
            "plain steps are measured");
        Assert.That(a.RootElement.GetProperty("speculative_steps").GetInt64(), Is.GreaterThan(0), "a round is tried");
        Assert.That(a.RootElement.GetProperty("spec_last_tree_size").GetInt32(), Is.AnyOf(0, 4, 8, 16, 32));
        Assert.That(f.RootElement.GetProperty("spec_tree").GetString(), Is.EqualTo("12"));
        Assert.That(f.RootElement.GetProperty("spec_plain_tokens").GetInt64(), Is.Zero);
        Assert.That(f.RootElement.GetProperty("spec_last_tree_size").GetInt32(), Is.EqualTo(12));

        var bad = Run("generate", "-p", "x", "--spec-tree", "banana");
        Assert.That(bad.Code, Is.EqualTo(2));
        Assert.That(bad.Err, Does.Contain("--spec-tree 'banana'"));
        var iterWithAuto = Run("generate", "-p", "x", "--spec-iter", "3");
        Assert.That(iterWithAuto.Code, Is.EqualTo(2));
        Assert.That(iterWithAuto.Err, Does.Contain("fixed --spec-tree"));
    }

    [Test]
    public void ChatHelpIsACommandAndStatsCountSpeculativeTokens()
    {
        var (code, output, err) = CliTests.RunWithInput("/help\nHello\n/stats\n/nosuch\n/exit\n",
            "chat", "--max-tokens", "12", "--temperature", "0", "--threads", "2");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(err, Does.Contain("/reset clears the conversation").And.Contain("Ctrl-C stops a reply"));
        Assert.That(output.TrimEnd().Split('\n'), Has.Length.EqualTo(1),
            "/help, /stats and /nosuch are not sent to the model");
        Assert.That(err, Does.Contain("unknown command /nosuch"));
        var stats = err.Split('\n').Single(l => l.StartsWith("context ", StringComparison.Ordinal));
        Assert.That(stats, Does.Not.Contain("decode 0 tokens").And.Not.Contain(" 0.0 tok/s"), stats);
        Assert.That(stats, Does.Contain("speculative rounds").And.Contain("last step: "),
            "the demo model's draft was used");
    }

    [Test]
    public void CtrlCStopsTheReplyAndTheChatGoesOn()
    {
        var cli = Path.Combine(TestContext.CurrentContext.TestDirectory, "minicpm4.dll");
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true,
        };
        foreach (var a in new[] { "exec", cli, "chat", "-m", Demo, "--max-tokens", "1000000", "--context", "2048",
                                  "--no-speculative", "--threads", "1" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = new StringBuilder();
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (err) err.AppendLine(e.Data); };
        p.BeginErrorReadLine();
        var stdout = p.StandardOutput;
        p.StandardInput.WriteLine("Tell me a long story.");
        p.StandardInput.Flush();
        // Wait for the reply to stream, then interrupt it.
        var buffer = new char[256];
        int read = stdout.Read(buffer, 0, buffer.Length);
        Assert.That(read, Is.GreaterThan(0), "the reply started");
        using (var kill =
            Process.Start("kill", ["-INT", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
            kill.WaitForExit();
        p.StandardInput.WriteLine("/stats");
        p.StandardInput.WriteLine("/exit");
        p.StandardInput.Close();
        string rest = stdout.ReadToEnd();
        if (!p.WaitForExit(60_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail("the chat did not exit after /exit: Ctrl-C did not stop the reply");
        }
        p.WaitForExit();
        string log;
        lock (err) log = err.ToString();
        Assert.That(p.ExitCode, Is.EqualTo(0), log + rest);
        Assert.That(log, Does.Contain("reply stopped"));
        Assert.That(log, Does.Contain("context "), "the chat went on to run /stats");
    }

    [Test]
    public void BenchDefaultsToTheDemoModelAndReportsProgress()
    {
        var (code, output, err) =
            Run("bench", "--prompt-tokens", "16", "--gen-tokens", "8", "--threads", "2", "--json");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(err,
            Does.Contain("bench: loading").And.Contain("bench: prefill: 16 tokens").And.Contain(
            "bench: decode: 8 tokens"));
        using var doc = JsonDocument.Parse(output);
        Assert.That(doc.RootElement.GetProperty("model").GetString(), Is.EqualTo("demo"));
        Assert.That(doc.RootElement.GetProperty("decode_tokens_per_s").GetDouble(), Is.GreaterThan(0));
    }

    [Test]
    public void InfoOnTheDemoModelStaysWithinItsPositions()
    {
        var (code, output, err) = Run("info", "-m", Demo);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Not.Contain("4k context"), "the demo model has 2048 positions");
        var fit = output.Split('\n').First(l => l.StartsWith("context fit", StringComparison.Ordinal));
        Assert.That(fit, Does.Contain("8 GB (Jetson Orin NX) all 2,048 positions"), fit);
        Assert.That(fit, Does.Not.Contain("3,371,973"));
    }

    [Test]
    public void AContextBeyondThePositionsIsAUsageErrorNamingTheOption()
    {
        var (code, _, err) = Run("generate", "-m", Demo, "-p", "x", "--context", "100000");
        Assert.That(code, Is.EqualTo(2), err);
        Assert.That(err, Does.Contain("--context 100000").And.Contain("2048"));
        Assert.That(err, Does.Not.Contain("context_capacity"));
    }
}
