using MiniCPM4.Checkpoints;

namespace MiniCPM4;

/// <summary>Where a model runs.</summary>
public enum ComputeDevice
{
    /// <summary>The fastest backend compiled into the native library with a usable device, else the CPU.</summary>
    Auto,
    /// <summary>The CPU reference backend.</summary>
    Cpu,
    /// <summary>The CUDA backend (fails with <see cref="MiniCpmBackendUnavailableException"/> when absent).</summary>
    Cuda,
}

/// <summary>How the linear layers of a model are held in the engine.</summary>
public enum WeightQuantization
{
    /// <summary>As the checkpoint stores them (dense bf16/fp16/fp32, or int4 for a quantized checkpoint).</summary>
    None,
    /// <summary>
    /// int4 W4A16 (symmetric 4-bit, group size 128, fp16 scales, Marlin layout): dense linear layers are quantized
    /// while loading (round-to-nearest with the per-group absmax scale); the embedding, norms and LM head stay dense.
    /// </summary>
    Int4,
}

/// <summary>What the CPU backend's linear layers compute with (ignored on CUDA).</summary>
public enum CpuPrecision
{
    /// <summary><see cref="Fast"/>, unless the environment variable MCPM_CPU_PRECISION is "exact".</summary>
    Default,
    /// <summary>
    /// Int4 linears quantize each token's activations to int8 per 128 inputs and use integer dot products (W4A8);
    /// bf16 linears round activations to bf16 where the CPU has AVX512-BF16. Either way a token's result does not
    /// depend on the other tokens of a pass (decode, speculative verification, prefill and batches agree).
    /// </summary>
    Fast,
    /// <summary>fp32 activations everywhere (W4A16 and bf16 x fp32): the reference path.</summary>
    Exact,
}

/// <summary>Options for <see cref="MiniCpmModel.Load(string, MiniCpmLoadOptions?)"/>.</summary>
public sealed record MiniCpmLoadOptions
{
    public ComputeDevice Device { get; init; } = ComputeDevice.Auto;
    /// <summary>CUDA device ordinal.</summary>
    public int DeviceIndex { get; init; }
    /// <summary>CPU worker threads per session; 0 uses every available core.</summary>
    public int Threads { get; init; }
    /// <summary>The CPU backend's arithmetic: fast int8/bf16 activations or the exact fp32 reference.</summary>
    public CpuPrecision CpuPrecision { get; init; } = CpuPrecision.Default;

