using System.Collections.Concurrent;

namespace MiniCPM4.Server;

/// <summary>
/// Bounds the work on the model: at most <c>maxConcurrent</c> generations run, each on a pooled
/// <see cref="MiniCpmSession"/> (so a follow-up request reuses the KV prefix), and at most
/// <c>maxQueue</c> admitted requests wait for a slot. Anything beyond is refused at once.
/// </summary>
internal sealed class GenerationScheduler : IDisposable
{
    private readonly MiniCpmModel _model;
    private readonly SessionOptions _sessionOptions;
    private readonly SemaphoreSlim _slots;
    private readonly ConcurrentBag<MiniCpmSession> _idle = [];
    private readonly ServerMetrics _metrics;
    private readonly int _capacity;
    private int _admitted;
    private volatile bool _stopping;
    private bool _disposed;

    public GenerationScheduler(MiniCpmModel model, SessionOptions sessionOptions, int maxConcurrent, int maxQueue,
        ServerMetrics metrics)
    {
        _model = model;
        _sessionOptions = sessionOptions;
        _slots = new SemaphoreSlim(maxConcurrent, maxConcurrent);
        _capacity = maxConcurrent + maxQueue;
        _metrics = metrics;
        // One session up front: it tells the effective context length and warms the pool.
        var first = model.CreateSession(sessionOptions);
        ContextLength = first.Capacity;
        _idle.Add(first);
    }

    /// <summary>KV cache capacity of every session.</summary>
    public int ContextLength { get; }

    public bool IsStopping => _stopping;

    /// <summary>New requests are refused from now on (the host is shutting down).</summary>
    public void BeginShutdown() => _stopping = true;

    public enum Admission { Admitted, QueueFull, ShuttingDown }

    /// <summary>Reserves a place (running or waiting); the ticket must be disposed.</summary>
    public Admission TryAdmit(out Ticket? ticket)
    {
        ticket = null;
        if (_stopping) return Admission.ShuttingDown;
        while (true)
        {
            int current = Volatile.Read(ref _admitted);
            if (current >= _capacity) return Admission.QueueFull;
            if (Interlocked.CompareExchange(ref _admitted, current + 1, current) == current) break;
        }
        ticket = new Ticket(this);
        return Admission.Admitted;
    }

    /// <summary>An admitted request: waits for a slot, then lends a session until disposed.</summary>
    internal sealed class Ticket(GenerationScheduler owner) : IDisposable
    {
        private bool _hasSlot, _disposed;
        private MiniCpmSession? _session;

        /// <summary>Set when the session may be in a bad state (unexpected failure): it is disposed, not pooled.</summary>
        public bool DiscardSession { get; set; }

        public async Task<MiniCpmSession> AcquireAsync(CancellationToken cancellationToken)
        {
            owner._metrics.AddWaiting(1);
            try
            {
                await owner._slots.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                owner._metrics.AddWaiting(-1);
            }
            _hasSlot = true;
            owner._metrics.AddRunning(1);
            _session = owner._idle.TryTake(out var s) ? s : owner._model.CreateSession(owner._sessionOptions);
            return _session;
        }

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            if (_session is not null)
            {
                if (DiscardSession || owner._disposed) _session.Dispose();
                else owner._idle.Add(_session);
            }
            if (_hasSlot)
            {
                owner._metrics.AddRunning(-1);
                owner._slots.Release();
            }
            Interlocked.Decrement(ref owner._admitted);
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _stopping = true;
        while (_idle.TryTake(out var s)) s.Dispose();
    }
}
