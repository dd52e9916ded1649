using System.Diagnostics;

namespace MiniCPM4.Server.Tests;

/// <summary>The chat page at / in headless Chromium (tests/browser/chat-page.mjs: Debian's chromium driven by npm's
/// playwright-core; .ci/run installs both).</summary>
[TestFixture]
public sealed class ChatPageBrowserTests
{
    internal static string RepositoryFile(string relative)
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, relative))) return Path.Combine(d.FullName, relative);
        Assert.Fail($"{relative} not found above the test directory");
        throw new InvalidOperationException("unreachable");
    }

    [Test]
    public async Task LoadSendStreamAndStop()
    {
        string script = RepositoryFile("tests/browser/chat-page.mjs");
        string dir = Path.GetDirectoryName(script)!;
        Assert.That(Directory.Exists(Path.Combine(dir, "node_modules", "playwright-core")), Is.True,
            "playwright-core is missing: run 'npm ci' in tests/browser (.ci/run does)");
        await using var server = await TestServer.StartAsync();
        var psi = new ProcessStartInfo("node", [script, server.BaseAddress])
        {
            WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var node = Process.Start(psi)!;
        var output = node.StandardOutput.ReadToEndAsync();
        var error = node.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(150));
        try
        {
            await node.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            node.Kill(entireProcessTree: true);
            Assert.Fail("the browser test timed out: " + await output + await error);
        }
        Assert.That(node.ExitCode, Is.Zero, await output + await error);
        TestContext.Out.WriteLine(await output);
    }
}
