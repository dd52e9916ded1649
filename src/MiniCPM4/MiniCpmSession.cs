using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MiniCPM4.Interop;

namespace MiniCPM4;

/// <summary>
/// One conversation over a <see cref="MiniCpmModel"/>: a KV cache, the tokens in it, and the
/// generation state. A session is used by one caller at a time; overlapping calls (for example two
/// generations enumerated at once) throw <see cref="InvalidOperationException"/>. Many sessions may
/// share one model on different threads.
/// </summary>
public sealed class MiniCpmSession : IDisposable
{
    private readonly SessionHandle _handle;
    private int _busy;
    private Constraints.ConstrainedGeneration? _constrained;

    internal MiniCpmSession(MiniCpmModel model, SessionOptions options)
    {
        Model = model;
        unsafe
        {
            mcpm_session_params p = default;
            p.struct_size = (uint)sizeof(mcpm_session_params);
            NativeStatus.Check(NativeMethods.mcpm_session_params_default(&p));
            if (options.KvCacheMemoryBytes < 0)
                throw new ArgumentOutOfRangeException(nameof(options), options.KvCacheMemoryBytes,
                    "SessionOptions.KvCacheMemoryBytes must be >= 0 (0 = no limit)");
            if (!(options.KvCacheMemoryFraction >= 0 && options.KvCacheMemoryFraction <= 1))
                throw new ArgumentOutOfRangeException(nameof(options), options.KvCacheMemoryFraction,
                    "SessionOptions.KvCacheMemoryFraction must be in [0, 1] (0 = off)");
            int positions = model.Config.MaxPositionEmbeddings;
            if (options.ContextLength < 0 || options.ContextLength > positions)
                throw new ArgumentOutOfRangeException(nameof(options), options.ContextLength,
                    $"SessionOptions.ContextLength must be in [0, {positions}] (0 = min({positions}, 4096)): the " +
                        $"model " +
                    $"has {positions} positions (max_position_embeddings; MiniCpmLoadOptions.LongContext raises it)");
            p.context_capacity = options.ContextLength;
            p.prefill_chunk = options.PrefillChunk;
            PrefillChunk = options.PrefillChunk;
            p.kv_memory_bytes = (ulong)options.KvCacheMemoryBytes;
            p.kv_memory_fraction = (float)options.KvCacheMemoryFraction;
            p.cuda_graphs = options.CudaGraphs ? 1 : 0;
            // The native session takes its own reference to the draft; the handle only has to stay open
            // during the call.
            var draft = model.DraftHandle;
            bool addedRef = false;
            try
            {
                if (draft is not null)
                {
                    draft.DangerousAddRef(ref addedRef);
                    p.draft = draft.DangerousGetHandle();
                }
                NativeStatus.Check(NativeMethods.mcpm_session_create(model.Handle, &p, out _handle));
            }
            finally
            {
                if (addedRef) draft!.DangerousRelease();
            }
        }
        _handle.Model = model.Handle;
    }

    public MiniCpmModel Model { get; }

    /// <summary>Tokens in the KV cache.</summary>
    public unsafe int Length
    {
        get
        {
            int n;
            NativeStatus.Check(NativeMethods.mcpm_session_length(Handle, &n));
            return n;
        }
    }

    /// <summary>KV cache capacity in tokens.</summary>
    public unsafe int Capacity
    {
        get
        {
            int n;
            NativeStatus.Check(NativeMethods.mcpm_session_capacity(Handle, &n));
            return n;
        }
    }

    /// <summary>A copy of the token ids in the KV cache.</summary>
    public unsafe int[] Tokens
    {
        get
        {
            int count;
            NativeStatus.Check(NativeMethods.mcpm_session_tokens(Handle, null, 0, &count));
            var tokens = new int[count];
            fixed (int* p = tokens) NativeStatus.Check(NativeMethods.mcpm_session_tokens(Handle, p, count, &count));
            return tokens;
        }
    }