    /// <summary>
    /// Continuous batching: the most tokens one shared forward pass may hold (default 64). The model's sessions
    /// then run their asynchronous generation and prompt evaluation (<c>GenerateAsync</c>,
    /// <c>SetPromptAsync</c>) through one scheduler that merges concurrent sessions' steps into shared passes
    /// (docs/architecture.md, "Continuous batching"); a session alone runs exactly as without it. 0 turns
    /// batching off: each session's calls run on their own. Must be 0 or in [2, 4096].
    /// </summary>
    public int MaxBatchRows { get; init; } = 64;
    /// <summary>Explicit path of the native library; otherwise MINICPM4_NATIVE_LIBRARY, runtimes/&lt;rid&gt;/native,
    /// the app directory.</summary>
    public string? NativeLibraryPath { get; init; }
    /// <summary>Receives informational lines (ignored tensors, template warnings).</summary>
    public Action<string>? Log { get; init; }
    /// <summary>
    /// InfLLM v2 sparse attention: null (default) follows the checkpoint's sparse_config (sparse once the context
    /// reaches its dense_len; dense when the config has none, or with a logged warning when it asks for the
    /// unsupported use_nope scoring); false forces dense attention; true is like null but fails the load when the
    /// sparse_config cannot be honoured (use_nope).
    /// </summary>
    public bool? SparseAttention { get; init; }
    /// <summary>
    /// Replaces some of the checkpoint's sparse_config settings (top-k, window, dense_len, ...). On a checkpoint
    /// without a sparse_config this turns InfLLM v2 on, with MiniCPM4-8B's settings for the fields not given.
    /// Cannot be combined with <see cref="SparseAttention"/> = false.
    /// </summary>
    public Checkpoints.SparseAttentionOverrides? SparseOverrides { get; init; }
    /// <summary>
    /// An EAGLE-2 draft checkpoint directory (MiniCPM4-Eagle layout: config.json + safetensors with fc, input_norm1/2
    /// and
    /// layers.*) for speculative decoding. Sessions of the model then draft token trees and verify them in one pass;
    /// the output does not change, only the speed.
    /// </summary>
    public string? DraftDirectory { get; init; }
    /// <summary>
    /// FR-Spec draft vocabulary: a <c>freq_&lt;V&gt;.pt</c> file (as published), an .npy or .safetensors int list, or a
    /// directory holding <c>freq_&lt;FrSpecSize&gt;.pt</c>. Restricts the draft's LM head to those token ids. Needs
    /// <see cref="DraftDirectory"/>.
    /// </summary>
    public string? FrSpecPath { get; init; }
    /// <summary>The FR-Spec list's expected length (and the file looked for in a directory); null accepts the
    /// file's.</summary>
    public int? FrSpecSize { get; init; }
    /// <summary>
    /// The draft's attention reads at most this many of the most recent context tokens (CPM.cu's eagle_window_size);
    /// 0 (default) reads the whole context. Bounds the draft's cost at long contexts; the output does not change,
    /// only how many drafted tokens are accepted.
    /// </summary>
    public int DraftAttentionWindow { get; init; }
    /// <summary>
    /// <see cref="WeightQuantization.Int4"/> quantizes a dense checkpoint's linear layers (and the draft's) to int4
    /// while
    /// loading; the result is the same as loading the checkpoint <c>minicpm4 quantize</c> writes. Layers a checkpoint
    /// already stores as int4 load as they are (so Int4 on a quantized checkpoint changes nothing). Every linear layer
    /// needs in_features % 128 == 0 and out_features % 64 == 0, else the load fails naming the layer.
    /// </summary>
    public WeightQuantization Quantization { get; init; } = WeightQuantization.None;
    /// <summary>
    /// With <see cref="Quantization"/> Int4: per group, also try clipping ranges p·absmax (p = 1, 0.99, …, 0.21) and
    /// keep
    /// the scale with the least squared error (slower to load, a little more accurate).
    /// </summary>
    public bool QuantizationClipSearch { get; init; }
    /// <summary>
    /// Raises the model's position limit to this many tokens with MiniCPM4's published long-context LongRoPE factors
    /// (<see cref="Checkpoints.LongContext"/>; MiniCPM4-8B is trained for 32k and published with this recipe for
    /// longer inputs). null (default) keeps the checkpoint's rope_scaling. Needs head_dim 128 and a value above the
    /// trained context. Sessions still choose their KV capacity with <see cref="SessionOptions.ContextLength"/>.
    /// </summary>
    public int? LongContext { get; init; }
}

/// <summary>Progress of a model load.</summary>
public readonly record struct LoadProgress(string Stage, long BytesLoaded, long TotalBytes)
{
    public double Fraction => TotalBytes > 0 ? (double)BytesLoaded / TotalBytes : 0;
}

