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

    /// <summary>Addresses to listen on; port 0 picks a free port (read it back with <see cref="MiniCpmServer.GetBaseAddress"/>).</summary>
    public string Urls { get; set; } = "http://127.0.0.1:8080";

    /// <summary>Generations that run at once (each on its own pooled session).</summary>
    public int MaxConcurrentRequests { get; set; } = 1;

    /// <summary>Admitted requests that may wait for a free generation slot; beyond that the server answers 429.</summary>
    public int MaxQueue { get; set; } = 8;

    /// <summary>Largest accepted request body; larger bodies get 413.</summary>
    public long MaxRequestBytes { get; set; } = 1024 * 1024;

    /// <summary>KV cache capacity per session in tokens; 0 = min(max_position_embeddings, 4096).</summary>
    public int ContextLength { get; set; }

    /// <summary>Completion tokens when a request gives no max_tokens (capped by the room left in the context).</summary>
    public int DefaultMaxTokens { get; set; } = 512;

    /// <summary>The model id reported by /v1/models and in responses; default: the checkpoint directory's name.</summary>
    public string? ModelId { get; set; }

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
}
