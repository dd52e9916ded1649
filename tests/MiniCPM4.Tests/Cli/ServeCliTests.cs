using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using NUnit.Framework;

namespace MiniCPM4.Tests.Cli;

/// <summary>`minicpm4 serve` as a process: option checks at start, the demo default, a request, SIGTERM.</summary>
[TestFixture]
public sealed class ServeCliTests
{
    [TestCase("--max-concurrent", "0")]
    [TestCase("--max-queue", "-1")]
    [TestCase("--port", "70000")]
    [TestCase("--shutdown-timeout", "-3")]
    public void InvalidOptions_AreRefusedBeforeTheModelLoads(string option, string value)
    {
        var (code, _, err) = CliTests.Run("serve", option, value);
        Assert.That(code, Is.EqualTo(2), err);
        Assert.That(err, Does.Contain(option));
    }

    [Test]
    public async Task ServesTheDemoModelWithItsDraft_AndStopsOnSigterm()
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "exec", Path.Combine(TestContext.CurrentContext.TestDirectory, "minicpm4.dll"),
                     "serve", "--port", "0", "--alias", "gpt-4o-mini", "--threads", "2" })
            psi.ArgumentList.Add(a);
        using var server = Process.Start(psi)!;
        var stdout = server.StandardOutput.ReadToEndAsync();
        try
        {
            // "minicpm4: serving 'demo' on http://127.0.0.1:PORT (...)"
            string? url = null;
            var lines = new List<string>();
            while (url is null && await server.StandardError.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60)) is
                   { } line)
            {
                lines.Add(line);
                if (line.StartsWith("minicpm4: serving 'demo' on ", StringComparison.Ordinal))
                    url = line.Split(' ')[4];
            }
            Assert.That(url, Is.Not.Null, string.Join('\n', lines));
            Assert.That(lines[^1], Does.Contain("speculative decoding with the draft"));
            var stderr = server.StandardError.ReadToEndAsync();

            using var http = new HttpClient { BaseAddress = new Uri(url!) };
            using var response = await http.PostAsJsonAsync("/v1/chat/completions", new
            {
                model = "gpt-4o-mini",
                messages = new[] { new { role = "user", content = "Hello" } },
                max_tokens = 8,
            });
            var root = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            Assert.That(root.GetProperty("model").GetString(), Is.EqualTo("gpt-4o-mini"));
            Assert.That(root.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), Is.InRange(1, 8));

            using (var kill = Process.Start("kill", ["-TERM", server.Id.ToString(
                       System.Globalization.CultureInfo.InvariantCulture)]))
                await kill.WaitForExitAsync();
            await server.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.That(server.ExitCode, Is.Zero, await stderr);
            // The console log (stdout): one structured line per request.
            Assert.That(await stdout, Does.Contain(" chat: prompt_tokens=").And.Contain("finish="));
        }
        finally
        {
            if (!server.HasExited) server.Kill(entireProcessTree: true);
            await stdout;
        }
    }
}
