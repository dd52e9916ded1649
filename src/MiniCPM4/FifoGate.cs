namespace MiniCPM4;

/// <summary>A counting gate whose waiters are admitted strictly in arrival order; waiting is cancellable.</summary>
internal sealed class FifoGate(int slots)
{
    private readonly object _lock = new();
    private readonly LinkedList<TaskCompletionSource> _waiters = new();
    private int _free = slots;

    /// <summary>Callers waiting for a slot.</summary>
    public int Waiting
    {
        get
        {
            lock (_lock) return _waiters.Count;
        }
    }

    public Task EnterAsync(CancellationToken ct) => TryEnterAsync(ct, int.MaxValue)!;

    /// <summary>Enters, or waits for a slot unless <paramref name="maxWaiting"/> callers wait already (then null).
    /// </summary>
    public Task? TryEnterAsync(CancellationToken ct, int maxWaiting)
    {
        ct.ThrowIfCancellationRequested();
        LinkedListNode<TaskCompletionSource> node;
        lock (_lock)
        {
            if (_free > 0 && _waiters.Count == 0)
            {
                _free--;
                return Task.CompletedTask;
            }
            if (_waiters.Count >= maxWaiting) return null;
            node = _waiters.AddLast(new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        }
        if (!ct.CanBeCanceled) return node.Value.Task;
        return WaitAsync(node, ct);
    }

    private async Task WaitAsync(LinkedListNode<TaskCompletionSource> node, CancellationToken ct)
    {
        await using var registration = ct.Register(() =>
        {
            bool removed;
            lock (_lock)
            {
                removed = node.List is not null;
                if (removed) _waiters.Remove(node);
            }
            // A waiter already admitted by Release keeps its slot (its caller releases it).
            if (removed) node.Value.TrySetCanceled(ct);
        }).ConfigureAwait(false);
        await node.Value.Task.ConfigureAwait(false);
    }

    public void Release()
    {
        TaskCompletionSource? next = null;
        lock (_lock)
        {
            if (_waiters.First is { } first)
            {
                _waiters.RemoveFirst();
                next = first.Value;
            }
            else
            {
                _free++;
            }
        }
        next?.TrySetResult();
    }
}
