using System.Diagnostics;
using System.Runtime.InteropServices;
using MiniCPM4.Interop;

namespace MiniCPM4;

/// <summary>
/// Continuous batching for one model: every session's generation steps and prompt evaluations
/// (<see cref="MiniCpmSession.GenerateAsync(GenerationOptions?, CancellationToken)"/>,
/// <see cref="MiniCpmSession.SetPromptAsync"/>) queue here, and one scheduler thread merges the turns that are
/// waiting into shared forward passes (<c>mcpm_batcher_step</c>): a generated token per decoding session and a
/// prompt chunk per prefilling one. Decoding is memory-bound, so a pass over many sessions costs little more than
/// a pass over one.
/// </summary>
/// <remarks>
/// <para>The scheduler lives in managed code because what decides a turn is managed: cancellation tokens,
/// streaming consumers, constraints and the request lifecycle. Native code runs the step it is given.</para>
/// <para>Policy, per step: waiting turns are taken oldest first, at most MaxBatchRows rows (a generation turn
/// counts one row, a prompt turn two: its chunk may bring a held token); a turn that ran queues its next one (the
/// next token, the prompt's next chunk) behind those already waiting. So with N sessions a turn waits at most
/// ceil(2 (N - 1) / (MaxBatchRows - 1)) steps: nobody starves, however long the others' prompts are. A lone
/// turn runs as the session would alone (a speculative round when it has a draft; a prompt in chunks of
/// <see cref="SessionOptions.PrefillChunk"/>). Several turns share passes: each
/// decoding session adds one row and the prompts fill the rows left, in chunks. A session with a draft speculates
/// alone instead of joining the batch while its measured speculative rate (tokens per second of its rounds) beats
/// the measured aggregate rate of batched steps of that size; otherwise it decodes plainly in the batch and keeps
/// feeding its draft. Both choices give the same tokens.</para>
/// </remarks>
internal sealed class MiniCpmBatchScheduler : IDisposable
{
    private const double RateDecay = 0.2;
    private static readonly TimeSpan GatherWindow = TimeSpan.FromMilliseconds(1);

    private readonly BatcherHandle _batcher;
    private readonly int _maxRows;
    private readonly object _lock = new();
    private readonly List<Turn> _waiting = [];
    private readonly Thread _thread;
    private bool _disposed;
    private long _steps;
    private bool _running;  // a step is running (turns queued now wait from the next one)
    private int _returning;  // sessions the last step left mid-generation or mid-prompt: their next turns are coming
    // Measured rates in tokens per second (0: not measured yet): speculative rounds alone, and batched steps by
    // their number of generate rows (index 0 unused).
    private double _soloSpeculativeRate;
    private readonly double[] _batchRate;

    internal MiniCpmBatchScheduler(MiniCpmModel model, int maxRows)
    {
        _maxRows = maxRows;
        _batchRate = new double[maxRows + 1];
        unsafe
        {
            mcpm_batcher_params p = default;
            p.struct_size = (uint)sizeof(mcpm_batcher_params);
            NativeStatus.Check(NativeMethods.mcpm_batcher_params_default(&p));
            p.max_rows = maxRows;
            NativeStatus.Check(NativeMethods.mcpm_batcher_create(model.Handle, &p, out _batcher));
        }
        _thread = new Thread(Run) { IsBackground = true, Name = "MiniCPM4 batch scheduler" };
        _thread.Start();
    }

    /// <summary>Steps run so far (tests and diagnostics).</summary>
    internal long Steps
    {
        get
        {
            lock (_lock) return _steps;
        }
    }

    /// <summary>The largest number of sessions one step has batched so far.</summary>
    internal int LargestBatch { get; private set; }

    /// <summary>The most steps a turn has waited in the queue while other turns ran (the fairness bound's
    /// subject).</summary>
    internal long LongestWait { get; private set; }

    /// <summary>One generation step of the session: a token, or a speculative round when it runs alone. Null once
    /// the scheduler is disposed (the caller then runs the step itself).</summary>
    internal Task<StepOutcome>? GenerateAsync(MiniCpmSession session, bool speculative, CancellationToken ct) =>
        Enqueue(new Turn(this, session, speculative, null, ct));

    /// <summary>Appends the tokens to the session's KV cache (in chunks, possibly inside batches). Null once the
    /// scheduler is disposed.</summary>
    internal Task<StepOutcome>? PrefillAsync(MiniCpmSession session, int[] tokens, CancellationToken ct) =>
        Enqueue(new Turn(this, session, false, tokens, ct));

    private Task<StepOutcome>? Enqueue(Turn turn)
    {
        if (turn.Cancellation.IsCancellationRequested) return Task.FromCanceled<StepOutcome>(turn.Cancellation);
        lock (_lock)
        {
            if (_disposed) return null;
            turn.EnqueuedAt = _running ? _steps + 1 : _steps;
            _waiting.Add(turn);
            Monitor.Pulse(_lock);
        }
        // A turn cancelled while it waits leaves the queue at once; one already in a step stops through the
        // session's abort request (the caller registers it).
        turn.Registration = turn.Cancellation.Register(static t => ((Turn)t!).Owner.Withdraw((Turn)t!), turn);
        return turn.Completion.Task;
    }

