using NUnit.Framework;
using static MiniCPM4.Tests.Interop.InteropTestSupport;

namespace MiniCPM4.Tests.Interop;

/// <summary>
/// The committed bindings/Generated/NativeMethods.g.cs must be exactly what bindings/generator produces
/// from native/include/minicpm4.h. These tests fail (never skip) when clang is missing.
/// </summary>
[TestFixture]
[NonParallelizable]
public class BindingsFreshnessTests
{
    private const string GeneratedFile = "bindings/Generated/NativeMethods.g.cs";
    private string _root = null!;
    private string _project = null!;

    [OneTimeSetUp]
    public void BuildGenerator()
    {
        _root = RepoRoot;
        _project = Path.Combine(_root, "bindings", "generator", "MiniCPM4.BindingsGenerator.csproj");
        FindClang();
        ProcessResult build = Run("dotnet",
            ["build", _project, "-c", "Release", "-nologo", "-v", "q", "-p:UseSharedCompilation=false"], _root);
        Assert.That(build.ExitCode, Is.Zero, "building bindings/generator failed:\n" + build.Output);
    }

    private ProcessResult RunGenerator(params string[] args) =>
        Run("dotnet", ["run", "--no-build", "-c", "Release", "--project", _project, "--", .. args], _root);

    [Test]
    public void CommittedBindingsAreUpToDate()
    {
        ProcessResult r = RunGenerator("--check", "--repo", _root);
        Assert.That(r.ExitCode, Is.Zero,
            $"{GeneratedFile} does not match native/include/minicpm4.h; run `dotnet run --project " +
                $"bindings/generator` " +
            "and commit the result.\n" + r.Output);
        Assert.That(r.Stdout, Does.Contain("up to date"));
    }

    [Test]
    public void CheckReportsADiffWhenTheCommittedFileDiffers()
    {
        string repo = CreateScratchRepo();
        try
        {
            string file = Path.Combine(repo, GeneratedFile);
            string original = File.ReadAllText(file);
            File.WriteAllText(file,
                original.Replace("public const int MCPM_ERR_INTERNAL = 7;", "public const int MCPM_ERR_INTERNAL = 8;"));

            ProcessResult r = RunGenerator("--check", "--repo", repo);
            Assert.Multiple(() =>
            {
                Assert.That(r.ExitCode, Is.EqualTo(1), r.Output);
                Assert.That(r.Stderr, Does.Contain("-    public const int MCPM_ERR_INTERNAL = 8;"));
                Assert.That(r.Stderr, Does.Contain("+    public const int MCPM_ERR_INTERNAL = 7;"));
            });

            // Without --check the generator repairs the file, after which the check passes.
            Assert.That(RunGenerator("--repo", repo).ExitCode, Is.Zero);
            Assert.That(File.ReadAllText(file), Is.EqualTo(original));
            Assert.That(RunGenerator("--check", "--repo", repo).ExitCode, Is.Zero);
        }
        finally
        {
            Directory.Delete(repo, recursive: true);
        }
    }

    [Test]
    public void CheckFailsWhenTheFileIsMissing()
    {
        string repo = CreateScratchRepo();
        try
        {
            File.Delete(Path.Combine(repo, GeneratedFile));
            ProcessResult r = RunGenerator("--check", "--repo", repo);
            Assert.That(r.ExitCode, Is.EqualTo(1), r.Output);
            Assert.That(r.Stderr, Does.Contain("does not exist"));
        }
        finally
        {
            Directory.Delete(repo, recursive: true);
        }
    }

    [TestCase("MCPM_API mcpm_status mcpm_bad(long value);", "unknown C type 'long'")]
    [TestCase("MCPM_API mcpm_status mcpm_bad(void (*callback)(void));", "function pointers")]
    [TestCase("typedef struct mcpm_bad { const char* names[4]; } mcpm_bad;", "arrays of pointers")]
    [TestCase("typedef struct mcpm_bad { int32_t grid[2][2]; } mcpm_bad;", "unsupported array type")]
    [TestCase("typedef struct mcpm_bad { mcpm_model_options many[2]; } mcpm_bad;",
        "only fixed-size integer, float and char arrays")]
    [TestCase("typedef union mcpm_bad { int32_t a; float b; } mcpm_bad;", "only structs are supported")]
    [TestCase("#define MCPM_BAD_FLOAT 1.5f", "MCPM_BAD_FLOAT")]
    [TestCase("typedef struct mcpm_other mcpm_other;\nMCPM_API mcpm_status mcpm_bad(mcpm_other* x);", "no SafeHandle")]
    public void GeneratorFailsLoudlyOnWhatItDoesNotKnow(string declaration, string expectedMessage)
    {
        string repo = CreateScratchRepo();
        try
        {
            string header = Path.Combine(repo, "native", "include", "minicpm4.h");
            string text = File.ReadAllText(header);
            const string anchor = "#ifdef __cplusplus\n} /* extern \"C\" */";
            Assert.That(text, Does.Contain(anchor));
            File.WriteAllText(header, text.Replace(anchor, declaration + "\n\n" + anchor));

            string generated = Path.Combine(repo, GeneratedFile);
            string before = File.ReadAllText(generated);
            ProcessResult r = RunGenerator("--repo", repo);
            Assert.Multiple(() =>
            {
                Assert.That(r.ExitCode, Is.EqualTo(1), r.Output);
                Assert.That(r.Stderr, Does.Contain(expectedMessage));
                Assert.That(File.ReadAllText(generated), Is.EqualTo(before), "a failed run must not write the file");
            });
        }
        finally
        {
            Directory.Delete(repo, recursive: true);
        }
    }

    /// <summary>A minimal copy of the repository: the header and the committed generated file.</summary>
    private string CreateScratchRepo()
    {
        string repo = Path.Combine(Path.GetTempPath(), "minicpm4-bindgen-" + Guid.NewGuid().ToString("N"));
        foreach (string relative in new[] { "native/include/minicpm4.h", GeneratedFile })
        {
            string target = Path.Combine(repo, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(Path.Combine(_root, relative), target);
        }
        return repo;
    }
}