    /// <summary>Why the last generation ended.</summary>
    public FinishReason? LastFinishReason { get; private set; }

    /// <summary>Tokens per prompt chunk (<see cref="SessionOptions.PrefillChunk"/>).</summary>
    internal int PrefillChunk { get; }

    /// <summary>The native session, for the model's batch scheduler.</summary>
    internal SessionHandle NativeHandle => Handle;

    private SessionHandle Handle => _handle.IsClosed ? throw new ObjectDisposedException(nameof(MiniCpmSession))
        : _handle;

    /// <summary>Appends tokens to the KV cache (in chunks). Cancellation is honoured between chunks and
    /// leaves the session as it was before the call.</summary>
    /// <exception cref="MiniCpmContextFullException">The tokens do not fit.</exception>
    public void Prefill(ReadOnlySpan<int> tokens, CancellationToken cancellationToken = default)
    {
        using var _ = Enter();
        PrefillCore(tokens, NativeConstants.MCPM_LOGITS_NONE, [], cancellationToken);
    }

    /// <summary>Appends tokens and returns their logits: [vocab] for the last position, or
    /// [tokens × vocab] row-major when <paramref name="allPositions"/> is set.</summary>
    public float[] PrefillWithLogits(ReadOnlySpan<int> tokens, bool allPositions,
        CancellationToken cancellationToken = default)
    {
        using var _ = Enter();
        int vocab = Model.Config.VocabSize;
        var logits = new float[allPositions ? checked(tokens.Length * vocab) : vocab];
        PrefillCore(tokens, allPositions ? NativeConstants.MCPM_LOGITS_ALL : NativeConstants.MCPM_LOGITS_LAST, logits,
            cancellationToken);
        return logits;
    }

    /// <summary>Appends one token and returns its logits ([vocab]).</summary>
    public unsafe float[] Decode(int token)
    {
        using var _ = Enter();
        var logits = new float[Model.Config.VocabSize];
        fixed (float* p = logits)
            NativeStatus.Check(NativeMethods.mcpm_session_decode(Handle, token, p, (nuint)logits.Length));
        return logits;
    }

    /// <summary>Shortens the KV cache to <paramref name="length"/> tokens.</summary>
    public void Rewind(int length)
    {
        using var _ = Enter();
        NativeStatus.Check(NativeMethods.mcpm_session_rewind(Handle, length));
    }

    /// <summary>Empties the KV cache.</summary>
    public void Reset()
    {
        using var _ = Enter();
        NativeStatus.Check(NativeMethods.mcpm_session_reset(Handle));
    }

    public unsafe SessionStatistics Statistics
    {
        get
        {
            mcpm_session_stats s = default;
            s.struct_size = (uint)sizeof(mcpm_session_stats);
            NativeStatus.Check(NativeMethods.mcpm_session_get_stats(Handle, &s));
            return new SessionStatistics(s.prefill_tokens, FromNs(s.prefill_ns), s.decode_tokens, FromNs(s.decode_ns),
                FromNs(s.sample_ns), s.generated_tokens, s.spec_steps, s.spec_emitted_tokens, FromNs(s.spec_draft_ns),
                FromNs(s.spec_verify_ns), s.spec_plain_tokens, s.spec_tree_size, s.spec_num_iter);
        }
    }

    public void ResetStatistics()
    {
        using var _ = Enter();
        NativeStatus.Check(NativeMethods.mcpm_session_reset_stats(Handle));
    }

    private static TimeSpan FromNs(long ns) => TimeSpan.FromTicks(ns / 100);

    /// <summary>
    /// Makes the KV cache hold exactly <paramref name="prompt"/>, reusing the longest common prefix
    /// with what it holds already (only the new suffix is evaluated), so the next generation continues
    /// from the prompt. Returns the number of tokens evaluated.
    /// </summary>
    public int SetPrompt(ReadOnlySpan<int> prompt, CancellationToken cancellationToken = default)
    {
        if (prompt.IsEmpty) throw new ArgumentException("the prompt has no tokens", nameof(prompt));
        using var _ = Enter();
        var suffix = RewindToCommonPrefix(prompt);
        PrefillCore(suffix, NativeConstants.MCPM_LOGITS_NONE, [], cancellationToken);
        return suffix.Length;
    }