/// <summary>Options for <see cref="MiniCpmModel.CreateSession(SessionOptions?)"/>.</summary>
public sealed record SessionOptions
{
    /// <summary>
    /// KV cache capacity in tokens; 0 = min(max_position_embeddings, 4096), or the most that the KV memory limits below
    /// allow when one is set (with a limit, a nonzero value caps the capacity instead).
    /// </summary>
    public int ContextLength { get; init; }
    /// <summary>
    /// Size the KV cache to at most this many bytes (<see cref="MiniCpmModel.KvBytesPerToken"/> per token of context,
    /// InfLLM v2's compressed keys and a draft's cache included); 0 = no byte limit. A limit that holds no token
    /// throws <see cref="MiniCpmOutOfMemoryException"/>.
    /// </summary>
    public long KvCacheMemoryBytes { get; init; }
    /// <summary>
    /// Size the KV cache to at most this fraction, in (0, 1], of the memory free when the session is created (the
    /// CUDA device's free memory, or the system's available memory on the CPU backend); 0 = off. With
    /// <see cref="KvCacheMemoryBytes"/> as well, the tighter limit wins.
    /// </summary>
    public double KvCacheMemoryFraction { get; init; }
    /// <summary>
    /// On CUDA, run each generated token, and each speculative verification pass, as a replayed CUDA graph (one
    /// recorded per context-length bucket); false launches every kernel each step. The output is the same either way;
    /// the CPU backend ignores it.
    /// </summary>
    public bool CudaGraphs { get; init; } = true;
    /// <summary>Tokens evaluated per prefill chunk (activation memory grows with it).</summary>
    public int PrefillChunk { get; init; } = 256;
}

/// <summary>How to sample and when to stop. Temperature 0 is greedy.</summary>
public sealed record GenerationOptions
{
    public int MaxTokens { get; init; } = 256;
    public float Temperature { get; init; }
    public int TopK { get; init; }
    public float TopP { get; init; } = 1f;
    public float MinP { get; init; }
    public float RepetitionPenalty { get; init; } = 1f;
    public float FrequencyPenalty { get; init; }
    public float PresencePenalty { get; init; }
    /// <summary>Context tokens the penalties look at; -1 = all.</summary>
    public int PenaltyLastN { get; init; } = 64;
    /// <summary>RNG seed; null draws one at random.</summary>
    public ulong? Seed { get; init; }
    /// <summary>Token ids that end generation; null uses the model's end-of-turn ids.</summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }
    /// <summary>Strings that end generation (may span several tokens); they are not part of the output.</summary>
    public IReadOnlyList<string>? StopStrings { get; init; }
    /// <summary>Omit special tokens (such as &lt;|im_end|&gt;) from the text.</summary>
    public bool SkipSpecialTokens { get; init; } = true;
    /// <summary>Speculative decoding tree (used when the model has a draft); null uses <see
    /// cref="SpeculativeOptions"/>' defaults.</summary>
    public SpeculativeOptions? Speculative { get; init; }
    /// <summary>
    /// What the output must be (a JSON Schema, a regular expression, a grammar or a choice; see
    /// <see cref="Constraints.OutputConstraint"/>): every token is drawn from those that keep the output inside the
    /// constraint, and the output ends (with a stop token) only once it is complete. Where the constraint leaves no
    /// choice, its tokens are appended without sampling. null: unconstrained.
    /// </summary>
    public Constraints.OutputConstraint? Constraint { get; init; }

    /// <summary>The checkpoint's generation_config.json defaults (sampling when do_sample is set).</summary>
    public static GenerationOptions FromDefaults(GenerationConfig config)
    {
        var options = new GenerationOptions();
        if (config.MaxNewTokens is int max && max > 0) options = options with { MaxTokens = max };
        if (config.DoSample == true)
        {
            options = options with
            {
                Temperature = config.Temperature ?? 1f,
                TopP = config.TopP ?? 1f,
                TopK = config.TopK ?? 0,
            };
        }
        if (config.RepetitionPenalty is float rp) options = options with { RepetitionPenalty = rp };
        return options;
    }
}

