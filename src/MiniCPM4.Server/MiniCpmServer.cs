using System.Buffers;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using MiniCPM4.Chat;
using MiniCPM4.Chat.Jinja;
using Prometheus;

namespace MiniCPM4.Server;

/// <summary>
/// An OpenAI-compatible HTTP server over one MiniCPM4 model: <c>POST /v1/chat/completions</c>,
/// <c>POST /v1/completions</c> (plain and SSE streaming), <c>GET /v1/models</c>, <c>POST /tokenize</c>,
/// <c>POST /detokenize</c>, <c>GET /metrics</c> (Prometheus), <c>GET /health</c> and a chat page at <c>/</c>.
/// Build it, then <c>Run</c> or <c>StartAsync</c> it (tests host it in-process on port 0).
/// </summary>
public static class MiniCpmServer
{
    /// <summary>The request header that names a conversation: its KV cache is kept for the next request (and a
    /// load balancer hashes on it to send the conversation to the same replica).</summary>
    public const string ConversationHeader = "X-Conversation-Id";

    /// <summary>Builds the web application (loads the model unless one is given).</summary>
    /// <exception cref="ArgumentException">An option is invalid (the message names it).</exception>
    public static WebApplication Build(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = options.HostArgs,
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.WebHost.UseUrls(options.Urls);
        builder.WebHost.ConfigureKestrel(k =>
        {
            // Our own limit (MaxRequestBytes) answers 413 with the error body; Kestrel's is only a backstop.
            k.Limits.MaxRequestBodySize = Math.Max(options.MaxRequestBytes * 4, 32L * 1024 * 1024);
            k.AddServerHeader = false;
        });
        // Running generations get ShutdownTimeout to finish; the host waits a little longer for their last events.
        builder.Services.Configure<HostOptions>(h =>
            h.ShutdownTimeout = options.ShutdownTimeout + TimeSpan.FromSeconds(5));
        builder.Logging.SetMinimumLevel(options.MinimumLogLevel);
        // The server writes its own line per request; ASP.NET Core's per-request lines would triple it.
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);

        bool ownsModel = options.Model is null;
        var model = options.Model ?? MiniCpmModel.Load(options.ModelDirectory!, options.LoadOptions);
        ServerState state;
        try
        {
            string modelId = !string.IsNullOrWhiteSpace(options.ModelId)
                ? options.ModelId
                : Path.GetFileName(Path.TrimEndingDirectorySeparator(model.Directory)) is { Length: > 0 } name
                    ? name
                    : "minicpm4";
            state = new ServerState(model, ownsModel, options, modelId);
        }
        catch
        {
            if (ownsModel) model.Dispose();
            throw;
        }
        builder.Services.AddSingleton(state);
        builder.Services.AddSingleton(state.Metrics);

        var app = builder.Build();
        var lifetime = app.Lifetime;
        lifetime.ApplicationStopping.Register(state.BeginShutdown);
        lifetime.ApplicationStopped.Register(state.Dispose);

        var endpoints = new Endpoints(state, app.Logger);
        app.Use(endpoints.ErrorBoundary);
        app.Use(endpoints.Authorize);
        app.MapGet("/", endpoints.ChatPage);
        app.MapGet("/health", endpoints.Health);
        app.MapGet("/metrics", endpoints.Metrics);
        app.MapGet("/v1/models", endpoints.Models);
        app.MapPost("/v1/chat/completions", endpoints.ChatCompletions);
        app.MapPost("/v1/completions", endpoints.Completions);
        app.MapPost("/tokenize", endpoints.Tokenize);
        app.MapPost("/detokenize", endpoints.Detokenize);
        app.MapFallback(endpoints.NotFound);
        return app;
    }

    /// <summary>Builds the server, starts it and runs until the host is asked to stop (Ctrl-C, SIGTERM); running
    /// generations then get <see cref="ServerOptions.ShutdownTimeout"/> to finish.</summary>
    public static async Task RunAsync(ServerOptions options, Action<string>? onStarted = null,
        CancellationToken cancellationToken = default)
    {
        var app = Build(options);
        await using (app.ConfigureAwait(false))
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
            onStarted?.Invoke(GetBaseAddress(app));
            await app.WaitForShutdownAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The first address the started server listens on, e.g. <c>http://127.0.0.1:41234</c>.</summary>
    public static string GetBaseAddress(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses;
        return addresses?.FirstOrDefault()?.TrimEnd('/')
               ?? throw new InvalidOperationException("the server is not listening (call StartAsync first)");
    }

    /// <summary>The counters of a built server.</summary>
    public static ServerMetrics GetMetrics(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        return app.Services.GetRequiredService<ServerMetrics>();
    }
}

/// <summary>What the endpoints share; disposed when the host stops.</summary>
internal sealed class ServerState : IDisposable
{
    private readonly bool _ownsModel;
    private readonly CancellationTokenSource _hardStop = new();
    private volatile bool _stopping;
    private int _disposed;

