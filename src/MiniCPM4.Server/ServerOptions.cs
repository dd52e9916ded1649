using Microsoft.Extensions.Logging;

namespace MiniCPM4.Server;

/// <summary>Configuration of the OpenAI-compatible server built by <see cref="MiniCpmServer.Build"/>.</summary>
public sealed class ServerOptions
{
    /// <summary>Checkpoint directory to load (ignored when <see cref="Model"/> is set).</summary>
    public string? ModelDirectory { get; set; }

    /// <summary>A model loaded by the caller; the server uses it and does not dispose it.</summary>
    public MiniCpmModel? Model { get; set; }

    /// <summary>Options for loading <see cref="ModelDirectory"/>.</summary>
    public MiniCpmLoadOptions LoadOptions { get; set; } = new();

    /// <summary>Addresses to listen on; port 0 picks a free port (see <see cref="MiniCpmServer.GetBaseAddress"/>).
    /// </summary>
    public string Urls { get; set; } = "http://127.0.0.1:8080";

    /// <summary>Generations that run at once, each on its own pooled session (KV cache); the model's scheduler
    /// batches their steps into shared forward passes. Default 8.</summary>
    public int MaxConcurrentRequests { get; set; } = 8;

    /// <summary>Admitted requests that may wait for a free generation slot; beyond that the server answers 429.
    /// </summary>
    public int MaxQueue { get; set; } = 8;

    /// <summary>Conversations (named by the <c>X-Conversation-Id</c> header) whose KV cache is kept for reuse.
    /// </summary>
    public int MaxCachedConversations { get; set; } = 8;

    /// <summary>Largest accepted request body; larger bodies get 413.</summary>
    public long MaxRequestBytes { get; set; } = 1024 * 1024;

    /// <summary>KV cache capacity per session in tokens; 0 = min(max_position_embeddings, 4096).</summary>
    public int ContextLength { get; set; }

    /// <summary>Options of every session (its <see cref="SessionOptions.ContextLength"/> is replaced by
    /// <see cref="ContextLength"/> when that is set).</summary>
    public SessionOptions SessionOptions { get; set; } = new();

    /// <summary>Completion tokens when a request gives no max_tokens (capped by the room left in the context).
    /// </summary>
    public int DefaultMaxTokens { get; set; } = 512;

    /// <summary>The model id reported by /v1/models and in responses; default: the checkpoint directory's name.
    /// </summary>
    public string? ModelId { get; set; }

    /// <summary>Other names a request's <c>model</c> may use; any other name gets 404 <c>model_not_found</c>.</summary>
    public IReadOnlyList<string> ModelAliases { get; set; } = [];

    /// <summary>API keys accepted as <c>Authorization: Bearer KEY</c>; none = no authentication. <c>/health</c>
    /// and the chat page stay open.</summary>
    public IReadOnlyList<string> ApiKeys { get; set; } = [];

    /// <summary>How long running generations may go on after shutdown begins; then their streams end with an
    /// error event and <c>[DONE]</c>.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Speculative decoding settings of every generation (null: the engine's defaults; used only when the
    /// model has a draft).</summary>
    public SpeculativeOptions? Speculative { get; set; }

    /// <summary>Seconds suggested in Retry-After when the queue is full.</summary>
    public int RetryAfterSeconds { get; set; } = 1;

    /// <summary>Minimum level of the console log.</summary>
    public LogLevel MinimumLogLevel { get; set; } = LogLevel.Information;

    /// <summary>Command-line style arguments passed on to the host builder (configuration overrides).</summary>
    public string[] HostArgs { get; set; } = [];

    /// <summary>
    /// Chat template variables for every chat request (e.g. <c>{"enable_thinking": false}</c>); a request's
    /// <c>chat_template_kwargs</c> override them.
    /// </summary>
    public IReadOnlyDictionary<string, object?>? ChatTemplateArguments { get; set; }

    /// <summary>Tests: replaces the model's text after prefill (the prompt's tokens are still evaluated).</summary>
    internal Func<string[]>? ScriptedCompletion { get; set; }

    /// <summary>Tests: a call block the script opens (with tool_choice auto) is written by the model, constrained.
    /// </summary>
    internal bool ScriptedCallsAreGenerated { get; set; }

    /// <summary>Checks every option; the message names the option (as the command line spells it).</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (Model is null && string.IsNullOrWhiteSpace(ModelDirectory))
            throw new ArgumentException("set ServerOptions.Model or ServerOptions.ModelDirectory (--model)");
        if (MaxConcurrentRequests < 1)
            throw new ArgumentException($"--max-concurrent must be at least 1 (got {MaxConcurrentRequests})");
        if (MaxQueue < 0) throw new ArgumentException($"--max-queue must be >= 0 (got {MaxQueue})");
        if (MaxCachedConversations < 0)
            throw new ArgumentException($"--max-conversations must be >= 0 (got {MaxCachedConversations})");
        if (MaxRequestBytes < 1)
            throw new ArgumentException($"--max-request-bytes must be at least 1 (got {MaxRequestBytes})");
        if (ContextLength < 0) throw new ArgumentException($"--context must be >= 0 (got {ContextLength})");
        if (DefaultMaxTokens < 1)
            throw new ArgumentException($"--max-tokens must be at least 1 (got {DefaultMaxTokens})");
        if (ShutdownTimeout < TimeSpan.Zero)
            throw new ArgumentException($"--shutdown-timeout must be >= 0 (got {ShutdownTimeout.TotalSeconds} s)");
        if (RetryAfterSeconds < 0) throw new ArgumentException("RetryAfterSeconds must be >= 0");
        if (ApiKeys.Any(string.IsNullOrWhiteSpace)) throw new ArgumentException("--api-key must not be empty");
        if (ModelAliases.Any(string.IsNullOrWhiteSpace)) throw new ArgumentException("--alias must not be empty");
        if (string.IsNullOrWhiteSpace(Urls)) throw new ArgumentException("the listening address must not be empty");
    }
}
