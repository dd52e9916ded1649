using MiniCPM4.Chat;
using MiniCPM4.Checkpoints;
using MiniCPM4.Interop;
using MiniCPM4.Tokenization;

namespace MiniCPM4;

/// <summary>
/// A MiniCPM4 model loaded into the native engine, with its tokenizer and configuration.
/// Thread-safety: a loaded model is immutable; any number of sessions may use it concurrently
/// (one thread per session at a time). Dispose it when done; sessions keep the native weights
/// alive until they are disposed too.
/// </summary>
public sealed class MiniCpmModel : IDisposable
{
    private readonly ModelHandle _handle;

    private DraftHandle? _draft;

    private MiniCpmModel(ModelHandle handle, string directory, MiniCpmConfig config, GenerationConfig generation,
        MiniCpmTokenizer tokenizer, long weightBytes, SparseAttentionConfig? sparse, int int4Linears,
            ModelChatTemplate chatTemplate)
    {
        ChatTemplate = chatTemplate;
        _handle = handle;
        Int4LinearCount = int4Linears;
        SparseAttention = sparse;
        Directory = directory;
        Config = config;
        GenerationDefaults = generation;
        Tokenizer = tokenizer;
        WeightBytes = weightBytes;
        var stops = new SortedSet<int>(config.EosTokenIds ?? []);
        foreach (var id in generation.EosTokenIds ?? []) stops.Add(id);
        if (tokenizer.TokenToId(ChatMlRenderer.ImEnd) is int imEnd) stops.Add(imEnd);
        // The template's end-of-turn marker (e.g. <|eot_id|>) when it is one token of the vocabulary.
        if (chatTemplate.EndOfTurn is { } endOfTurn
            && tokenizer.AddedTokens.TryGetValue(endOfTurn, out int endOfTurnId)) stops.Add(endOfTurnId);
        if (stops.Count == 0) stops.Add(tokenizer.EosId);
        StopTokenIds = stops.Where(id => id >= 0 && id < config.VocabSize).ToArray();
    }

    /// <summary>The checkpoint directory.</summary>
    public string Directory { get; }
    public MiniCpmConfig Config { get; }
    /// <summary>generation_config.json of the checkpoint (defaults when absent).</summary>
    public GenerationConfig GenerationDefaults { get; }
    /// <summary>The tokens' bytes for constrained decoding, built on first use.</summary>
    internal Constraints.TokenMasks.TokenVocabulary ConstraintVocabulary =>
        LazyInitializer.EnsureInitialized(ref _constraintVocabulary,
            () => Constraints.TokenMasks.TokenVocabulary.FromTokenizer(Tokenizer));

    private Constraints.TokenMasks.TokenVocabulary? _constraintVocabulary;

    public MiniCpmTokenizer Tokenizer { get; }
    /// <summary>
    /// The checkpoint's chat template (chat_template.jinja, else tokenizer_config.json's chat_template, else MiniCPM4's
    /// ChatML), which every chat surface renders conversations with.
    /// </summary>
    public ModelChatTemplate ChatTemplate { get; }
    /// <summary>Bytes of weights held by the engine.</summary>
    public long WeightBytes { get; }
    /// <summary>End-of-sequence / end-of-turn ids from config.json, generation_config.json and the tokenizer.</summary>
    public IReadOnlyList<int> StopTokenIds { get; }
    /// <summary>
    /// The InfLLM v2 sparse attention settings the engine runs with (sparse once a session's context reaches
    /// <see cref="SparseAttentionConfig.DenseLen"/>), or null when attention is always dense.
    /// </summary>
    public SparseAttentionConfig? SparseAttention { get; }

    /// <summary>
    /// <see cref="WeightQuantization.Int4"/> when the engine holds linear layers as int4 (W4A16: a quantized
    /// checkpoint,
    /// or <see cref="MiniCpmLoadOptions.Quantization"/>), else <see cref="WeightQuantization.None"/>. The embedding,
    /// norms
    /// and LM head are always dense.
    /// </summary>
    public WeightQuantization Quantization => Int4LinearCount > 0 ? WeightQuantization.Int4 : WeightQuantization.None;

    /// <summary>Linear layers the engine holds as int4 (7 per decoder layer when fully quantized, 0 for a dense
    /// model).</summary>
    public int Int4LinearCount { get; }