    /// <summary><see cref="SetPrompt"/> on a worker thread (it evaluates the new suffix, which can take long), so a
    /// caller on a UI or request thread is not blocked. Returns the number of tokens evaluated.</summary>
    public Task<int> SetPromptAsync(ReadOnlyMemory<int> prompt, CancellationToken cancellationToken = default)
    {
        if (prompt.IsEmpty) throw new ArgumentException("the prompt has no tokens", nameof(prompt));
        if (Model.Scheduler is not { } scheduler)
            return Task.Run(() => SetPrompt(prompt.Span, cancellationToken), cancellationToken);
        return SetPromptScheduledAsync(prompt, scheduler, cancellationToken);
    }

    // SetPrompt through the model's batch scheduler: the suffix is evaluated in chunks that may share forward
    // passes with other sessions' steps.
    private async Task<int> SetPromptScheduledAsync(ReadOnlyMemory<int> prompt, MiniCpmBatchScheduler scheduler,
        CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var _ = Enter();
        var suffix = RewindToCommonPrefix(prompt.Span);
        int keep = prompt.Length - suffix.Length;
        using var registration = cancellationToken.Register(static s => ((MiniCpmSession)s!).RequestAbort(), this);
        try
        {
            if (scheduler.PrefillAsync(this, suffix, cancellationToken) is { } scheduled)
                ThrowForOutcome(await scheduled.ConfigureAwait(false), null, cancellationToken);
            else
                await Task.Run(() => PrefillCore(suffix, NativeConstants.MCPM_LOGITS_NONE, [], cancellationToken),
                    cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or MiniCpmException)
        {
            // As a single prefill call: a cancelled or failed evaluation appends nothing (chunks already in go).
            if (!_handle.IsClosed) NativeMethods.mcpm_session_rewind(_handle, keep);
            throw;
        }
        return suffix.Length;
    }

    // Rewinds the cache to the longest common prefix with the prompt, keeping at least the last prompt token to
    // evaluate (so there are logits to sample from); returns the tokens left to evaluate.
    private int[] RewindToCommonPrefix(ReadOnlySpan<int> prompt)
    {
        var cached = Tokens;
        int common = 0;
        while (common < cached.Length && common < prompt.Length && cached[common] == prompt[common]) common++;
        int keep = Math.Min(common, prompt.Length - 1);
        NativeStatus.Check(NativeMethods.mcpm_session_rewind(Handle, keep));
        return prompt[keep..].ToArray();
    }

    // The exception for a failed scheduled turn (its message was read where the native call ran).
    private static void ThrowForOutcome(MiniCpmBatchScheduler.StepOutcome outcome,
        Constraints.ConstrainedGeneration? constrained, CancellationToken ct)
    {
        if (outcome.Status != NativeConstants.MCPM_OK) ThrowForStatus(outcome.Status, outcome.Message, constrained, ct);
    }

    // A failed generation step: cancellation as OperationCanceledException, a failing constraint with its own
    // error, anything else as the status's exception with the native message.
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private static void ThrowForStatus(int status, string message, Constraints.ConstrainedGeneration? constrained,
        CancellationToken ct)
    {
        if (status == NativeConstants.MCPM_ERR_CANCELLED) throw new OperationCanceledException(ct);
        if (status == NativeConstants.MCPM_ERR_CALLBACK && constrained?.Error is { } error)
            throw new MiniCpmConstraintException("the output constraint failed: " + error.Message, error);
        throw NativeStatus.CreateException(status, message);
    }

    /// <summary>Encodes <paramref name="prompt"/> (with BOS per the tokenizer config), makes it the
    /// session's context (reusing the cached prefix) and streams the continuation.</summary>
    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(string prompt, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await UsePromptAsync(prompt, cancellationToken).ConfigureAwait(false);
        await foreach (var t in GenerateAsync(options, cancellationToken).ConfigureAwait(false)) yield return t;
    }

    // Encodes a prompt and makes it the session's context on a worker thread; returns its tokens.
    private async Task<int[]> UsePromptAsync(string prompt, CancellationToken cancellationToken)
    {
        var tokens = Model.EncodePrompt(prompt);
        await SetPromptAsync(tokens, cancellationToken).ConfigureAwait(false);
        return tokens;
    }

    /// <summary>
    /// Streams tokens sampled from the pending logits (after a prefill, decode or <see cref="SetPrompt"/>).
    /// Each token is appended to the KV cache; a stop token ends the stream without being appended.
    /// Cancellation stops between tokens and leaves the session consistent (the tokens produced so far
    /// stay in the cache); it surfaces as <see cref="OperationCanceledException"/>.
    /// </summary>
    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        using var busy = Enter();
        LastFinishReason = null;
        var constrained = options.Constraint is { } constraint
            ? new Constraints.ConstrainedGeneration(constraint, Model, options.StopTokenIds ?? Model.StopTokenIds)
            : null;
        // The native session keeps the callback's user data until its sampling params change again, so the
        // session keeps the generation's state alive until then (the next generation, or Dispose).
        _constrained?.Dispose();
        _constrained = constrained;
        ConfigureSampling(options, constrained);
        var detokenizer = Model.Tokenizer.CreateStreamingDetokenizer(options.SkipSpecialTokens);
        var stops = new StopStringMatcher(options.StopStrings);
        var generated = constrained is null ? null : new List<int>();
        int produced = 0;
        bool yielded = false;
        FinishReason? finish = null;
        using var registration = cancellationToken.Register(static s => ((MiniCpmSession)s!).RequestAbort(), this);
        while (finish is null)
        {
            if (produced >= options.MaxTokens)
            {
                finish = FinishReason.Length;
                break;
            }
            // One engine step: one token, or with a draft one draft-and-verify round of one or more tokens; with
            // a constraint that leaves no choice, its forced tokens appended in one pass.
            var (tokens, nativeFinish) = Model.Scheduler is { } scheduler
                ? await ScheduledStepAsync(scheduler, constrained, generated, options, produced, cancellationToken)
                    .ConfigureAwait(false)
                : await Task.Run(
                    () => constrained is not null
                          && ForceTokens(constrained, generated!, options.MaxTokens - produced)
                              is { Length: > 0 } forced
                        ? (forced, (FinishReason?)null)
                        : GenerateStep(constrained, cancellationToken), cancellationToken).ConfigureAwait(false);
            generated?.AddRange(nativeFinish == FinishReason.Stop ? tokens[..^1] : tokens);
            if (tokens.Length == 0 && nativeFinish is null && constrained is not null && !yielded)
            {
                // The engine stopped before a state whose tokens the constraint dictates: append them next.
                yielded = true;
                continue;
            }
            yielded = false;
            if (tokens.Length == 0)
            {
                finish = nativeFinish ?? FinishReason.ContextFull;
                break;
            }
            for (int i = 0; i < tokens.Length && finish is null; i++)
            {
                int id = tokens[i];
                produced++;
                bool last = i == tokens.Length - 1;
                // The engine stops on the configured stop ids: it returns the stop token without evaluating it.
                if (last && nativeFinish == FinishReason.Stop)
                {
                    finish = FinishReason.Stop;
                    break;
                }
                var text = stops.Push(detokenizer.Push(id));
                if (stops.Stopped) finish = FinishReason.Stop;
                else if (last && nativeFinish is not null) finish = nativeFinish;
                else if (produced >= options.MaxTokens && !last) finish = FinishReason.Length;
                yield return new GeneratedToken(id, text);
            }
        }
        var tail = stops.Push(detokenizer.Flush()) + stops.Flush();
        if (tail.Length > 0) yield return new GeneratedToken(-1, tail);
        LastFinishReason = finish;
    }