/// <summary>
/// EAGLE-2 dynamic-tree parameters: <see cref="NumIterations"/> draft levels (the root's included), each expanding
/// <see cref="TopKPerIteration"/> nodes into as many children, and the best <see cref="TreeSize"/> nodes (root
/// included, at most 64) verified by the target in one pass. The default, <see cref="AutoTreeSize"/>, is adaptive
/// speculation: before each step the session chooses plain decoding or a tree of 4, 8, 16 or 32 nodes (1 to 4 draft
/// levels; <see cref="NumIterations"/> and <see cref="TopKPerIteration"/> are then unused), whichever its
/// measurements of earlier steps expect to emit the most tokens per second, so a draft that does not pay is not used
/// (<see cref="SessionStatistics.TreeSize"/> says what it chose). A fixed size uses those three values (CPM.cu's
/// defaults are 2, 10, 12). Whatever the tree, the output is that of plain decoding.
/// </summary>
public sealed record SpeculativeOptions(bool Enabled = true, int NumIterations = 2, int TopKPerIteration = 10,
    int TreeSize = SpeculativeOptions.AutoTreeSize)
{
    /// <summary>The <see cref="TreeSize"/> of adaptive speculation.</summary>
    public const int AutoTreeSize = 0;

    /// <summary>Plain decoding even when the model has a draft.</summary>
    public static SpeculativeOptions Off { get; } = new(Enabled: false);

    /// <summary>Whether the tree is chosen per step (<see cref="AutoTreeSize"/>).</summary>
    public bool Adaptive => TreeSize == AutoTreeSize;
}

/// <summary>Why a generation ended.</summary>
public enum FinishReason
{
    /// <summary>A stop token or stop string was produced.</summary>
    Stop,
    /// <summary><see cref="GenerationOptions.MaxTokens"/> tokens were generated.</summary>
    Length,
    /// <summary>The session's KV cache is full.</summary>
    ContextFull,
}

/// <summary>One generated token and the text it completed (may be empty while a multi-byte
/// character or a possible stop string is still incomplete). The last item of a stream may carry
/// <see cref="Id"/> = -1: text held back until the end, with no token of its own.</summary>
public readonly record struct GeneratedToken(int Id, string Text);

/// <summary>Counters of a session. The speculative counters stay 0 without a draft.</summary>
public sealed record SessionStatistics(
    long PrefillTokens, TimeSpan PrefillTime, long DecodeTokens, TimeSpan DecodeTime, TimeSpan SampleTime,
    long GeneratedTokens, long SpeculativeSteps = 0, long SpeculativeTokens = 0, TimeSpan DraftTime = default,
    TimeSpan VerifyTime = default, long AdaptivePlainTokens = 0, int TreeSize = 0, int TreeLevels = 0)
{
    // AdaptivePlainTokens: tokens adaptive speculation decoded plainly because that was expected to be faster.
    // TreeSize, TreeLevels: the tree of the last step (0 = plain decoding).

    /// <summary>What the last step used: "plain" or "tree N (D levels)".</summary>
    public string LastStepDescription => TreeSize == 0 ? "plain" : $"tree {TreeSize} ({TreeLevels} levels)";

    /// <summary>Tokens emitted per draft-and-verify round (the mean accepted length), or 0 before any round.</summary>
    public double MeanAcceptedTokens => SpeculativeSteps > 0 ? (double)SpeculativeTokens / SpeculativeSteps : 0;
    public double PrefillTokensPerSecond => PrefillTime > TimeSpan.Zero ? PrefillTokens / PrefillTime.TotalSeconds : 0;
    /// <summary>Tokens decoded one at a time plus tokens emitted by draft-and-verify rounds.</summary>
    public long DecodedTokens => DecodeTokens + SpeculativeTokens;
    /// <summary>Time spent producing <see cref="DecodedTokens"/>: plain decode steps, drafting and
    /// verification.</summary>
    public TimeSpan DecodingTime => DecodeTime + DraftTime + VerifyTime;
    /// <summary>Decoding speed over plain steps and speculative rounds together (<see cref="DecodedTokens"/> per
    /// <see cref="DecodingTime"/>), so it is the generation speed with or without a draft.</summary>
    public double DecodeTokensPerSecond => DecodingTime > TimeSpan.Zero ? DecodedTokens / DecodingTime.TotalSeconds : 0;
}

/// <summary>The outcome of a non-streaming generation.</summary>
public sealed record GenerationResult(string Text, IReadOnlyList<int> TokenIds, int PromptTokens,
    FinishReason FinishReason);