    private void Withdraw(Turn turn)
    {
        bool removed;
        lock (_lock) removed = _waiting.Remove(turn);
        if (removed) turn.Completion.TrySetCanceled(turn.Cancellation);
    }

    private void Run()
    {
        while (true)
        {
            List<Turn> turns;
            lock (_lock)
            {
                while (_waiting.Count == 0 && !_disposed) Monitor.Wait(_lock);
                // Disposal lets the turns already queued finish (their sessions outlive the model).
                if (_waiting.Count == 0) return;
                GatherReturningTurns();
                turns = TakeStep();
                _running = true;
            }
            try
            {
                RunStep(turns);
            }
            catch (Exception e)
            {
                foreach (var t in turns) t.Completion.TrySetException(e);
            }
            lock (_lock)
            {
                _steps++;
                _running = false;
                _returning = turns.Count(t => t.Returns);
            }
        }
    }

    // The sessions of the last step come back with their next turns within microseconds (their continuations run on
    // the thread pool), so a step that started at once would take only the first of them and split the batch: wait
    // until they are back, or GatherWindow at most (a consumer may stop, or be slow). Called under the lock.
    private void GatherReturningTurns()
    {
        int expected = Math.Min(_returning, _maxRows);
        if (_waiting.Count >= expected) return;
        long deadline = Stopwatch.GetTimestamp() + (long)(GatherWindow.TotalSeconds * Stopwatch.Frequency);
        while (_waiting.Count < expected && !_disposed)
        {
            var left = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), deadline);
            if (left <= TimeSpan.Zero) break;
            Monitor.Wait(_lock, left);
        }
    }

    // The turns of the next step, oldest first, at most one row each for generation plus prompt chunks, within
    // _maxRows rows (a prompt needs at least two: a chunk may come with a held token). Called under the lock.
    private List<Turn> TakeStep()
    {
        var step = new List<Turn>();
        int rows = 0;
        for (int i = 0; i < _waiting.Count && rows < _maxRows; i++)
        {
            var t = _waiting[i];
            int need = t.Prompt is null ? 1 : 2;
            if (rows + need > _maxRows) continue;
            step.Add(t);
            rows += need;
        }
        foreach (var t in step)
        {
            _waiting.Remove(t);
            LongestWait = Math.Max(LongestWait, _steps - t.EnqueuedAt);
        }
        return step;
    }

    private void RunStep(List<Turn> turns)
    {
        // A pending abort request belongs to an earlier call; a turn whose caller gave up does not run.
        foreach (var t in turns) NativeMethods.mcpm_session_clear_abort(t.Session.NativeHandle);
        turns.RemoveAll(t =>
        {
            if (!t.Cancellation.IsCancellationRequested) return false;
            t.Complete(new StepOutcome([], 0, NativeConstants.MCPM_ERR_CANCELLED, "cancelled before its step"));
            return true;
        });
        if (turns.Count == 0) return;
        if (turns.Count == 1)
        {
            RunAlone(turns[0]);
            return;
        }
        // Speculation against batching, from measured rates: the oldest speculative session runs its round alone
        // when that has been faster than the batch of this size.
        int generating = turns.Count(t => t.Prompt is null);
        if (_soloSpeculativeRate > 0 && _batchRate[generating] > 0 && _soloSpeculativeRate > _batchRate[generating])
        {
            var speculative = turns.FirstOrDefault(t => t.Speculative);
            if (speculative is not null)
            {
                turns.Remove(speculative);
                RunAlone(speculative);
                if (turns.Count == 1)
                {
                    RunAlone(turns[0]);
                    return;
                }
            }
        }
        RunBatch(turns);
    }

    // A turn alone: exactly what the session would do without the scheduler.
    private unsafe void RunAlone(Turn turn)
    {
        var handle = turn.Session.NativeHandle;
        if (turn.Prompt is { } prompt)
        {
            int chunk = Math.Min(prompt.Length - turn.Done, turn.Session.PrefillChunk);
            int status;
            fixed (int* t = prompt)
                status = NativeMethods.mcpm_session_prefill(handle, t + turn.Done, chunk,
                    NativeConstants.MCPM_LOGITS_NONE, null, 0);
            AfterPrefillChunk(turn, chunk, status, status == NativeConstants.MCPM_OK ? "" : NativeStatus.LastError());
            return;
        }
        int* buffer = stackalloc int[NativeConstants.MCPM_MAX_STEP_TOKENS];
        int count = 0, finish = 0;
        long start = Stopwatch.GetTimestamp();
        int result = NativeMethods.mcpm_session_generate_step(handle, buffer, NativeConstants.MCPM_MAX_STEP_TOKENS,
            &count, &finish);
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        if (result == NativeConstants.MCPM_OK && count > 0 && seconds > 0)
        {
            if (turn.Speculative) Update(ref _soloSpeculativeRate, count / seconds);
            else Update(ref _batchRate[1], count / seconds);
        }
        turn.Complete(new StepOutcome(new ReadOnlySpan<int>(buffer, count).ToArray(), finish, result,
            result == NativeConstants.MCPM_OK ? "" : NativeStatus.LastError()));
    }

    private unsafe void RunBatch(List<Turn> turns)
    {
        int generating = turns.Count(t => t.Prompt is null);
        int prompts = turns.Count - generating;
        // The rows left after one per generating session go to the prompts, evenly (a held token may add one).
        int chunk = prompts == 0 ? 0 : Math.Max(1, (_maxRows - generating) / prompts - 1);
        var items = new mcpm_batch_item[turns.Count];
        var outputs = new int[turns.Count];
        var pins = new List<GCHandle>();
        try
        {
            fixed (int* output = outputs)
            {
                for (int i = 0; i < turns.Count; i++)
                {
                    var t = turns[i];
                    items[i].session = t.Session.NativeHandle.DangerousGetHandle();
                    if (t.Prompt is { } prompt)
                    {
                        var pin = GCHandle.Alloc(prompt, GCHandleType.Pinned);
                        pins.Add(pin);
                        t.Chunk = Math.Min(chunk, prompt.Length - t.Done);
                        items[i].tokens = (int*)pin.AddrOfPinnedObject() + t.Done;
                        items[i].n_tokens = t.Chunk;
                    }
                    else
                    {
                        items[i].out_tokens = output + i;
                        items[i].out_capacity = 1;
                    }
                }
                long start = Stopwatch.GetTimestamp();
                int status;
                fixed (mcpm_batch_item* p = items)
                    status = NativeMethods.mcpm_batcher_step(_batcher, p, items.Length);
                double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                NativeStatus.Check(status);
                lock (_lock) LargestBatch = Math.Max(LargestBatch, turns.Count);
                int emitted = 0;
                for (int i = 0; i < turns.Count; i++)
                {
                    var t = turns[i];
                    ref var it = ref items[i];
                    string message = it.out_status == NativeConstants.MCPM_OK
                        ? ""
                        : Marshal.PtrToStringUTF8((nint)it.out_message) ?? "";
                    if (t.Prompt is not null)
                    {
                        AfterPrefillChunk(t, t.Chunk, it.out_status, message);
                        continue;
                    }
                    emitted += it.out_count;
                    t.Complete(new StepOutcome(new ReadOnlySpan<int>(output + i, it.out_count).ToArray(), it.out_finish,
                        it.out_status, message));
                }
                if (prompts == 0 && seconds > 0 && emitted > 0) Update(ref _batchRate[generating], emitted / seconds);
            }
        }
        finally
        {
            foreach (var pin in pins) pin.Free();
        }
    }

    // A prompt turn goes on until its tokens are in: its next chunk queues behind the turns already waiting.
    private void AfterPrefillChunk(Turn turn, int chunk, int status, string message)
    {
        if (status != NativeConstants.MCPM_OK)
        {
            turn.Complete(new StepOutcome([], 0, status, message));
            return;
        }
        turn.Done += chunk;
        if (turn.Done >= turn.Prompt!.Length)
        {
            turn.Complete(new StepOutcome([], 0, NativeConstants.MCPM_OK, ""));
            return;
        }
        lock (_lock)
        {
            turn.EnqueuedAt = _steps + 1;  // queued during this step: its wait starts after it
            _waiting.Add(turn);
        }
    }

    private static void Update(ref double rate, double sample) =>
        rate = rate == 0 ? sample : (1 - RateDecay) * rate + RateDecay * sample;

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            Monitor.Pulse(_lock);
        }
        if (Thread.CurrentThread != _thread) _thread.Join();
        _batcher.Dispose();
    }

    /// <summary>What a turn came to: the tokens generated, the native finish reason and status, and the failure's
    /// message (read on the scheduler thread, where the native call ran).</summary>
    internal readonly record struct StepOutcome(int[] Tokens, int Finish, int Status, string Message);

    private sealed class Turn(MiniCpmBatchScheduler owner, MiniCpmSession session, bool speculative, int[]? prompt,
        CancellationToken ct)
    {
        public MiniCpmBatchScheduler Owner { get; } = owner;
        public MiniCpmSession Session { get; } = session;
        public bool Speculative { get; } = speculative;
        public int[]? Prompt { get; } = prompt;
        public CancellationToken Cancellation { get; } = ct;
        public TaskCompletionSource<StepOutcome> Completion { get; } =
            new(TaskCreationOptions.RunContinuationsAsynchronously);
        public CancellationTokenRegistration Registration { get; set; }
        public int Done { get; set; }
        public long EnqueuedAt { get; set; }
        public int Chunk { get; set; }

        // Whether the session comes back with another turn: it generated a token and is not finished, or its
        // prompt is in (generation follows).
        public bool Returns { get; private set; }

        public void Complete(StepOutcome outcome)
        {
            Returns = outcome.Status == NativeConstants.MCPM_OK && outcome.Finish == NativeConstants.MCPM_FINISH_NONE;
            Registration.Dispose();
            Completion.TrySetResult(outcome);
        }
    }
}
