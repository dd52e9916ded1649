namespace MiniCPM4.AI;

/// <summary>Settings of a <see cref="MiniCpmChatClient"/>.</summary>
public sealed record MiniCpmChatClientOptions
{
    /// <summary>The model id reported in metadata and responses; null uses the checkpoint directory's name.</summary>
    public string? ModelId { get; init; }

    /// <summary>
    /// How many requests are served at once. Each running request holds one session (KV cache) of the pool; calls
    /// beyond this limit wait in a first-in, first-out queue until a running call finishes. Default 8: the model's
    /// scheduler batches the running requests' decoding steps into shared forward passes
    /// (<see cref="MiniCpmLoadOptions.MaxBatchRows"/>), so concurrent requests cost little more than one.
    /// </summary>
    public int MaxConcurrentSessions { get; init; } = 8;

    /// <summary>KV cache capacity of each session in tokens; 0 = min(max_position_embeddings, 4096).</summary>
    public int ContextLength { get; init; }

    /// <summary>
    /// How many conversations (by <c>ConversationId</c>) keep their session and history after a call, least recently
    /// used first out. Each one holds a KV cache. 0 disables the cache (every call then prefills its whole prompt).
    /// </summary>
    public int MaxCachedConversations { get; init; } = 8;

    /// <summary>Receives informational lines (ignored options, evicted conversations).</summary>
    public Action<string>? Log { get; init; }

    /// <summary>
    /// The generation settings that <see cref="Microsoft.Extensions.AI.ChatOptions"/> are applied on top of; null uses
    /// the
    /// checkpoint's generation_config.json (<see cref="GenerationOptions.FromDefaults"/>).
    /// </summary>
    public GenerationOptions? DefaultGenerationOptions { get; init; }

    /// <summary>
    /// Variables for the chat template on every request (transformers' extra <c>apply_chat_template</c> arguments),
    /// e.g. <c>{"enable_thinking": false}</c>; a request's <c>ChatOptions.AdditionalProperties</c> override them.
    /// </summary>
    public IReadOnlyDictionary<string, object?>? ChatTemplateArguments { get; init; }
}
