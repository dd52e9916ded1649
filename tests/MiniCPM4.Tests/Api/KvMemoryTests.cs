using NUnit.Framework;

namespace MiniCPM4.Tests.Api;

/// <summary>Session options that reach the engine's session params: sizing the KV cache from a memory limit
/// (SessionOptions.KvCacheMemoryBytes / Fraction, and the CLI's --kv-memory syntax) and CudaGraphs.</summary>
[TestFixture]
public class KvMemoryTests
{
    private MiniCpmModel _model = null!;

    [OneTimeSetUp]
    public void Load() => _model = TinyModelFixture.Load();

    [OneTimeTearDown]
    public void Unload() => _model.Dispose();

    [Test]
    public void KvBytesPerTokenIsTheFp32KAndVRowsOfEveryLayerOnTheCpu()
    {
        var c = _model.Config;
        Assert.That(_model.KvBytesPerToken,
            Is.EqualTo(2L * c.NumHiddenLayers * c.NumKeyValueHeads * c.HeadDim * sizeof(float)));
    }

    [Test]
    public void TheCapacityIsTheMostThatFitsTheByteLimit()
    {
        long perToken = _model.KvBytesPerToken;
        using (var s = _model.CreateSession(new SessionOptions { KvCacheMemoryBytes = perToken * 37 + perToken / 2 }))
            Assert.That(s.Capacity, Is.EqualTo(37));
        using (var s =
            _model.CreateSession(new SessionOptions { KvCacheMemoryBytes = perToken * 37, ContextLength = 20 }))
            Assert.That(s.Capacity, Is.EqualTo(20), "ContextLength caps a limit");
        using (var s = _model.CreateSession(new SessionOptions { KvCacheMemoryBytes = perToken * 1_000_000 }))
            Assert.That(s.Capacity, Is.EqualTo(_model.Config.MaxPositionEmbeddings),
                "max_position_embeddings caps it too");
        using (var s = _model.CreateSession(new SessionOptions { KvCacheMemoryFraction = 1.0 }))
            Assert.That(s.Capacity, Is.EqualTo(_model.Config.MaxPositionEmbeddings),
                "all available memory holds the whole context");
    }

    [Test]
    public void ALimitWithoutRoomForATokenAndBadValuesThrow()
    {
        var tooSmall = Assert.Throws<MiniCpmOutOfMemoryException>(() =>
            _model.CreateSession(new SessionOptions { KvCacheMemoryBytes = _model.KvBytesPerToken - 1 }).Dispose());
        Assert.That(tooSmall!.Message, Does.Contain("holds no token"));
        Assert.Throws<ArgumentOutOfRangeException>(() =>
            _model.CreateSession(new SessionOptions { KvCacheMemoryBytes = -1 }).Dispose());
        foreach (double bad in new[] { -0.1, 1.5, double.NaN })
            Assert.Throws<ArgumentOutOfRangeException>(() =>
                _model.CreateSession(new SessionOptions { KvCacheMemoryFraction = bad }).Dispose(), $"{bad}");
    }

    [Test]
    public async Task TheCudaGraphsOptionReachesTheEngineAndChangesNothingOnTheCpu()
    {
        var options = new GenerationOptions { MaxTokens = 12, StopTokenIds = [] };
        async Task<List<int>> Run(bool graphs)
        {
            using var s = _model.CreateSession(new SessionOptions { ContextLength = 64, CudaGraphs = graphs });
            Assert.That(s.Capacity, Is.EqualTo(64), "the fields before cuda_graphs keep their values");
            var ids = new List<int>();
            await foreach (var t in s.GenerateAsync("Once upon a time", options)) if (t.Id >= 0) ids.Add(t.Id);
            return ids;
        }
        var on = await Run(true);
        Assert.That(on, Has.Count.EqualTo(12));
        Assert.That(await Run(false), Is.EqualTo(on));
    }

    [TestCase("8GiB", 8L << 30, 0.0)]
    [TestCase("512 MB", 512_000_000L, 0.0)]
    [TestCase("1.5g", 3L << 29, 0.0)]
    [TestCase("4096B", 4096L, 0.0)]
    [TestCase("2KiB", 2048L, 0.0)]
    [TestCase("90%", 0L, 0.9)]
    [TestCase("100%", 0L, 1.0)]
    [TestCase(" 12.5 % ", 0L, 0.125)]
    public void MemoryLimitsParse(string text, long bytes, double fraction)
    {
        var (b, f) = MemoryLimit.Parse(text);
        Assert.That(b, Is.EqualTo(bytes));
        Assert.That(f, Is.EqualTo(fraction).Within(1e-12));
    }

    [TestCase("12")]
    [TestCase("0GiB")]
    [TestCase("-1GiB")]
    [TestCase("0%")]
    [TestCase("101%")]
    [TestCase("lots")]
    [TestCase("GiB")]
    [TestCase("1e400GB")]
    [TestCase("99999999999TB")]
    public void BadMemoryLimitsAreRefused(string text) =>
        Assert.Throws<FormatException>(() => MemoryLimit.Parse(text));
}