    /// <summary>
    /// KV cache bytes one token of context costs a session on this model's backend: every layer's K and V rows (the
    /// draft's too, when one is loaded) plus InfLLM v2's compressed keys. <see
    /// cref="SessionOptions.KvCacheMemoryBytes"/>
    /// divides by it.
    /// </summary>
    public unsafe long KvBytesPerToken
    {
        get
        {
            ulong bytes;
            using var noDraft = new DraftHandle();  // a NULL draft when none is loaded
            NativeStatus.Check(NativeMethods.mcpm_session_kv_bytes_per_token(Handle, _draft ?? noDraft, &bytes));
            return (long)bytes;
        }
    }

    /// <summary>
    /// The engine's weight arena (one allocation for all weights, sized by <see cref="WeightArena.PlanBytes"/>): its
    /// size,
    /// the bytes its tensors take, and the tensors held in allocations of their own (0 when the plan was right).
    /// </summary>
    internal unsafe (long Reserved, long Used, int Separate) WeightArenaUse
    {
        get
        {
            ulong reserved, used;
            int separate;
            NativeStatus.Check(NativeMethods.mcpm_model_weight_arena(Handle, &reserved, &used, &separate));
            return ((long)reserved, (long)used, separate);
        }
    }

    /// <summary>The EAGLE draft used for speculative decoding, or null.</summary>
    public DraftInfo? Draft { get; private set; }

    internal DraftHandle? DraftHandle => _draft;

    internal ModelHandle Handle => _handle.IsClosed ? throw new ObjectDisposedException(nameof(MiniCpmModel)) : _handle;

    /// <summary>Loads a Hugging Face MiniCPM4 checkpoint directory.</summary>
    /// <exception cref="CheckpointException">A file is missing, corrupt or disagrees with the config.</exception>
    /// <exception cref="MiniCpmException">The engine rejected the model (e.g. backend unavailable, out of
    /// memory).</exception>
    public static MiniCpmModel Load(string directory, MiniCpmLoadOptions? options = null) =>
        LoadCore(directory, options ?? new MiniCpmLoadOptions(), null, CancellationToken.None);