    /// <summary>Generates to the end and returns the whole text.</summary>
    public async Task<GenerationResult> GenerateTextAsync(string prompt, GenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var promptTokens = await UsePromptAsync(prompt, cancellationToken).ConfigureAwait(false);
        var text = new System.Text.StringBuilder();
        var ids = new List<int>();
        await foreach (var t in GenerateAsync(options, cancellationToken).ConfigureAwait(false))
        {
            if (t.Id >= 0) ids.Add(t.Id);
            text.Append(t.Text);
        }
        return new GenerationResult(text.ToString(), ids, promptTokens.Length, LastFinishReason ?? FinishReason.Stop);
    }

    private unsafe void ConfigureSampling(GenerationOptions o, Constraints.ConstrainedGeneration? constrained)
    {
        if (o.MaxTokens < 0) throw new ArgumentOutOfRangeException(nameof(o.MaxTokens), "MaxTokens must be >= 0");
        mcpm_sampling_params p = default;
        p.struct_size = (uint)sizeof(mcpm_sampling_params);
        NativeStatus.Check(NativeMethods.mcpm_sampling_params_default(&p));
        p.temperature = o.Temperature;
        p.top_k = o.TopK;
        p.top_p = o.TopP;
        p.min_p = o.MinP;
        p.repetition_penalty = o.RepetitionPenalty;
        p.frequency_penalty = o.FrequencyPenalty;
        p.presence_penalty = o.PresencePenalty;
        p.penalty_last_n = o.PenaltyLastN;
        p.seed = o.Seed ?? (ulong)Random.Shared.NextInt64();
        // The engine counts the tokens too, so a speculative round never runs past MaxTokens.
        p.max_new_tokens = o.MaxTokens > 0 ? o.MaxTokens : 0;
        var spec = o.Speculative ?? new SpeculativeOptions();
        p.speculative = spec.Enabled ? 1 : 0;
        p.spec_num_iter = spec.NumIterations;
        p.spec_topk_per_iter = spec.TopKPerIteration;
        p.spec_tree_size = spec.TreeSize;
        if (constrained is not null)
        {
            p.token_mask = &Constraints.ConstrainedGeneration.MaskCallback;
            p.token_mask_user_data = (void*)constrained.UserData;
        }
        // The engine decides stop tokens, so a stop token is never evaluated into the KV cache.
        var stopIds = (o.StopTokenIds ?? Model.StopTokenIds).ToArray();
        fixed (int* stops = stopIds)
        {
            p.stop_tokens = stops;
            p.stop_token_count = stopIds.Length;
            NativeStatus.Check(NativeMethods.mcpm_session_set_sampling(Handle, &p));
        }
    }