    public ServerState(MiniCpmModel model, bool ownsModel, ServerOptions options, string modelId)
    {
        Model = model;
        _ownsModel = ownsModel;
        Options = options;
        ModelId = modelId;
        SessionOptions = options.ContextLength > 0
            ? options.SessionOptions with { ContextLength = options.ContextLength }
            : options.SessionOptions;
        Pool = new MiniCpmSessionPool(model, new SessionPoolOptions
        {
            MaxConcurrentSessions = options.MaxConcurrentRequests,
            MaxWaiting = options.MaxQueue,
            MaxCachedConversations = options.MaxCachedConversations,
            SessionOptions = SessionOptions,
        });
        // One session up front: it tells the effective context length and warms the pool.
        using (var lease = Pool.RentAsync().GetAwaiter().GetResult()) ContextLength = lease.Session.Capacity;
        Metrics = new ServerMetrics(ContextLength * options.MaxConcurrentRequests);
        Defaults = GenerationOptions.FromDefaults(model.GenerationDefaults) with { Speculative = options.Speculative };
        Names = new HashSet<string>([modelId, .. options.ModelAliases], StringComparer.Ordinal);
    }

    public MiniCpmModel Model { get; }
    public MiniCpmSessionPool Pool { get; }
    public ServerMetrics Metrics { get; }
    public ServerOptions Options { get; }
    public SessionOptions SessionOptions { get; }
    public string ModelId { get; }
    public HashSet<string> Names { get; }
    public int ContextLength { get; }
    public long Created { get; } = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    public GenerationOptions Defaults { get; }

    public bool IsStopping => _stopping;

    /// <summary>Cancelled when shutdown began ShutdownTimeout ago: generations still running are stopped.</summary>
    public CancellationToken HardStop => _hardStop.Token;

    /// <summary>New requests are refused from now on; running ones get ShutdownTimeout to finish.</summary>
    public void BeginShutdown()
    {
        _stopping = true;
        if (Volatile.Read(ref _disposed) == 0) _hardStop.CancelAfter(Options.ShutdownTimeout);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stopping = true;
        _hardStop.Cancel();
        _hardStop.Dispose();
        Pool.Dispose();
        if (_ownsModel) Model.Dispose();
    }
}

