namespace MiniCPM4;

/// <summary>Limits of a <see cref="MiniCpmSessionPool"/>.</summary>
public sealed record SessionPoolOptions
{
    /// <summary>Sessions in use at once; later renters wait in first-in, first-out order.</summary>
    public int MaxConcurrentSessions { get; init; } = 1;

    /// <summary>Renters that may wait for a session; one more is refused with <see cref="SessionPoolFullException"/>.
    /// Unlimited by default.</summary>
    public int MaxWaiting { get; init; } = int.MaxValue;

    /// <summary>Conversations whose session (KV cache) is kept for reuse, least recently used evicted first.</summary>
    public int MaxCachedConversations { get; init; } = 8;

    /// <summary>Called with the id of a conversation whose cached session was evicted (under the pool's lock).
    /// </summary>
    public Action<string>? ConversationEvicted { get; init; }

    /// <summary>Options of every session the pool creates.</summary>
    public SessionOptions SessionOptions { get; init; } = new();
}

/// <summary>A renter was refused because <see cref="SessionPoolOptions.MaxWaiting"/> renters wait already.</summary>
public sealed class SessionPoolFullException(string message) : InvalidOperationException(message);

/// <summary>
/// Sessions over one model shared by concurrent callers (the chat client and the server): at most
/// <see cref="SessionPoolOptions.MaxConcurrentSessions"/> are lent at once, waiting renters are served in
/// arrival order, and a session returned for a conversation is kept (with the caller's state for it) so that
/// the conversation's next request reuses its KV cache. The KV cache is only an optimisation: a conversation
/// whose session was evicted is rebuilt from its messages by <see cref="MiniCpmSession.SetPrompt"/>.
/// All members are thread-safe.
/// </summary>
public sealed class MiniCpmSessionPool : IDisposable
{
    private readonly MiniCpmModel _model;
    private readonly SessionPoolOptions _options;
    private readonly FifoGate _gate;
    private readonly object _lock = new();
    private readonly LinkedList<CachedConversation> _lru = new();
    private readonly Dictionary<string, LinkedListNode<CachedConversation>> _conversations =
        new(StringComparer.Ordinal);
    private readonly Stack<MiniCpmSession> _spare = new();
    private int _lent;
    private bool _disposed;

    private sealed record CachedConversation(string Id, MiniCpmSession Session, object? State);