    // One engine step (see mcpm_session_generate_step). Returns no tokens when nothing could be
    // generated (context full or the token budget used).
    private unsafe (int[] Tokens, FinishReason? Finish) GenerateStep(Constraints.ConstrainedGeneration? constrained,
        CancellationToken ct)
    {
        NativeStatus.Check(NativeMethods.mcpm_session_clear_abort(Handle));
        ct.ThrowIfCancellationRequested();
        int* buffer = stackalloc int[NativeConstants.MCPM_MAX_STEP_TOKENS];
        int count = 0, finish = 0;
        int status = NativeMethods.mcpm_session_generate_step(Handle, buffer, NativeConstants.MCPM_MAX_STEP_TOKENS,
            &count, &finish);
        if (status != NativeConstants.MCPM_OK) ThrowForStatus(status, NativeStatus.LastError(), constrained, ct);
        return (new ReadOnlySpan<int>(buffer, count).ToArray(), ToFinishReason(finish));
    }

    // One engine step through the model's batch scheduler; tokens a constraint forces are appended directly.
    private async Task<(int[] Tokens, FinishReason? Finish)> ScheduledStepAsync(MiniCpmBatchScheduler scheduler,
        Constraints.ConstrainedGeneration? constrained, List<int>? generated, GenerationOptions options, int produced,
        CancellationToken ct)
    {
        if (constrained is not null)
        {
            var forced = await Task.Run(() => ForceTokens(constrained, generated!, options.MaxTokens - produced), ct)
                .ConfigureAwait(false);
            if (forced.Length > 0) return (forced, null);
        }
        bool speculative = Model.DraftHandle is not null && (options.Speculative?.Enabled ?? true);
        if (scheduler.GenerateAsync(this, speculative, ct) is not { } scheduled)
            return await Task.Run(() => GenerateStep(constrained, ct), ct).ConfigureAwait(false);
        var outcome = await scheduled.ConfigureAwait(false);
        ThrowForOutcome(outcome, constrained, ct);
        return (outcome.Tokens, ToFinishReason(outcome.Finish));
    }

