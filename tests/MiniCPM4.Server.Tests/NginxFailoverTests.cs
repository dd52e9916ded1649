using System.ClientModel;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using OpenAI;
using OpenAI.Chat;

namespace MiniCPM4.Server.Tests;

/// <summary>
/// Two `minicpm4 serve` replicas behind Debian's nginx with deploy/nginx/minicpm4.conf, driven by the OpenAI client;
/// one replica is killed (SIGKILL) mid-run. Every request sent after the kill must succeed; streams in flight on the
/// killed replica must end in an error the client sees, never in a silently truncated answer.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class NginxFailoverTests
{
    private const string Nginx = "/usr/sbin/nginx";

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static Process StartReplica(int port, string modelDir)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        foreach (var a in new[]
                 {
                     "exec", Path.Combine(TestContext.CurrentContext.TestDirectory, "minicpm4.dll"), "serve",
                     "--model", modelDir, "--device", "cpu", "--threads", "1", "--port",
                     port.ToString(CultureInfo.InvariantCulture), "--max-concurrent", "2", "--max-queue", "16",
                     "--model-id", "tiny",
                 })
            psi.ArgumentList.Add(a);
        var process = Process.Start(psi)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static async Task WaitHealthyAsync(string url)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(60))
        {
            try
            {
                if ((await http.GetAsync(url + "/health")).IsSuccessStatusCode) return;
            }
            catch (HttpRequestException)
            {
                // not up yet
            }
            catch (TaskCanceledException)
            {
                // not up yet
            }
            await Task.Delay(100);
        }
        Assert.Fail($"{url} did not become healthy");
    }

    [Test]
    public async Task KillingAReplicaMidRun_LosesNoLaterRequest()
    {
        Assert.That(File.Exists(Nginx), Is.True, "nginx is missing: install Debian's nginx (.ci/run does)");
        var temp = Directory.CreateTempSubdirectory("minicpm4-nginx-").FullName;
        string modelDir = Path.GetDirectoryName(TestModel.Model.Directory + "/")!;
        int portA = FreePort(), portB = FreePort(), front = FreePort();
        // The shipped configuration, with this run's ports.
        string shipped = File.ReadAllText(ChatPageBrowserTests.RepositoryFile("deploy/nginx/minicpm4.conf"))
            .Replace("127.0.0.1:8081", $"127.0.0.1:{portA}", StringComparison.Ordinal)
            .Replace("127.0.0.1:8082", $"127.0.0.1:{portB}", StringComparison.Ordinal)
            .Replace("listen 127.0.0.1:8080", $"listen 127.0.0.1:{front}", StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(temp, "minicpm4.conf"), shipped);
        File.WriteAllText(Path.Combine(temp, "nginx.conf"), $$"""
            worker_processes 1;
            pid {{temp}}/nginx.pid;
            error_log {{temp}}/error.log warn;
            events { worker_connections 256; }
            http {
                access_log off;
                client_body_temp_path {{temp}}/body;
                proxy_temp_path {{temp}}/proxy;
                include {{temp}}/minicpm4.conf;
            }
            """);
        var replicaA = StartReplica(portA, modelDir);
        var replicaB = StartReplica(portB, modelDir);
        var nginx = Process.Start(new ProcessStartInfo(Nginx, ["-p", temp, "-c", Path.Combine(temp, "nginx.conf"),
            "-g", "daemon off;"]) { RedirectStandardError = true })!;
        try
        {
            await WaitHealthyAsync($"http://127.0.0.1:{portA}");
            await WaitHealthyAsync($"http://127.0.0.1:{portB}");
            await WaitHealthyAsync($"http://127.0.0.1:{front}");
            var client = new ChatClient("tiny", new ApiKeyCredential("unused"), new OpenAIClientOptions
            {
                Endpoint = new Uri($"http://127.0.0.1:{front}/v1"), NetworkTimeout = TimeSpan.FromSeconds(60),
                RetryPolicy = new System.ClientModel.Primitives.ClientRetryPolicy(maxRetries: 0),
            });
            var options = new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0.7f };
            async Task<bool> Ask(int i)
            {
                ChatCompletion c = await client.CompleteChatAsync([new UserChatMessage($"Question {i}")], options);
                return c.Usage.OutputTokenCount > 0;
            }

            // Warm-up through nginx: both replicas answer.
            for (int i = 0; i < 6; i++) Assert.That(await Ask(i), Is.True);

            // Long streams in flight on both replicas (least_conn spreads them), then replica A dies.
            var longOptions = new ChatCompletionOptions { MaxOutputTokenCount = 1900, Temperature = 1f };
            var started = new TaskCompletionSource[] { new(), new() };
            async Task<string> Stream(int i)
            {
                int updates = 0;
                ChatFinishReason? finish = null;
                try
                {
                    await foreach (var u in client.CompleteChatStreamingAsync(
                                       [new UserChatMessage("Write a very long essay.")], longOptions))
                    {
                        if (++updates == 3) started[i].TrySetResult();
                        finish ??= u.FinishReason;
                    }
                }
                catch (Exception e) when (e is IOException or HttpRequestException or ClientResultException)
                {
                    started[i].TrySetResult();
                    return "error";
                }
                started[i].TrySetResult();
                return finish is null ? "truncated" : "complete";
            }
            var streams = new[] { Stream(0), Stream(1) };
            await Task.WhenAll(started.Select(s => s.Task)).WaitAsync(TimeSpan.FromSeconds(60));
            var killedAt = Stopwatch.StartNew();
            replicaA.Kill();
            await replicaA.WaitForExitAsync();

            // Every request after the kill succeeds (nginx passes a refused connection to the other replica).
            int later = 0;
            TimeSpan firstAnswer = TimeSpan.Zero;
            var batch = Enumerable.Range(100, 24).ToList();
            for (int offset = 0; offset < batch.Count; offset += 4)
            {
                var results = await Task.WhenAll(batch.Skip(offset).Take(4).Select(Ask));
                if (firstAnswer == TimeSpan.Zero) firstAnswer = killedAt.Elapsed;
                Assert.That(results, Has.All.True);
                later += results.Length;
            }
            var outcomes = await Task.WhenAll(streams).WaitAsync(TimeSpan.FromSeconds(120));
            Assert.That(outcomes, Has.None.EqualTo("truncated"), "a cut stream must surface as an error");
            Assert.That(outcomes, Has.Some.EqualTo("error"), "the stream on the killed replica fails visibly");
            TestContext.Out.WriteLine(
                $"failover: {later}/{batch.Count} requests after the kill succeeded; first batch of 4 answered " +
                $"{firstAnswer.TotalMilliseconds:F0} ms after the kill; in-flight streams: " +
                string.Join(", ", outcomes));
        }
        finally
        {
            foreach (var p in new[] { replicaA, replicaB, nginx })
            {
                if (!p.HasExited) p.Kill(entireProcessTree: true);
                await p.WaitForExitAsync();
                p.Dispose();
            }
            Directory.Delete(temp, recursive: true);
        }
    }
}
