using System.Text.RegularExpressions;

namespace MiniCPM4.Interop;

/// <summary>
/// The managed option behind each native struct field that the engine names when it rejects an argument, so that an
/// INVALID_ARGUMENT message reads <c>GenerationOptions.TopP must be in (0, 1]</c> rather than <c>top_p ...</c>.
/// Fields that come straight from a checkpoint's config.json (vocab_size, num_layers, ...) keep their names: those are
/// the config's own.
/// </summary>
internal static partial class NativeFieldNames
{
    private static readonly Dictionary<string, string> Managed = new(StringComparer.Ordinal)
    {
        // mcpm_model_options
        ["num_threads"] = "MiniCpmLoadOptions.Threads",
        ["device_index"] = "MiniCpmLoadOptions.DeviceIndex",
        ["cpu_precision"] = "MiniCpmLoadOptions.CpuPrecision",
        // mcpm_draft_config
        ["attention_window"] = "MiniCpmLoadOptions.DraftAttentionWindow",
        // mcpm_model_config: InfLLM v2 settings (sparse_config, or MiniCpmLoadOptions.SparseOverrides)
        ["sparse_kernel_size"] = "SparseAttentionOverrides.KernelSize",
        ["sparse_kernel_stride"] = "SparseAttentionOverrides.KernelStride",
        ["sparse_init_blocks"] = "SparseAttentionOverrides.InitBlocks",
        ["sparse_block_size"] = "SparseAttentionOverrides.BlockSize",
        ["sparse_window_size"] = "SparseAttentionOverrides.WindowSize",
        ["sparse_topk"] = "SparseAttentionOverrides.TopK",
        ["sparse_dense_len"] = "SparseAttentionOverrides.DenseLen",
        // mcpm_session_params
        ["context_capacity"] = "SessionOptions.ContextLength",
        ["prefill_chunk"] = "SessionOptions.PrefillChunk",
        ["kv_memory_bytes"] = "SessionOptions.KvCacheMemoryBytes",
        ["kv_memory_fraction"] = "SessionOptions.KvCacheMemoryFraction",
        // mcpm_sampling_params
        ["temperature"] = "GenerationOptions.Temperature",
        ["top_k"] = "GenerationOptions.TopK",
        ["top_p"] = "GenerationOptions.TopP",
        ["min_p"] = "GenerationOptions.MinP",
        ["repetition_penalty"] = "GenerationOptions.RepetitionPenalty",
        ["frequency_penalty"] = "GenerationOptions.FrequencyPenalty",
        ["presence_penalty"] = "GenerationOptions.PresencePenalty",
        ["penalty_last_n"] = "GenerationOptions.PenaltyLastN",
        ["max_new_tokens"] = "GenerationOptions.MaxTokens",
        ["stop_tokens"] = "GenerationOptions.StopTokenIds",
        ["spec_num_iter"] = "SpeculativeOptions.NumIterations",
        ["spec_topk_per_iter"] = "SpeculativeOptions.TopKPerIteration",
        ["spec_tree_size"] = "SpeculativeOptions.TreeSize",
    };

    /// <summary>The managed name of a native field, or null when it has none.</summary>
    public static string? ManagedName(string nativeField) => Managed.GetValueOrDefault(nativeField);

    /// <summary>
    /// Rewrites the native field names in an engine message to the managed option names; <paramref name="paramName"/>
    /// is the first one replaced (null when none was).
    /// </summary>
    public static string Translate(string nativeMessage, out string? paramName)
    {
        string? first = null;
        string translated = FieldName().Replace(nativeMessage, m =>
        {
            // "temperature" is a plain word: only a field where the message is about sampling parameters.
            if (m.Value == "temperature" && !nativeMessage.Contains("sampling params", StringComparison.Ordinal))
                return m.Value;
            if (ManagedName(m.Value) is not { } name) return m.Value;
            first ??= name;
            return name;
        });
        paramName = first;
        return translated;
    }

    // A lower-case identifier not inside a longer one ("params->num_threads" matches, "x.top_p" does not).
    [GeneratedRegex(@"(?<![\w.])[a-z][a-z_]*[a-z](?!\w)", RegexOptions.CultureInvariant)]
    private static partial Regex FieldName();
}