    /// <summary>Loads a checkpoint on a worker thread, reporting progress; cancellation is checked between
    /// tensors.</summary>
    public static Task<MiniCpmModel> LoadAsync(string directory, MiniCpmLoadOptions? options = null,
        IProgress<LoadProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Task.Run(() => LoadCore(directory, options ?? new MiniCpmLoadOptions(), progress, cancellationToken),
            cancellationToken);

    private static unsafe MiniCpmModel LoadCore(string directory, MiniCpmLoadOptions options,
        IProgress<LoadProgress>? progress, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        NativeConfigMapper.ValidateLoadOptions(options);
        if (options.NativeLibraryPath is not null) NativeLibraryResolver.Configure(options.NativeLibraryPath);
        NativeLibraryResolver.EnsureLoaded();

        using var checkpoint = Checkpoint.Open(directory, options.Log);
        bool quantize = options.Quantization switch
        {
            WeightQuantization.None => false,
            WeightQuantization.Int4 => true,
            _ => throw new ArgumentException($"unknown Quantization {options.Quantization}", nameof(options)),
        };
        if (quantize && LinearLoader.CheckQuantizable(checkpoint.Linears.Where(l => !l.IsInt4)
                .Select(l => (l.Name, l.OutFeatures, l.InFeatures))) is { } unquantizable)
            throw unquantizable;
        var int4Settings = new Int4Settings(options.QuantizationClipSearch, options.Threads);
        var tokenizer = MiniCpmTokenizer.Load(directory);
        var chatTemplate = LoadChatTemplate(directory, tokenizer, options.Log);
        var config = options.LongContext is int longContext ? LongContext.Extend(checkpoint.Config, longContext)
            : checkpoint.Config;

        var modelOptions = NativeConfigMapper.ModelOptions(options, WeightArena.PlanBytes(checkpoint, quantize));

        float[] shortFactor = config.RopeScaling?.ShortFactor ?? [];
        float[] longFactor = config.RopeScaling?.LongFactor ?? [];
        if (config.Sparse is { UseNope: true } && options.SparseAttention is null)
            options.Log?.Invoke(
                "warning: sparse_config.use_nope is not supported; attention runs dense (InfLLM v2 off)");
        ModelHandle handle;
        fixed (float* shortPtr = shortFactor)
        fixed (float* longPtr = longFactor)
        {
            var native = NativeConfigMapper.ModelConfig(config, SparseSettings(config, options), shortPtr, longPtr);
            NativeStatus.Check(NativeMethods.mcpm_model_create(&native, &modelOptions, out handle));
        }

        try
        {
            long loaded = 0, total = checkpoint.TotalBytes;
            progress?.Report(new LoadProgress("weights", 0, total));
            LinearLoader.SetTensor set = (name, dtype, shape, data, byteLength) =>
            {
                fixed (long* shapePtr = shape)
                {
                    NativeStatus.Check(
                        NativeMethods.mcpm_model_set_tensor(handle, name, dtype.ToNative(name), shapePtr, shape.Length,
                        data, (nuint)byteLength));
                }
            };
            foreach (var tensor in checkpoint.OtherTensors)
            {
                ct.ThrowIfCancellationRequested();
                set(tensor.Name, tensor.DType, tensor.Shape, tensor.Pointer, tensor.ByteLength);
                loaded += tensor.ByteLength;
                progress?.Report(new LoadProgress("weights", loaded, total));
            }
            foreach (var linear in checkpoint.Linears)
            {
                ct.ThrowIfCancellationRequested();
                LinearLoader.Load(linear, quantize, int4Settings, set);
                loaded += linear.ByteLength;
                progress?.Report(new LoadProgress("weights", loaded, total));
            }
            NativeStatus.Check(NativeMethods.mcpm_model_finalize(handle));
            ulong bytes;
            NativeStatus.Check(NativeMethods.mcpm_model_weight_bytes(handle, &bytes));
            int int4Linears;
            NativeStatus.Check(NativeMethods.mcpm_model_int4_linear_count(handle, &int4Linears));
            var model = new MiniCpmModel(handle, Path.GetFullPath(directory), config, checkpoint.Generation, tokenizer,
                (long)bytes, SparseSettings(config, options), int4Linears, chatTemplate);
            model._maxBatchRows = options.MaxBatchRows;
            if (options.DraftDirectory is { } draftDir)
            {
                progress?.Report(new LoadProgress("draft", total, total));
                model.AttachDraft(draftDir, options, ct);
            }
            else if (options.FrSpecPath is not null)
            {
                throw new ArgumentException(
                    "FrSpecPath needs DraftDirectory: an FR-Spec list restricts a draft's vocabulary",
                    nameof(options));
            }
            return model;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private unsafe void AttachDraft(string draftDir, MiniCpmLoadOptions options, CancellationToken ct)
    {
        IReadOnlyList<int>? vocabulary = null;
        if (options.FrSpecPath is { } fr)
            vocabulary =
                Speculative.FrSpecVocabulary.Load(fr, Config.VocabSize, StopTokenIds, options.FrSpecSize).TokenIds;
        (_draft, var draftConfig, int draftInt4) =
            Speculative.EagleDraftLoader.Load(_handle, Config, draftDir, vocabulary, options, ct);
        ulong draftBytes;
        NativeStatus.Check(NativeMethods.mcpm_draft_weight_bytes(_draft, &draftBytes));
        Draft = new DraftInfo(Path.GetFullPath(draftDir), draftConfig.NumHiddenLayers, vocabulary?.Count
            ?? Config.VocabSize,
            options.FrSpecPath is null ? null : Path.GetFullPath(options.FrSpecPath), (long)draftBytes, draftInt4,
            options.DraftAttentionWindow);
    }

    /// <summary>The sparse_config to hand to the engine under <see cref="MiniCpmLoadOptions.SparseAttention"/>, or null
    /// for dense.</summary>
    private static SparseAttentionConfig? SparseSettings(MiniCpmConfig config, MiniCpmLoadOptions options)
    {
        if (options.SparseAttention == false) return null;
        // Overrides on a checkpoint without sparse_config start from MiniCPM4-8B's settings.
        var sparse = config.Sparse ?? (options.SparseOverrides is not null ? new SparseAttentionConfig() : null);
        if (sparse is null) return null;
        // use_nope scoring is not implemented: "as configured" degrades to dense, an explicit request fails in the
        // engine.
        if (sparse.UseNope && options.SparseAttention is null) return null;
        return options.SparseOverrides?.ApplyTo(sparse) ?? sparse;
    }

    /// <summary>Creates a session (a KV cache and generation state) over this model.</summary>
    public MiniCpmSession CreateSession(SessionOptions? options = null) => new(this, options ?? new SessionOptions());

    /// <summary>Encodes a prompt, adding BOS when the tokenizer config asks for it.</summary>
    public int[] EncodePrompt(string text) => Tokenizer.Encode(text, addBos: Tokenizer.AddBosByDefault);

    /// <summary>
    /// Encodes a conversation rendered with the checkpoint's chat template (<see cref="ChatTemplate"/>), by default
    /// with
    /// the generation prompt. See <see cref="EncodeRenderedChat"/> for BOS.
    /// </summary>
    public int[] EncodeChat(IEnumerable<ChatMessage> messages, ChatTemplateOptions? options = null) =>
        EncodeRenderedChat(ChatTemplate.Render(messages, options));

    /// <summary>
    /// Encodes a prompt rendered by the chat template: BOS is prepended when the tokenizer asks for it
    /// (<c>add_bos_token</c>) unless the template already wrote the BOS token at the start.
    /// </summary>
    public int[] EncodeRenderedChat(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        bool templateWroteBos = ChatTemplate.BosToken is { Length: > 0 } bos
            && prompt.StartsWith(bos, StringComparison.Ordinal);
        return Tokenizer.Encode(prompt, addBos: Tokenizer.AddBosByDefault && !templateWroteBos);
    }

    private static ModelChatTemplate LoadChatTemplate(string directory, MiniCpmTokenizer tokenizer, Action<string>? log)
    {
        string? bos = tokenizer.IdToToken(tokenizer.BosId), eos = tokenizer.IdToToken(tokenizer.EosId);
        try
        {
            var template = ModelChatTemplate.Load(directory, tokenizer.ChatTemplate, bos, eos);
            log?.Invoke($"chat template: {template.Origin} (tool calls: {template.OutputFormat.ToolCalls}, " +
                        $"<think> reasoning: {template.OutputFormat.ThinkTags}, renders tools: " +
                            $"{template.RendersTools})");
            return template;
        }
        catch (Chat.Jinja.TemplateSyntaxException e)
        {
            log?.Invoke(
                $"warning: the checkpoint's chat template cannot be used ({e.Message}); chat uses MiniCPM4's ChatML");
            return ModelChatTemplate.CreateChatMl(bos, eos);
        }
    }

    /// <summary>Parameters in the model (all weights).</summary>
    public long ParameterCount
    {
        get
        {
            long h = Config.HiddenSize, i = Config.IntermediateSize, v = Config.VocabSize;
            long q = (long)Config.NumAttentionHeads * Config.HeadDim,
                kv = (long)Config.NumKeyValueHeads * Config.HeadDim;
            long perLayer = 2 * h + q * h + 2 * kv * h + h * q + 3 * h * i;
            return v * h + Config.NumHiddenLayers * perLayer + h + (Config.TieWordEmbeddings ? 0 : v * h);
        }
    }

    /// <summary>The continuous-batching scheduler of this model's sessions (created on first use; null when
    /// <see cref="MiniCpmLoadOptions.MaxBatchRows"/> is 0).</summary>
    internal MiniCpmBatchScheduler? Scheduler
    {
        get
        {
            if (_maxBatchRows == 0) return null;
            lock (_schedulerLock)
            {
                // Sessions outlive a disposed model (they hold their own native reference); they then run alone.
                if (_handle.IsClosed) return null;
                return _scheduler ??= new MiniCpmBatchScheduler(this, _maxBatchRows);
            }
        }
    }

    /// <summary>The most sessions one batched step of this model has run together so far (continuous batching,
    /// <see cref="MiniCpmLoadOptions.MaxBatchRows"/>); 0 before any step.</summary>
    public int LargestBatch => Volatile.Read(ref _scheduler)?.LargestBatch ?? 0;

    private int _maxBatchRows;
    private MiniCpmBatchScheduler? _scheduler;
    private readonly object _schedulerLock = new();

    public void Dispose()
    {
        lock (_schedulerLock) _scheduler?.Dispose();
        _draft?.Dispose();
        _handle.Dispose();
    }
}

/// <summary>The EAGLE draft of a model: its directory, layers, the draft head's vocabulary size (the FR-Spec
/// list's length, else the full vocabulary), the FR-Spec file, the bytes it holds and how many of its linear layers
/// (fc counted once) are int4, and its attention window in tokens (0 = the whole context).</summary>
public sealed record DraftInfo(string Directory, int Layers, int VocabularySize, string? FrSpecPath, long WeightBytes,
    int Int4LinearCount = 0, int AttentionWindow = 0);
