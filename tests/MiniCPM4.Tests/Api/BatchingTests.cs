using MiniCPM4.Constraints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Api;

/// <summary>
/// Continuous batching through the public session API: concurrent sessions of one model share forward passes
/// (<see cref="MiniCpmLoadOptions.MaxBatchRows"/>), and each one's output is the output it gives alone — greedy,
/// seeded sampling and constrained — while sessions join, leave and are cancelled. The scheduler's fairness bound
/// holds under random load.
/// </summary>
[TestFixture]
public class BatchingTests
{
    private MiniCpmModel _batched = null!;
    private MiniCpmModel _alone = null!;

    [OneTimeSetUp]
    public void Load()
    {
        string dir = Demo.DemoModelDirectory.Find();
        _batched = MiniCpmModel.Load(dir, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2 });
        _alone = MiniCpmModel.Load(dir,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, MaxBatchRows = 0 });
    }

    [OneTimeTearDown]
    public void Unload()
    {
        _batched.Dispose();
        _alone.Dispose();
    }

    private sealed record Job(string Prompt, GenerationOptions Options, int DelayMs = 0);

    private static async Task<List<int>> RunAsync(MiniCpmModel model, Job job, CancellationToken ct = default)
    {
        using var session = model.CreateSession(new SessionOptions { ContextLength = 512 });
        if (job.DelayMs > 0) await Task.Delay(job.DelayMs, ct);
        await session.SetPromptAsync(model.EncodePrompt(job.Prompt), ct);
        var ids = new List<int>();
        await foreach (var t in session.GenerateAsync(job.Options, ct)) if (t.Id >= 0) ids.Add(t.Id);
        return ids;
    }

    private static List<Job> Jobs() =>
    [
        new("The weather today", new GenerationOptions { MaxTokens = 30, StopTokenIds = [] }),
        new("Once upon a time, in a small village by the sea, there lived",
            new GenerationOptions { MaxTokens = 22, StopTokenIds = [] }, 20),
        new("A", new GenerationOptions { MaxTokens = 40, StopTokenIds = [], Temperature = 0.8f, TopK = 40, Seed = 11 }),
        new("The cat sat on the",
            new GenerationOptions { MaxTokens = 26, StopTokenIds = [], Temperature = 1.0f, TopP = 0.9f, Seed = 5 }, 50),
        new("Numbers:", new GenerationOptions
        {
            MaxTokens = 20, StopTokenIds = [], Constraint = OutputConstraint.Regex("[0-9]{3}-[0-9]{4} [a-z]+"),
        }),
        new("In the beginning",
            new GenerationOptions { MaxTokens = 12, StopTokenIds = [], RepetitionPenalty = 1.3f }, 120),
    ];

    [Test]
    public async Task ConcurrentSessionsGiveTheirLoneOutputsInSharedPasses()
    {
        var jobs = Jobs();
        var expected = new List<List<int>>();
        foreach (var job in jobs) expected.Add(await RunAsync(_alone, job));
        var got = await Task.WhenAll(jobs.Select(job => RunAsync(_batched, job)));
        for (int i = 0; i < jobs.Count; i++)
            Assert.That(got[i], Is.EqualTo(expected[i]), $"job {i} ({jobs[i].Prompt})");
        Assert.That(_batched.LargestBatch, Is.GreaterThan(1), "the sessions never shared a pass");
        Assert.That(_alone.LargestBatch, Is.EqualTo(0), "MaxBatchRows = 0 runs every session on its own");
    }

    [Test]
    public async Task CancellingOneSessionLeavesTheOthersAndItsOwnStateIntact()
    {
        var options = new GenerationOptions { MaxTokens = 60, StopTokenIds = [] };
        var expected = await RunAsync(_alone, new Job("Alpha beta", options));
        using var victim = _batched.CreateSession(new SessionOptions { ContextLength = 512 });
        await victim.SetPromptAsync(_batched.EncodePrompt("Gamma delta"));
        using var cts = new CancellationTokenSource();
        var others = Enumerable.Range(0, 3).Select(_ => RunAsync(_batched, new Job("Alpha beta", options))).ToList();
        int seen = 0;
        await Assert.CatchAsync<OperationCanceledException>(async () =>
        {
            await foreach (var t in victim.GenerateAsync(options, cts.Token))
                if (++seen == 5) await cts.CancelAsync();
        });
        foreach (var other in others) Assert.That(await other, Is.EqualTo(expected));
        // The cancelled session keeps what it produced and generates again.
        int length = victim.Length;
        Assert.That(length, Is.GreaterThanOrEqualTo(_batched.EncodePrompt("Gamma delta").Length + 4));
        var more = new List<int>();
        await foreach (var t in victim.GenerateAsync(new GenerationOptions { MaxTokens = 5, StopTokenIds = [] }))
            if (t.Id >= 0) more.Add(t.Id);
        Assert.That(more, Has.Count.EqualTo(5));
        Assert.That(victim.Length, Is.EqualTo(length + 5));
    }

    [Test]
    public async Task EveryAdmittedSessionFinishesAndNoneWaitsLongerThanTheBound([Values(1, 2, 3)] int seed)
    {
        // Few rows per pass and more sessions than fit: long prompts (chunked), short ones, joins at random times.
        const int rows = 4, sessions = 10;
        string dir = Demo.DemoModelDirectory.Find();
        using var model = MiniCpmModel.Load(dir, new MiniCpmLoadOptions
        {
            Device = ComputeDevice.Cpu, Threads = 2, MaxBatchRows = rows,
        });
        var rng = new Random(seed);
        var words = new[] { "river", "stone", "light", "market", "song", "winter", "garden", "letter" };
        var jobs = Enumerable.Range(0, sessions).Select(_ =>
        {
            string prompt = string.Join(' ',
                Enumerable.Range(0, rng.Next(1, 60)).Select(_ => words[rng.Next(words.Length)]));
            return new Job(prompt, new GenerationOptions { MaxTokens = rng.Next(1, 16), StopTokenIds = [] },
                rng.Next(0, 80));
        }).ToList();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var results = await Task.WhenAll(jobs.Select(j => RunAsync(model, j, timeout.Token)));
        for (int i = 0; i < sessions; i++)
            Assert.That(results[i], Has.Count.EqualTo(jobs[i].Options.MaxTokens), $"session {i} did not finish");
        var scheduler = model.Scheduler!;
        long bound = (2L * (sessions - 1) + rows - 2) / (rows - 1);
        Assert.That(scheduler.LongestWait, Is.LessThanOrEqualTo(bound), "a turn waited longer than the fairness bound");
        Assert.That(model.LargestBatch, Is.GreaterThan(1));
    }

    [Test]
    public async Task AFullSessionPoolQueuesRentersAndTheirOutputsStayTheirOwn()
    {
        // Two KV slots, five requests: three wait (first in, first out) and none sees another's cache.
        using var pool = new MiniCpmSessionPool(_batched, new SessionPoolOptions
        {
            MaxConcurrentSessions = 2,
            SessionOptions = new SessionOptions { ContextLength = 256 },
        });
        var prompts = new[] { "One", "Two two", "Three three three", "Four", "Five five" };
        var options = new GenerationOptions { MaxTokens = 10, StopTokenIds = [] };
        var expected = new List<List<int>>();
        foreach (var p in prompts) expected.Add(await RunAsync(_alone, new Job(p, options)));
        var got = await Task.WhenAll(prompts.Select(async p =>
        {
            using var lease = await pool.RentAsync();
            await lease.Session.SetPromptAsync(_batched.EncodePrompt(p));
            var ids = new List<int>();
            await foreach (var t in lease.Session.GenerateAsync(options)) if (t.Id >= 0) ids.Add(t.Id);
            return ids;
        }));
        for (int i = 0; i < prompts.Length; i++) Assert.That(got[i], Is.EqualTo(expected[i]), prompts[i]);
        var full = new MiniCpmSessionPool(_batched,
            new SessionPoolOptions { MaxConcurrentSessions = 1, MaxWaiting = 0 });
        using (await full.RentAsync())
            await Assert.ThrowsAsync<SessionPoolFullException>(async () => await full.RentAsync());
        full.Dispose();
    }

    [Test]
    public void MaxBatchRowsOutsideItsRangeNamesTheOption()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => MiniCpmModel.Load(Demo.DemoModelDirectory.Find(),
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, MaxBatchRows = 1 }));
        Assert.That(e!.Message, Does.Contain("MiniCpmLoadOptions.MaxBatchRows"));
    }
}