    private static FinishReason? ToFinishReason(int finish) => finish switch
    {
        NativeConstants.MCPM_FINISH_CONTEXT_FULL => FinishReason.ContextFull,
        NativeConstants.MCPM_FINISH_STOP_TOKEN => FinishReason.Stop,
        NativeConstants.MCPM_FINISH_MAX_TOKENS => FinishReason.Length,
        _ => null,
    };

    // Appends the tokens the constraint forces after `generated` (at most `budget`) as generated output, in one
    // pass. Returns them (none when the constraint leaves a choice).
    private unsafe int[] ForceTokens(Constraints.ConstrainedGeneration constrained, List<int> generated, int budget)
    {
        var forced = constrained.TakeForcedTokens(CollectionsMarshal.AsSpan(generated),
            Math.Min(budget, Capacity - Length));
        if (forced.Length == 0) return forced;
        fixed (int* t = forced)
            NativeStatus.Check(NativeMethods.mcpm_session_force_tokens(Handle, t, forced.Length));
        return forced;
    }

    private unsafe void PrefillCore(ReadOnlySpan<int> tokens, int mode, Span<float> logits, CancellationToken ct)
    {
        if (tokens.IsEmpty) return;
        NativeStatus.Check(NativeMethods.mcpm_session_clear_abort(Handle));
        ct.ThrowIfCancellationRequested();
        using var registration = ct.Register(static s => ((MiniCpmSession)s!).RequestAbort(), this);
        int status;
        fixed (int* t = tokens)
        fixed (float* l = logits)
            status = NativeMethods.mcpm_session_prefill(Handle, t, tokens.Length, mode, l, (nuint)logits.Length);
        if (status == NativeConstants.MCPM_ERR_CANCELLED) throw new OperationCanceledException(ct);
        NativeStatus.Check(status);
    }

    private void RequestAbort()
    {
        try
        {
            if (!_handle.IsClosed) NativeMethods.mcpm_session_request_abort(_handle);
        }
        catch (ObjectDisposedException)
        {
            // Disposed concurrently: nothing left to stop.
        }
    }

    private BusyScope Enter()
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        if (Interlocked.Exchange(ref _busy, 1) != 0)
            throw new InvalidOperationException(
                "this MiniCpmSession is already in use by another call; use one session per concurrent caller");
        return new BusyScope(this);
    }

    private readonly struct BusyScope(MiniCpmSession session) : IDisposable
    {
        public void Dispose() => Volatile.Write(ref session._busy, 0);
    }

    /// <summary>Frees the session. A call still running on another thread is asked to stop; the native
    /// session is released when that call returns (the SafeHandle holds it until then).</summary>
    public void Dispose()
    {
        if (_handle.IsClosed) return;
        RequestAbort();
        _handle.Dispose();
        // A call still running on another thread may be inside the mask callback: then the generation's state
        // stays allocated (it is small) rather than be freed under it.
        if (Volatile.Read(ref _busy) == 0) _constrained?.Dispose();
    }
}