    /// <summary>Creates a pool over a loaded model (the pool does not own or dispose the model).</summary>
    public MiniCpmSessionPool(MiniCpmModel model, SessionPoolOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new SessionPoolOptions();
        if (options.MaxConcurrentSessions < 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxConcurrentSessions,
                "SessionPoolOptions.MaxConcurrentSessions must be at least 1");
        if (options.MaxWaiting < 0)
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxWaiting,
                "SessionPoolOptions.MaxWaiting must be >= 0");
        if (options.MaxCachedConversations < 0)
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxCachedConversations,
                "SessionPoolOptions.MaxCachedConversations must be >= 0");
        _model = model;
        _options = options;
        _gate = new FifoGate(options.MaxConcurrentSessions);
    }

    /// <summary>The model the sessions run.</summary>
    public MiniCpmModel Model => _model;

    /// <summary>The pool's limits.</summary>
    public SessionPoolOptions Options => _options;

    /// <summary>Sessions lent now.</summary>
    public int InUse => Volatile.Read(ref _lent);

    /// <summary>Renters waiting for a session now.</summary>
    public int Waiting => _gate.Waiting;

    /// <summary>Conversations whose session is cached now.</summary>
    public int CachedConversationCount
    {
        get
        {
            lock (_lock) return _conversations.Count;
        }
    }

    /// <summary>Sessions the pool holds (cached conversations and spares) plus those lent.</summary>
    public int SessionCount
    {
        get
        {
            lock (_lock) return _conversations.Count + _spare.Count + _lent;
        }
    }

    /// <summary>
    /// Waits for a free slot and lends a session: the cached session of <paramref name="conversationId"/> when there
    /// is one (with the state stored with it), else a spare or new one. Dispose the lease to give it back.
    /// </summary>
    /// <exception cref="SessionPoolFullException">MaxWaiting renters are waiting already.</exception>
    public async Task<SessionLease> RentAsync(string? conversationId = null,
        CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var entered = _gate.TryEnterAsync(cancellationToken, _options.MaxWaiting)
            ?? throw new SessionPoolFullException(
                $"the session pool is full: {_options.MaxConcurrentSessions} in use and {_options.MaxWaiting} waiting");
        await entered.ConfigureAwait(false);
        try
        {
            CachedConversation? cached = null;
            MiniCpmSession? spare = null;
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (conversationId is not null && _conversations.Remove(conversationId, out var node))
                {
                    _lru.Remove(node);
                    cached = node.Value;
                }
                else if (_spare.Count > 0)
                {
                    spare = _spare.Pop();
                }
                _lent++;
            }
            try
            {
                var session = cached?.Session ?? spare ?? _model.CreateSession(_options.SessionOptions);
                return new SessionLease(this, session, conversationId, cached?.State);
            }
            catch
            {
                lock (_lock) _lent--;
                throw;
            }
        }
        catch
        {
            _gate.Release();
            throw;
        }
    }

    // A lease ends: the session is cached under its conversation, kept as a spare, or disposed.
    internal void Return(SessionLease lease)
    {
        var toDispose = new List<MiniCpmSession>();
        lock (_lock)
        {
            _lent--;
            if (lease.Discarded || _disposed) toDispose.Add(lease.Session);
            else if (lease.KeepId is { } id && _options.MaxCachedConversations > 0) Cache(id, lease, toDispose);
            else Spare(lease.Session, toDispose);
        }
        foreach (var s in toDispose) s.Dispose();
        _gate.Release();
    }

    private void Cache(string id, SessionLease lease, List<MiniCpmSession> toDispose)
    {
        if (_conversations.Remove(id, out var existing))
        {
            // A concurrent request on the same conversation finished first; the later one wins.
            _lru.Remove(existing);
            Spare(existing.Value.Session, toDispose);
        }
        _conversations[id] = _lru.AddLast(new CachedConversation(id, lease.Session, lease.KeepState));
        while (_conversations.Count > _options.MaxCachedConversations)
        {
            var oldest = _lru.First!;
            _lru.RemoveFirst();
            _conversations.Remove(oldest.Value.Id);
            _options.ConversationEvicted?.Invoke(oldest.Value.Id);
            Spare(oldest.Value.Session, toDispose);
        }
    }

    private void Spare(MiniCpmSession session, List<MiniCpmSession> toDispose)
    {
        if (_spare.Count < _options.MaxConcurrentSessions) _spare.Push(session);
        else toDispose.Add(session);
    }

    /// <summary>Frees the cached and spare sessions; lent sessions are freed when their lease ends. The model is
    /// not disposed.</summary>
    public void Dispose()
    {
        List<MiniCpmSession> sessions;
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            sessions = [.. _spare, .. _lru.Select(c => c.Session)];
            _spare.Clear();
            _lru.Clear();
            _conversations.Clear();
        }
        foreach (var s in sessions) s.Dispose();
    }
}

/// <summary>A session lent by a <see cref="MiniCpmSessionPool"/>; dispose it to give the session back.</summary>
public sealed class SessionLease : IDisposable
{
    private readonly MiniCpmSessionPool _pool;
    private int _returned;

    internal SessionLease(MiniCpmSessionPool pool, MiniCpmSession session, string? conversationId, object? state)
    {
        _pool = pool;
        Session = session;
        ConversationId = conversationId;
        State = state;
        // Unless told otherwise, a conversation's session goes back to it unchanged (a failed request keeps it).
        if (conversationId is not null && state is not null) Keep(conversationId, state);
    }

    /// <summary>The lent session.</summary>
    public MiniCpmSession Session { get; }

    /// <summary>The conversation the session was rented for, if any.</summary>
    public string? ConversationId { get; }

    /// <summary>The state stored with the conversation's cached session, or null when none was cached.</summary>
    public object? State { get; }

    /// <summary>True when the session came from the conversation's cache (its KV cache holds the conversation).
    /// </summary>
    public bool IsCachedConversation => State is not null;

    internal string? KeepId { get; private set; }
    internal object? KeepState { get; private set; }
    internal bool Discarded { get; private set; }

    /// <summary>On return, cache the session for <paramref name="conversationId"/> with <paramref name="state"/>.
    /// </summary>
    public void Keep(string conversationId, object? state)
    {
        ArgumentNullException.ThrowIfNull(conversationId);
        KeepId = conversationId;
        KeepState = state ?? true;
    }

    /// <summary>On return, dispose the session instead of pooling it (it may be in a bad state).</summary>
    public void Discard() => Discarded = true;

    /// <summary>Gives the session back to the pool.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _returned, 1) == 0) _pool.Return(this);
    }
}
