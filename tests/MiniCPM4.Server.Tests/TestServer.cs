using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;
using MiniCPM4.Checkpoints;

namespace MiniCPM4.Server.Tests;

/// <summary>A tiny random checkpoint (loaded once per run) and in-process servers on loopback port 0.</summary>
internal static class TestModel
{
    private static readonly Lazy<MiniCpmModel> Loaded = new(() =>
    {
        var dir = Path.Combine(Path.GetTempPath(), $"minicpm4-server-tests-{Environment.ProcessId}", "tiny");
        CheckpointWriter.CreateRandomModel(dir, ModelPreset.Tiny, seed: 5, dtype: TensorDType.BF16);
        return MiniCpmModel.Load(dir, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2 });
    });

    public static MiniCpmModel Model => Loaded.Value;

    private static readonly Lazy<MiniCpmModel> Demo = new(() =>
    {
        string dir = MiniCPM4.Tests.Demo.DemoModelDirectory.Find();
        return MiniCpmModel.Load(dir, new MiniCpmLoadOptions
        {
            Device = ComputeDevice.Cpu,
            Threads = 2,
            DraftDirectory = Path.Combine(dir, "draft"),
            FrSpecPath = Directory.GetFiles(Path.Combine(dir, "draft"), "freq_*.pt").Single(),
        });
    });

    /// <summary>The bundled demo model (real weights) with its EAGLE draft and FR-Spec list.</summary>
    public static MiniCpmModel DemoWithDraft => Demo.Value;
}

internal sealed class TestServer : IAsyncDisposable
{
    public const string ModelId = "tiny-test-model";

    private TestServer(WebApplication app, string baseAddress)
    {
        App = app;
        BaseAddress = baseAddress;
        Http = new HttpClient { BaseAddress = new Uri(baseAddress), Timeout = TimeSpan.FromSeconds(60) };
    }

    public WebApplication App { get; }
    public string BaseAddress { get; }
    public HttpClient Http { get; }
    public ServerMetrics Metrics => MiniCpmServer.GetMetrics(App);

    public static async Task<TestServer> StartAsync(Action<ServerOptions>? configure = null)
    {
        var options = new ServerOptions
        {
            Model = TestModel.Model,
            Urls = "http://127.0.0.1:0",
            ModelId = ModelId,
            MinimumLogLevel = LogLevel.Warning,
        };
        configure?.Invoke(options);
        var app = MiniCpmServer.Build(options);
        await app.StartAsync();
        return new TestServer(app, MiniCpmServer.GetBaseAddress(app));
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }
}
