namespace MiniCPM4.Server;

/// <summary>Counters of the server, registered as a singleton (tests and diagnostics read them).</summary>
public sealed class ServerMetrics
{
    private long _started, _completed, _cancelled, _failed, _rejected, _running, _waiting;

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

    internal void OnCancelled()
    {
        Interlocked.Increment(ref _cancelled);
        GenerationCancelled?.Invoke();
    }
}
