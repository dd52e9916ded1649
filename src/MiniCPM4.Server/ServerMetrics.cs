using Prometheus;

namespace MiniCPM4.Server;

/// <summary>
/// Counters of the server (tests and diagnostics read them) and the Prometheus metrics served at <c>/metrics</c>
/// (each server has its own registry, so several servers in one process do not mix).
/// </summary>
public sealed class ServerMetrics
{
    private long _started, _completed, _cancelled, _failed, _rejected, _running, _waiting, _kvTokens;

    private readonly Counter _requests, _promptTokens, _completionTokens, _specRounds, _specTokens;
    private readonly Histogram _timeToFirstToken, _timePerToken;

    internal ServerMetrics(int kvCapacityTokens)
    {
        Registry = Metrics.NewCustomRegistry();
        var f = Metrics.WithCustomRegistry(Registry);
        _requests = f.CreateCounter("minicpm4_requests_total", "HTTP requests answered, by endpoint and status.",
            new CounterConfiguration { LabelNames = ["endpoint", "status"] });
        _promptTokens = f.CreateCounter("minicpm4_prompt_tokens_total", "Prompt tokens of generations.");
        _completionTokens = f.CreateCounter("minicpm4_completion_tokens_total", "Tokens generated.");
        _timeToFirstToken = f.CreateHistogram("minicpm4_time_to_first_token_seconds",
            "From admission to the first generated token (queueing and prefill included).",
            new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.005, 2, 14) });
        _timePerToken = f.CreateHistogram("minicpm4_time_per_output_token_seconds",
            "Mean time per generated token after the first, one observation per generation.",
            new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.0005, 2, 14) });
        _specRounds = f.CreateCounter("minicpm4_speculative_rounds_total", "Speculative draft-and-verify rounds.");
        _specTokens = f.CreateCounter("minicpm4_speculative_tokens_total",
            "Tokens produced by speculative rounds (accepted draft tokens plus the target's token).");
        var queue = f.CreateGauge("minicpm4_queue_depth", "Admitted requests waiting for a generation slot.");
        var running = f.CreateGauge("minicpm4_running_generations", "Generations running now.");
        var kvUsed = f.CreateGauge("minicpm4_kv_cache_used_tokens",
            "Tokens held in the KV caches of running generations.");
        var kvCapacity = f.CreateGauge("minicpm4_kv_cache_capacity_tokens",
            "KV cache capacity of the running generation slots (context length times slots).");
        kvCapacity.Set(kvCapacityTokens);
        // Gauges read the live counters at scrape time.
        Registry.AddBeforeCollectCallback(() =>
        {
            queue.Set(Waiting);
            running.Set(Running);
            kvUsed.Set(Interlocked.Read(ref _kvTokens));
        });
    }

    internal CollectorRegistry Registry { get; }

    /// <summary>Generations that got a slot and started.</summary>
    public long GenerationsStarted => Interlocked.Read(ref _started);
    /// <summary>Generations that ran to a finish reason.</summary>
    public long GenerationsCompleted => Interlocked.Read(ref _completed);
    /// <summary>Generations (or waits for a slot) stopped because the client went away or the server stopped.</summary>
    public long GenerationsCancelled => Interlocked.Read(ref _cancelled);
    /// <summary>Generations that failed with an unexpected error.</summary>
    public long GenerationsFailed => Interlocked.Read(ref _failed);
    /// <summary>Requests refused with 429 or 503.</summary>
    public long RequestsRejected => Interlocked.Read(ref _rejected);
    /// <summary>Generations running now.</summary>
    public long Running => Interlocked.Read(ref _running);
    /// <summary>Admitted requests waiting for a slot now.</summary>
    public long Waiting => Interlocked.Read(ref _waiting);

    /// <summary>Raised after a generation was cancelled (on the thread that observed the cancellation).</summary>
    public event Action? GenerationCancelled;

    internal void OnStarted() => Interlocked.Increment(ref _started);
    internal void OnCompleted() => Interlocked.Increment(ref _completed);
    internal void OnFailed() => Interlocked.Increment(ref _failed);
    internal void OnRejected() => Interlocked.Increment(ref _rejected);
    internal void AddRunning(int delta) => Interlocked.Add(ref _running, delta);
    internal void AddWaiting(int delta) => Interlocked.Add(ref _waiting, delta);
    internal void AddKvTokens(long delta) => Interlocked.Add(ref _kvTokens, delta);

    internal void OnRequest(string endpoint, int status) =>
        _requests.WithLabels(endpoint, status.ToString(System.Globalization.CultureInfo.InvariantCulture)).Inc();

    internal void OnGeneration(int promptTokens, int completionTokens, TimeSpan? firstToken, TimeSpan? perToken,
        SessionStatistics? speculative)
    {
        _promptTokens.Inc(promptTokens);
        _completionTokens.Inc(completionTokens);
        if (firstToken is { } ttft) _timeToFirstToken.Observe(ttft.TotalSeconds);
        if (perToken is { } tpot) _timePerToken.Observe(tpot.TotalSeconds);
        if (speculative is { SpeculativeSteps: > 0 } s)
        {
            _specRounds.Inc(s.SpeculativeSteps);
            _specTokens.Inc(s.SpeculativeTokens);
        }
    }

    internal void OnCancelled()
    {
        Interlocked.Increment(ref _cancelled);
        GenerationCancelled?.Invoke();
    }
}
