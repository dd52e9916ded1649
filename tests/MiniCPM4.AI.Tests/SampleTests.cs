using System.Diagnostics;
using NUnit.Framework;

namespace MiniCPM4.AI.Tests;

/// <summary>The samples that write a temporary checkpoint run to the end and delete it.</summary>
[TestFixture]
public class SampleTests
{
    [TestCase("ChatPipeline")]
    [TestCase("ToolUse")]
    public void SampleRunsAndLeavesNoTemporaryCheckpoint(string sample)
    {
        string testDir = TestContext.CurrentContext.TestDirectory;   // .../tests/X/bin/<Configuration>/net10.0
        string configuration = new DirectoryInfo(testDir).Parent!.Name;
        var repo = new DirectoryInfo(testDir);
        while (repo is not null && !File.Exists(Path.Combine(repo.FullName, "MiniCPM4.sln"))) repo = repo.Parent;
        Assert.That(repo, Is.Not.Null, "the repository root");
        string dll = Path.Combine(repo!.FullName, "samples", sample, "bin", configuration, "net10.0", sample + ".dll");
        Assert.That(File.Exists(dll), Is.True, $"{dll} is built with the solution");

        string temp = Directory.CreateTempSubdirectory("minicpm4-sample-tmp-").FullName;
        try
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.ArgumentList.Add("exec");
            psi.ArgumentList.Add(dll);
            psi.Environment["TMPDIR"] = temp;   // Path.GetTempPath() on Unix
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(180_000))
            {
                p.Kill(entireProcessTree: true);
                Assert.Fail($"{sample} timed out");
            }
            Assert.That(p.ExitCode, Is.EqualTo(0), stdout.Result + stderr.Result);
            Assert.That(stdout.Result, Does.Contain(temp), "the sample wrote its checkpoint under the temp directory");
            Assert.That(
                Directory.EnumerateFileSystemEntries(temp).Where(e => Path.GetFileName(e).StartsWith("minicpm4-")),
                Is.Empty, "the temporary checkpoint was deleted");
        }
        finally
        {
            Directory.Delete(temp, recursive: true);
        }
    }
}
