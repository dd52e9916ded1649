using System.Text.Json;
using NUnit.Framework;

namespace MiniCPM4.Tests.Cli;

/// <summary>`minicpm4 create-model --draft-out` and `generate --draft`, as separate processes.</summary>
[TestFixture]
public class SpeculativeCliTests
{
    private string _temp = null!;

    [OneTimeSetUp]
    public void Setup() => _temp = Directory.CreateTempSubdirectory("minicpm4-spec-cli-").FullName;

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_temp, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliTests.Run(args);

    [Test]
    public void GenerateWithADraftGivesTheSameTokensAndReportsAcceptance()
    {
        string model = Path.Combine(_temp, "tiny"), draft = Path.Combine(_temp, "tiny-draft");
        var (code, _, err) =
            Run("create-model", "--preset", "tiny", "--out", model, "--seed", "4", "--draft-out", draft);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(File.Exists(Path.Combine(draft, "model.safetensors")), Is.True);

        string[] common =
            ["generate", "-m", model, "-p", "Once upon a time", "--max-tokens", "24", "--json", "--device", "cpu",
                           "--repetition-penalty", "1.3"];
        var plain = Run(common);
        Assert.That(plain.Code, Is.EqualTo(0), plain.Err);
        var spec = Run([.. common, "--draft", draft, "--spec-iter", "3", "--spec-topk", "4", "--spec-tree", "12"]);
        Assert.That(spec.Code, Is.EqualTo(0), spec.Err);
        using var a = JsonDocument.Parse(plain.Out);
        using var b = JsonDocument.Parse(spec.Out);
        Assert.That(b.RootElement.GetProperty("token_ids").ToString(),
            Is.EqualTo(a.RootElement.GetProperty("token_ids").ToString()));
        Assert.That(a.RootElement.GetProperty("speculative").GetBoolean(), Is.False);
        Assert.That(b.RootElement.GetProperty("speculative").GetBoolean(), Is.True);
        Assert.That(b.RootElement.GetProperty("speculative_steps").GetInt64(), Is.GreaterThan(0));
        Assert.That(b.RootElement.GetProperty("mean_accepted_tokens").GetDouble(), Is.GreaterThanOrEqualTo(1.0));
    }

    [Test]
    public void BadSpeculativeArgumentsAreUsageErrors()
    {
        var (code, _, err) = Run("generate", "-m", "/nonexistent", "-p", "x", "--frspec", "freq_8.pt");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--frspec needs --draft"));
        (code, _, err) = Run("generate", "-m", "/nonexistent", "-p", "x", "--spec-tree", "99");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--spec-tree"));
        (code, _, err) = Run("generate", "-m", "/nonexistent", "-p", "x", "--draft", "/nonexistent-draft");
        Assert.That(code, Is.EqualTo(1));
    }
}