internal sealed class Endpoints(ServerState state, ILogger logger)
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();

    // MiniCPM4's tool-call block: a constrained call is written between these.
    private const string CallStart = "<|tool_call_start|>";
    private const string CallHeaderRest = "\n```python\n";
    private const string CallFooter = "\n```\n<|tool_call_end|>\n";

    private static readonly HashSet<string> KnownPaths = new(StringComparer.Ordinal)
    {
        "/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/tokenize",
        "/detokenize",
    };

    // ---- error handling, authentication, request metrics -------------------------------------------

    public async Task ErrorBoundary(HttpContext context, RequestDelegate next)
    {
        try
        {
            await next(context);
        }
        catch (ApiException ex)
        {
            if (ex.RetryAfterSeconds is { } seconds && !context.Response.HasStarted)
                context.Response.Headers.RetryAfter =
                    seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            await TryWriteErrorAsync(context, ex.StatusCode, ex.Message, ex.Type, ex.Param, ex.Code);
        }
        catch (BadHttpRequestException ex)
        {
            // Kestrel's own limits and malformed framing.
            if (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
                await TryWriteErrorAsync(context, 413, "The request body is too large.", "invalid_request_error", null,
                    "request_too_large");
            else
                await TryWriteErrorAsync(context, ex.StatusCode, "The request could not be read.",
                    "invalid_request_error", null, null);
        }
        catch (Exception) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away: nobody to answer.
        }
        catch (OperationCanceledException) when (state.HardStop.IsCancellationRequested)
        {
            // Shutdown's grace period is over: a stream ends with an error event and [DONE]; otherwise 503.
            await TryWriteErrorAsync(context, 503, "The server shut down before the generation finished.",
                "server_error", null, "server_shutting_down");
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Unhandled error in {Method} {Path}", context.Request.Method, context.Request.Path);
            await TryWriteErrorAsync(context, 500, "The server had an error while processing your request.",
                "server_error", null, null);
        }
        finally
        {
            string path = context.Request.Path.Value ?? "";
            state.Metrics.OnRequest(KnownPaths.Contains(path) ? path : "other", context.Response.StatusCode);
        }
    }

    /// <summary>With API keys configured, every endpoint but /health and the chat page needs
    /// <c>Authorization: Bearer KEY</c>.</summary>
    public Task Authorize(HttpContext context, RequestDelegate next)
    {
        var keys = state.Options.ApiKeys;
        string path = context.Request.Path.Value ?? "";
        if (keys.Count == 0 || path is "/health" or "/") return next(context);
        string header = context.Request.Headers.Authorization.ToString();
        const string bearer = "Bearer ";
        if (!header.StartsWith(bearer, StringComparison.OrdinalIgnoreCase))
            throw new ApiException(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                "invalid_request_error", null, "invalid_api_key");
        var given = Encoding.UTF8.GetBytes(header[bearer.Length..].Trim());
        bool ok = false;
        foreach (var key in keys)
            ok |= CryptographicOperations.FixedTimeEquals(given, Encoding.UTF8.GetBytes(key));
        if (!ok)
            throw new ApiException(401, "Incorrect API key provided.", "invalid_request_error", null,
                "invalid_api_key");
        return next(context);
    }

    private static async Task TryWriteErrorAsync(HttpContext context, int status, string message, string type,
        string? param, string? code)
    {
        var body = new ErrorResponse
        {
            Error = new ErrorDetail { Message = message, Type = type, Param = param, Code = code },
        };
        if (context.Response.HasStarted)
        {
            // A started event stream ends with the error as its last event, then [DONE].
            if (context.Response.ContentType == "text/event-stream")
            {
                try
                {
                    await WriteEventAsync(context, body, ServerJsonContext.Default.ErrorResponse);
                    await WriteDoneAsync(context);
                    return;
                }
                catch (Exception e) when (e is IOException or OperationCanceledException or InvalidOperationException)
                {
                    // Could not write: the connection is gone.
                }
            }
            context.Abort();
            return;
        }
        context.Response.StatusCode = status;
        await WriteJsonAsync(context, body, ServerJsonContext.Default.ErrorResponse);
    }

    private static Task WriteJsonAsync<T>(HttpContext context, T value, JsonTypeInfo<T> typeInfo)
    {
        context.Response.ContentType = "application/json";
        var bytes = JsonSerializer.SerializeToUtf8Bytes(value, typeInfo);
        context.Response.ContentLength = bytes.Length;
        return context.Response.Body.WriteAsync(bytes, context.RequestAborted).AsTask();
    }

    public Task NotFound(HttpContext context) =>
        TryWriteErrorAsync(context, 404, $"Unknown request URL: {context.Request.Method} {context.Request.Path}.",
            "invalid_request_error", null, "unknown_url");

    // ---- simple endpoints ----------------------------------------------------------------------

    public Task Health(HttpContext context) =>
        WriteJsonAsync(context, new HealthResponse { Status = "ok" }, ServerJsonContext.Default.HealthResponse);

    public Task Models(HttpContext context) =>
        WriteJsonAsync(context, new ModelListResponse
        {
            Data = [new ModelDto { Id = state.ModelId, Created = state.Created }],
        }, ServerJsonContext.Default.ModelListResponse);

    public async Task Metrics(HttpContext context)
    {
        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        await state.Metrics.Registry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted);
    }

    public async Task ChatPage(HttpContext context)
    {
        var assembly = typeof(Endpoints).Assembly;
        await using var page = assembly.GetManifestResourceStream("wwwroot/index.html")
                               ?? throw new InvalidOperationException("the chat page is not embedded");
        context.Response.ContentType = "text/html; charset=utf-8";
        context.Response.ContentLength = page.Length;
        await page.CopyToAsync(context.Response.Body, context.RequestAborted);
    }

    public async Task Tokenize(HttpContext context)
    {
        var request = RequestValidator.Parse(await ReadBodyAsync(context), ServerJsonContext.Default.TokenizeRequest);
        if (request.Content is null)
            throw ApiException.BadRequest("Missing required parameter: 'content'.", "content",
                "missing_required_parameter");
        var tokenizer = state.Model.Tokenizer;
        var ids = tokenizer.Encode(request.Content, addBos: request.AddSpecial == true && tokenizer.AddBosByDefault);
        var response = new TokenizeResponse { Tokens = [.. ids] };
        if (request.WithPieces == true)
            response.Pieces = [.. ids.Select(id => new TokenPieceDto { Id = id, Piece = tokenizer.Decode([id]) })];
        await WriteJsonAsync(context, response, ServerJsonContext.Default.TokenizeResponse);
    }

    public async Task Detokenize(HttpContext context)
    {
        var request = RequestValidator.Parse(await ReadBodyAsync(context), ServerJsonContext.Default.DetokenizeRequest);
        if (request.Tokens is null)
            throw ApiException.BadRequest("Missing required parameter: 'tokens'.", "tokens",
                "missing_required_parameter");
        int vocab = state.Model.Tokenizer.VocabSize;
        for (int i = 0; i < request.Tokens.Count; i++)
            if (request.Tokens[i] < 0 || request.Tokens[i] >= vocab)
                throw ApiException.BadRequest(
                    $"Invalid 'tokens[{i}]': {request.Tokens[i]} is not a token id (0 to {vocab - 1}).",
                    $"tokens[{i}]", "invalid_value");
        var text = state.Model.Tokenizer.Decode(request.Tokens.ToArray());
        await WriteJsonAsync(context, new DetokenizeResponse { Content = text },
            ServerJsonContext.Default.DetokenizeResponse);
    }

    /// <summary>The name a response reports: the request's model when the server serves it under that name.</summary>
    private string ServedName(string? requested)
    {
        if (string.IsNullOrEmpty(requested)) return state.ModelId;
        if (state.Names.Contains(requested)) return requested;
        var aliases = state.Options.ModelAliases;
        string also = aliases.Count > 0 ? $" (also as {string.Join(", ", aliases.Select(a => $"'{a}'"))})" : "";
        throw new ApiException(404,
            $"The model '{requested}' does not exist. This server serves '{state.ModelId}'{also}.",
            "invalid_request_error", "model", "model_not_found");
    }

    // ---- completions ---------------------------------------------------------------------------

    public async Task ChatCompletions(HttpContext context)
    {
        var body = await ReadBodyAsync(context);
        var request = RequestValidator.Parse(body, ServerJsonContext.Default.ChatCompletionRequest);
        var messages = RequestValidator.Messages(request);
        // The checkpoint's chat template renders the prompt and decides how tool calls and reasoning are read back.
        var template = state.Model.ChatTemplate;
        var templateOptions = RequestValidator.TemplateOptions(request, state.Options.ChatTemplateArguments);
        var tools = OutputRequests.Tools(request);
        var format = OutputRequests.ResponseFormat(request.ResponseFormat);
        int topLogprobs = OutputRequests.ChatLogprobs(request);
        string rendered;
        try
        {
            rendered = template.Render(messages, templateOptions);
        }
        catch (TemplateRaisedException e)
        {
            throw ApiException.BadRequest($"The model's chat template does not accept this conversation: {e.Message}",
                "messages", "invalid_value");
        }
        catch (TemplateRenderException e)
        {
            throw ApiException.BadRequest($"The model's chat template could not render this conversation: {e.Reason}",
                "messages", "invalid_value");
        }
        // A required call: the reply opens a MiniCPM4 call block and the call is constrained from its first token.
        // An automatic one: a block the model opens is constrained from there on (MiniCPM4's call syntax only).
        bool forcedCall = tools.Mode == ToolMode.Required;
        bool mcpSyntax = template.OutputFormat.ToolCalls == ToolCallSyntax.McpBlock;
        var callConstraint = forcedCall || (tools.Mode == ToolMode.Auto && format is null && mcpSyntax)
            ? tools.CallConstraint()
            : null;
        if (forcedCall) rendered += CallStart + CallHeaderRest;
        var prompt = state.Model.EncodeRenderedChat(rendered);
        bool completionField = request.MaxCompletionTokens is not null;
        var options = RequestValidator.Options(
            new RequestValidator.Sampling(request.MaxCompletionTokens ?? request.MaxTokens,
                completionField ? "max_completion_tokens" : "max_tokens", request.Temperature, request.TopP,
                request.TopK, request.FrequencyPenalty, request.PresencePenalty, request.Seed, request.N, request.Stop),
            prompt.Length, state.ContextLength, state.Options.DefaultMaxTokens, state.Defaults,
            [template.EndOfTurn ?? ChatTemplate.ImEnd]) with
        {
            SkipSpecialTokens = false, // markers may be special tokens
            Constraint = forcedCall ? callConstraint : format,
        };
        string model = ServedName(request.Model);
        var parser = forcedCall
            ? new ChatOutputParser(ChatOutputFormat.MiniCpm4)
            : new ChatOutputParser(template.OutputFormat, template.EndsInsideReasoning(rendered));
        if (forcedCall) parser.Push(CallStart + CallHeaderRest);
        var generation = new Generation
        {
            Endpoint = "chat", Prompt = prompt, Options = options, TopLogprobs = topLogprobs, Rendered = rendered,
            AutoCall = forcedCall ? null : callConstraint, ForcedCall = forcedCall,
            ConversationId = ConversationId(context),
        };

        string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        ChatLogprobsDto? Logprobs(List<TokenLogprob> list) =>
            topLogprobs < 0 ? null : new ChatLogprobsDto { Content = [.. list.Select(ToDto)] };
        string Finish(string reason, int calls) => calls > 0 && reason == "stop" ? "tool_calls" : reason;

        if (request.Stream != true)
        {
            var result = await RunAsync(context, generation, onStart: null, onPiece: null);
            var segments = parser.Push(result.Text);
            segments.AddRange(parser.Flush());
            var text = new StringBuilder();
            var reasoning = new StringBuilder();
            var calls = new List<ToolCallDto>();
            foreach (var segment in segments)
            {
                switch (segment.Kind)
                {
                    case ChatOutputKind.Text: text.Append(segment.Text); break;
                    case ChatOutputKind.Reasoning: reasoning.Append(segment.Text); break;
                    default: calls.AddRange(segment.Calls!.Select(c => ToolCallDtos.From(c, null))); break;
                }
            }
            if (!tools.Parallel && calls.Count > 1) calls.RemoveRange(1, calls.Count - 1);
            var response = new ChatCompletionResponse
            {
                Id = id, Created = created, Model = model,
                Choices =
                [
                    new ChatChoiceDto
                    {
                        Message = new AssistantMessageDto
                        {
                            Content = calls.Count > 0 && text.Length == 0 ? null : text.ToString(),
                            ReasoningContent = reasoning.Length > 0 ? reasoning.ToString() : null,
                            ToolCalls = calls.Count > 0 ? calls : null,
                        },
                        Logprobs = Logprobs(result.Logprobs),
                        FinishReason = Finish(result.FinishReason, calls.Count),
                    },
                ],
                Usage = result.Usage,
            };
            await WriteJsonAsync(context, response, ServerJsonContext.Default.ChatCompletionResponse);
            return;
        }

        var typeInfo = ServerJsonContext.Default.ChatCompletionChunk;
        var pendingLogprobs = new List<TokenLogprob>();
        ChatCompletionChunk Chunk(ChatDeltaDto delta, string? finish)
        {
            // Log probabilities ride on the next chunk written (the parser may hold text back for a while).
            var logprobs = topLogprobs >= 0 && (pendingLogprobs.Count > 0 || finish is not null)
                ? Logprobs(pendingLogprobs)
                : null;
            pendingLogprobs.Clear();
            return new ChatCompletionChunk
            {
                Id = id, Created = created, Model = model,
                Choices = [new ChatChunkChoiceDto { Delta = delta, Logprobs = logprobs, FinishReason = finish }],
            };
        }
        int callCount = 0;
        async Task WriteSegments(List<ChatOutputSegment> segments)
        {
            foreach (var segment in segments)
            {
                ChatDeltaDto delta;
                switch (segment.Kind)
                {
                    case ChatOutputKind.Text: delta = new ChatDeltaDto { Content = segment.Text }; break;
                    case ChatOutputKind.Reasoning: delta = new ChatDeltaDto { ReasoningContent = segment.Text }; break;
                    default:
                        var calls = segment.Calls!.Where(_ => tools.Parallel || callCount == 0)
                            .Select(c => ToolCallDtos.From(c, callCount++)).ToList();
                        if (calls.Count == 0) continue;
                        delta = new ChatDeltaDto { ToolCalls = calls };
                        break;
                }
                await WriteEventAsync(context, Chunk(delta, null), typeInfo);
            }
        }
        var streamed = await RunAsync(context, generation,
            onStart: async () =>
            {
                await StartEventStreamAsync(context);
                await WriteEventAsync(context, Chunk(new ChatDeltaDto { Role = "assistant", Content = "" }, null),
                    typeInfo);
            },
            onPiece: (text, logprob) =>
            {
                if (logprob is { } lp) pendingLogprobs.Add(lp);
                return WriteSegments(parser.Push(text));
            });
        await WriteSegments(parser.Flush());
        await WriteEventAsync(context, Chunk(new ChatDeltaDto(), Finish(streamed.FinishReason, callCount)), typeInfo);
        if (request.StreamOptions?.IncludeUsage == true)
            await WriteEventAsync(context,
                new ChatCompletionChunk { Id = id, Created = created, Model = model, Usage = streamed.Usage },
                typeInfo);
        await WriteDoneAsync(context);
    }

    public async Task Completions(HttpContext context)
    {
        var body = await ReadBodyAsync(context);
        var request = RequestValidator.Parse(body, ServerJsonContext.Default.TextCompletionRequest);
        string text = RequestValidator.Prompt(request);
        if (request.Echo == true)
            throw ApiException.BadRequest("'echo' is not supported.", "echo", "unsupported_value");
        int topLogprobs = OutputRequests.TextLogprobs(request);
        var prompt = state.Model.EncodePrompt(text);
        if (prompt.Length == 0)
            throw ApiException.BadRequest("'prompt' must not be empty.", "prompt", "invalid_value");
        var options = RequestValidator.Options(
            new RequestValidator.Sampling(request.MaxTokens, "max_tokens", request.Temperature, request.TopP,
                request.TopK, request.FrequencyPenalty, request.PresencePenalty, request.Seed, request.N, request.Stop),
            prompt.Length, state.ContextLength, state.Options.DefaultMaxTokens, state.Defaults, []);
        string model = ServedName(request.Model);
        var generation = new Generation
        {
            Endpoint = "completions", Prompt = prompt, Options = options, TopLogprobs = topLogprobs,
            ConversationId = ConversationId(context),
        };

        string id = "cmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var typeInfo = ServerJsonContext.Default.TextCompletionResponse;
        TextCompletionResponse Make(string piece, string? finish, UsageDto? usage, TextLogprobsDto? logprobs) => new()
        {
            Id = id, Created = created, Model = model,
            Choices = [new TextChoiceDto { Text = piece, FinishReason = finish, Logprobs = logprobs }],
            Usage = usage,
        };
        TextLogprobsDto? Logprobs(IEnumerable<(string Text, TokenLogprob Logprob)> tokens, int offset)
        {
            if (topLogprobs < 0) return null;
            var dto = new TextLogprobsDto();
            foreach (var (piece, lp) in tokens)
            {
                dto.Tokens.Add(piece);
                dto.TokenLogprobs.Add(lp.Logprob);
                var top = new Dictionary<string, double>(StringComparer.Ordinal);
                foreach (var (alt, altLp) in lp.Top) top.TryAdd(TokenText(alt), altLp);
                dto.TopLogprobs.Add(top);
                dto.TextOffset.Add(offset);
                offset += piece.Length;
            }
            return dto;
        }

        if (request.Stream != true)
        {
            var result = await RunAsync(context, generation, onStart: null, onPiece: null);
            var logprobs = Logprobs(result.Logprobs.Select(lp => (lp.Text, lp)), 0);
            await WriteJsonAsync(context, Make(result.Text, result.FinishReason, result.Usage, logprobs), typeInfo);
            return;
        }

        int written = 0;
        var streamed = await RunAsync(context, generation,
            onStart: () => StartEventStreamAsync(context),
            onPiece: (piece, logprob) =>
            {
                var logprobs = logprob is { } lp ? Logprobs([(lp.Text, lp)], written) : null;
                written += piece.Length;
                return piece.Length == 0 && logprobs is null
                    ? Task.CompletedTask
                    : WriteEventAsync(context, Make(piece, null, null, logprobs), typeInfo);
            });
        await WriteEventAsync(context, Make("", streamed.FinishReason, null, null), typeInfo);
        if (request.StreamOptions?.IncludeUsage == true)
            await WriteEventAsync(context,
                new TextCompletionResponse { Id = id, Created = created, Model = model, Usage = streamed.Usage },
                typeInfo);
        await WriteDoneAsync(context);
    }

    private static string? ConversationId(HttpContext context) =>
        context.Request.Headers[MiniCpmServer.ConversationHeader].ToString() is { Length: > 0 and <= 256 } id
            ? id
            : null;

    // An alternative token's text: its SentencePiece piece with the word-boundary mark as a space; byte tokens
    // and special tokens as the tokenizer decodes them.
    private string TokenText(int id)
    {
        var tokenizer = state.Model.Tokenizer;
        return tokenizer.IdToToken(id) is { } piece && !(piece.StartsWith("<0x", StringComparison.Ordinal) &&
                                                         piece.EndsWith('>'))
            ? piece.Replace('\u2581', ' ')
            : tokenizer.Decode([id]);
    }

    private TokenLogprobDto ToDto(TokenLogprob lp)
    {
        string text = lp.Text;
        return new TokenLogprobDto
        {
            Token = text, Logprob = lp.Logprob, Bytes = Bytes(text),
            TopLogprobs =
            [
                .. lp.Top.Select(t => TokenText(t.Id) is var alt
                    ? new TopLogprobDto { Token = alt, Logprob = t.Logprob, Bytes = Bytes(alt) }
                    : null!),
            ],
        };
    }

    private static List<int> Bytes(string text) => [.. Encoding.UTF8.GetBytes(text).Select(b => (int)b)];

    /// <summary>What one request generates, and how.</summary>
    private sealed class Generation
    {
        public required string Endpoint { get; init; }
        public required int[] Prompt { get; init; }
        public required GenerationOptions Options { get; init; }
        /// <summary>Alternatives per token in the log probabilities; -1 = no log probabilities.</summary>
        public int TopLogprobs { get; init; } = -1;
        /// <summary>The rendered chat prompt (to continue it when the model opens a tool call).</summary>
        public string? Rendered { get; init; }
        /// <summary>With tool_choice auto: the constraint of a call the model starts.</summary>
        public Constraints.OutputConstraint? AutoCall { get; init; }
        /// <summary>The prompt ends with an opened call block, closed after the constrained call.</summary>
        public bool ForcedCall { get; init; }
        public string? ConversationId { get; init; }
    }

    private sealed record RunResult(string Text, string FinishReason, UsageDto Usage, List<TokenLogprob> Logprobs);

    /// <summary>Admits the request, waits for a slot, prefills and generates; cancelled when the client
    /// disconnects or shutdown's grace period ends.</summary>
    private async Task<RunResult> RunAsync(HttpContext context, Generation generation, Func<Task>? onStart,
        Func<string, TokenLogprob?, Task>? onPiece)
    {
        var metrics = state.Metrics;
        long admitted = Stopwatch.GetTimestamp();
        if (state.IsStopping)
        {
            metrics.OnRejected();
            throw new ApiException(503, "The server is shutting down.", "server_error", null, "server_shutting_down");
        }
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, state.HardStop);
        var ct = linked.Token;
        SessionLease lease;
        metrics.AddWaiting(1);
        try
        {
            lease = await state.Pool.RentAsync(generation.ConversationId, ct);
        }
        catch (SessionPoolFullException)
        {
            metrics.OnRejected();
            throw new ApiException(429, "The server is busy: too many requests are running or queued. Retry later.",
                "rate_limit_exceeded", null, "rate_limit_exceeded")
            {
                RetryAfterSeconds = state.Options.RetryAfterSeconds,
            };
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            metrics.OnCancelled();
            throw;
        }
        finally
        {
            metrics.AddWaiting(-1);
        }

        using (lease)
        {
            metrics.AddRunning(1);
            metrics.OnStarted();
            LogprobScorer? scorer = null;
            var prompt = generation.Prompt;
            var text = new StringBuilder();
            var logprobs = new List<TokenLogprob>();
            int completionTokens = 0;
            long kvTokens = 0, firstToken = 0;
            string finish = "error";
            try
            {
                var session = lease.Session;
                int evaluated = await session.SetPromptAsync(prompt, ct);
                metrics.AddKvTokens(prompt.Length);
                kvTokens = prompt.Length;
                if (generation.TopLogprobs >= 0 && state.Options.ScriptedCompletion is null)
                {
                    scorer = new LogprobScorer(state.Model, state.SessionOptions, generation.TopLogprobs);
                    await Task.Run(() => scorer.SetContext(prompt, ct), ct);
                }
                session.ResetStatistics();
                if (onStart is not null) await onStart();

                async Task Emit(string piece, TokenLogprob? logprob)
                {
                    text.Append(piece);
                    if (logprob is { } scored) logprob = scored with { Text = piece };
                    if (logprob is { } lp) logprobs.Add(lp);
                    if (onPiece is not null) await onPiece(piece, logprob);
                }
                TokenLogprob? Counted(int tokenId)
                {
                    if (tokenId < 0) return null;
                    completionTokens++;
                    kvTokens++;
                    metrics.AddKvTokens(1);
                    if (firstToken == 0) firstToken = Stopwatch.GetTimestamp();
                    return scorer?.Next(tokenId);
                }

                {
                    var options = generation.Options;
                    // Tests may replace the model's free text with a script.
                    var script = state.Options.ScriptedCompletion;
                    var tokens = script is null ? session.GenerateAsync(options, ct) : Scripted(script());
                    // With tool_choice auto, the text is watched for the opening of a call block (in a script too
                    // when the test asks: the model then writes the call, constrained).
                    bool watch = generation.AutoCall is not null &&
                                 (script is null || state.Options.ScriptedCallsAreGenerated);
                    var watched = watch ? new StringBuilder() : null;
                    int opened = -1;
                    await foreach (var token in tokens)
                    {
                        var logprob = Counted(token.Id);
                        var piece = token.Text;
                        if (watched is not null)
                        {
                            int from = Math.Max(0, watched.Length - CallStart.Length);
                            watched.Append(piece);
                            int at = watched.ToString(from, watched.Length - from)
                                .IndexOf(CallStart, StringComparison.Ordinal);
                            if (at >= 0)
                            {
                                opened = from + at + CallStart.Length;
                                await Emit(piece[..(piece.Length - (watched.Length - opened))], logprob);
                                break;
                            }
                        }
                        await Emit(piece, logprob);
                    }
                    var reason = script is null ? session.LastFinishReason : FinishReason.Stop;
                    if (opened >= 0)
                    {
                        // The model opened a call: continue the block with the call constrained to the tools' schemas.
                        await Emit(CallHeaderRest, null);
                        var continued = state.Model.EncodeRenderedChat(
                            generation.Rendered + watched!.ToString(0, opened) + CallHeaderRest);
                        await session.SetPromptAsync(continued, ct);
                        if (scorer is not null) await Task.Run(() => scorer.SetContext(continued, ct), ct);
                        int left = options.MaxTokens - completionTokens;
                        reason = FinishReason.Length;
                        if (left > 0 && continued.Length < state.ContextLength)
                        {
                            var call = options with { Constraint = generation.AutoCall, MaxTokens = left };
                            await foreach (var token in session.GenerateAsync(call, ct))
                                await Emit(token.Text, Counted(token.Id));
                            reason = session.LastFinishReason;
                        }
                    }
                    if ((opened >= 0 || generation.ForcedCall) && reason == FinishReason.Stop)
                        await Emit(CallFooter, null);
                    finish = reason == FinishReason.Stop ? "stop" : "length";
                }

                var stats = state.Model.Draft is not null ? session.Statistics : null;
                long end = Stopwatch.GetTimestamp();
                TimeSpan? ttft = firstToken > 0 ? Stopwatch.GetElapsedTime(admitted, firstToken) : null;
                TimeSpan? perToken = completionTokens > 1
                    ? Stopwatch.GetElapsedTime(firstToken, end) / (completionTokens - 1)
                    : null;
                metrics.OnGeneration(prompt.Length, completionTokens, ttft, perToken, stats);
                metrics.OnCompleted();
                if (generation.ConversationId is { } conversation) lease.Keep(conversation, true);
                var usage = new UsageDto
                {
                    PromptTokens = prompt.Length,
                    CompletionTokens = completionTokens,
                    TotalTokens = prompt.Length + completionTokens,
                    PromptTokensDetails = new PromptTokensDetailsDto { CachedTokens = prompt.Length - evaluated },
                    Speculative = stats is { SpeculativeSteps: > 0 }
                        ? new SpeculativeUsageDto
                        {
                            Rounds = stats.SpeculativeSteps,
                            Tokens = stats.SpeculativeTokens,
                            AcceptedTokensPerRound = Math.Round(stats.MeanAcceptedTokens, 3),
                        }
                        : null,
                };
                LogRequest(context, generation, completionTokens, ttft, perToken, finish);
                return new RunResult(text.ToString(), finish, usage, logprobs);
            }
            catch (Exception) when (ct.IsCancellationRequested)
            {
                metrics.OnCancelled();
                finish = context.RequestAborted.IsCancellationRequested ? "client_disconnected" : "shutdown";
                LogRequest(context, generation, completionTokens, null, null, finish);
                throw;
            }
            catch (Exception)
            {
                lease.Discard();
                metrics.OnFailed();
                LogRequest(context, generation, completionTokens, null, null, finish);
                throw;
            }
            finally
            {
                scorer?.Dispose();
                metrics.AddKvTokens(-kvTokens);
                metrics.AddRunning(-1);
            }
        }
    }

    // A test script's pieces as tokens (one token each).
    private static async IAsyncEnumerable<GeneratedToken> Scripted(IEnumerable<string> pieces)
    {
        foreach (var piece in pieces)
        {
            await Task.Yield();
            yield return new GeneratedToken(0, piece);
        }
    }

    // One structured line per generation: id, tokens, time to first token, speed, finish reason.
    private void LogRequest(HttpContext context, Generation generation, int completionTokens, TimeSpan? ttft,
        TimeSpan? perToken, string finish)
    {
        double tokensPerSecond = perToken is { TotalSeconds: > 0 } t ? 1 / t.TotalSeconds : 0;
        logger.LogInformation(
            "request {RequestId} {Endpoint}: prompt_tokens={PromptTokens} completion_tokens={CompletionTokens} " +
            "ttft_ms={TimeToFirstTokenMs:F1} tokens_per_s={TokensPerSecond:F1} finish={FinishReason}",
            context.TraceIdentifier, generation.Endpoint, generation.Prompt.Length, completionTokens,
            ttft?.TotalMilliseconds ?? 0, tokensPerSecond, finish);
    }

    // ---- I/O helpers -----------------------------------------------------------------------------

    private async Task<byte[]> ReadBodyAsync(HttpContext context)
    {
        long max = state.Options.MaxRequestBytes;
        if (context.Request.ContentLength is { } declared && declared > max)
            throw TooLarge(max);
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        while (true)
        {
            int read = await context.Request.Body.ReadAsync(chunk, context.RequestAborted);
            if (read == 0) break;
            if (buffer.Length + read > max) throw TooLarge(max);
            buffer.Write(chunk, 0, read);
        }
        return buffer.ToArray();
    }

    private static ApiException TooLarge(long max) =>
        new(413, $"The request body is larger than the limit of {max} bytes.", "invalid_request_error", null,
            "request_too_large");

    private static Task StartEventStreamAsync(HttpContext context)
    {
        var response = context.Response;
        response.StatusCode = 200;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        return response.StartAsync(context.RequestAborted);
    }

    private static async Task WriteEventAsync<T>(HttpContext context, T value, JsonTypeInfo<T> typeInfo)
    {
        var writer = context.Response.BodyWriter;
        writer.Write(DataPrefix);
        writer.Write(JsonSerializer.SerializeToUtf8Bytes(value, typeInfo));
        writer.Write(EventEnd);
        await writer.FlushAsync(context.RequestAborted);
    }

    private static async Task WriteDoneAsync(HttpContext context)
    {
        context.Response.BodyWriter.Write(Done);
        await context.Response.BodyWriter.FlushAsync(context.RequestAborted);
    }
}
