using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using MiniCPM4.Chat;
using MiniCPM4.Chat.Jinja;

namespace MiniCPM4.Server;

/// <summary>
/// An OpenAI-compatible HTTP server over one MiniCPM4 model: <c>POST /v1/chat/completions</c>,
/// <c>POST /v1/completions</c> (plain and SSE streaming), <c>GET /v1/models</c>, <c>GET /health</c>.
/// Build it, then <c>Run</c> or <c>StartAsync</c> it (tests host it in-process on port 0).
/// </summary>
public static class MiniCpmServer
{
    /// <summary>Builds the web application (loads the model unless one is given).</summary>
    public static WebApplication Build(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Model is null && string.IsNullOrWhiteSpace(options.ModelDirectory))
            throw new ArgumentException("set ServerOptions.Model or ServerOptions.ModelDirectory", nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxConcurrentRequests, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxQueue);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxRequestBytes, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(options.ContextLength);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.DefaultMaxTokens, 1);

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
        builder.Logging.SetMinimumLevel(options.MinimumLogLevel);

        bool ownsModel = options.Model is null;
        var model = options.Model ?? MiniCpmModel.Load(options.ModelDirectory!, options.LoadOptions);
        ServerState state;
        try
        {
            var metrics = new ServerMetrics();
            var scheduler = new GenerationScheduler(model, new SessionOptions { ContextLength = options.ContextLength },
                options.MaxConcurrentRequests, options.MaxQueue, metrics);
            string modelId = !string.IsNullOrWhiteSpace(options.ModelId)
                ? options.ModelId
                : Path.GetFileName(Path.TrimEndingDirectorySeparator(model.Directory)) is { Length: > 0 } name ? name : "minicpm4";
            state = new ServerState(model, ownsModel, scheduler, metrics, options, modelId);
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
        lifetime.ApplicationStopping.Register(state.Scheduler.BeginShutdown);
        lifetime.ApplicationStopped.Register(state.Dispose);

        var endpoints = new Endpoints(state, lifetime.ApplicationStopping, app.Logger);
        app.Use(endpoints.ErrorBoundary);
        app.MapGet("/health", endpoints.Health);
        app.MapGet("/v1/models", endpoints.Models);
        app.MapPost("/v1/chat/completions", endpoints.ChatCompletions);
        app.MapPost("/v1/completions", endpoints.Completions);
        app.MapFallback(endpoints.NotFound);
        return app;
    }

    /// <summary>The first address the started server listens on, e.g. <c>http://127.0.0.1:41234</c>.</summary>
    public static string GetBaseAddress(WebApplication app)
    {
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses;
        return addresses?.FirstOrDefault()?.TrimEnd('/')
               ?? throw new InvalidOperationException("the server is not listening (call StartAsync first)");
    }

    /// <summary>The counters of a built server.</summary>
    public static ServerMetrics GetMetrics(WebApplication app) => app.Services.GetRequiredService<ServerMetrics>();
}

/// <summary>What the endpoints share; disposed when the host stops.</summary>
internal sealed class ServerState(MiniCpmModel model, bool ownsModel, GenerationScheduler scheduler, ServerMetrics metrics,
    ServerOptions options, string modelId) : IDisposable
{
    public MiniCpmModel Model { get; } = model;
    public GenerationScheduler Scheduler { get; } = scheduler;
    public ServerMetrics Metrics { get; } = metrics;
    public ServerOptions Options { get; } = options;
    public string ModelId { get; } = modelId;
    public long Created { get; } = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    public GenerationOptions Defaults { get; } = GenerationOptions.FromDefaults(model.GenerationDefaults);
    private int _disposed;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Scheduler.Dispose();
        if (ownsModel) Model.Dispose();
    }
}

internal sealed class Endpoints(ServerState state, CancellationToken stopping, ILogger logger)
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();

    // ---- error handling ----------------------------------------------------------------------

    public async Task ErrorBoundary(HttpContext context, RequestDelegate next)
    {
        try
        {
            await next(context);
        }
        catch (ApiException ex)
        {
            if (ex.RetryAfterSeconds is { } seconds && !context.Response.HasStarted)
                context.Response.Headers.RetryAfter = seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            await TryWriteErrorAsync(context, ex.StatusCode, ex.Message, ex.Type, ex.Param, ex.Code);
        }
        catch (BadHttpRequestException ex)
        {
            // Kestrel's own limits and malformed framing.
            if (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
                await TryWriteErrorAsync(context, 413, "The request body is too large.", "invalid_request_error", null,
                    "request_too_large");
            else
                await TryWriteErrorAsync(context, ex.StatusCode, "The request could not be read.", "invalid_request_error",
                    null, null);
        }
        catch (Exception) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away: nobody to answer.
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // Shutdown stopped the generation: a stream just ends (without [DONE]); otherwise 503.
            if (context.Response.HasStarted) return;
            await TryWriteErrorAsync(context, 503, "The server is shutting down.", "server_error", null, "server_shutting_down");
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Unhandled error in {Method} {Path}", context.Request.Method, context.Request.Path);
            if (context.Response.HasStarted) context.Abort();
            else
                await TryWriteErrorAsync(context, 500, "The server had an error while processing your request.",
                    "server_error", null, null);
        }
    }

    private static async Task TryWriteErrorAsync(HttpContext context, int status, string message, string type,
        string? param, string? code)
    {
        if (context.Response.HasStarted)
        {
            context.Abort();
            return;
        }
        context.Response.StatusCode = status;
        var body = new ErrorResponse { Error = new ErrorDetail { Message = message, Type = type, Param = param, Code = code } };
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
        WriteJsonAsync(context, new ModelListResponse { Data = [new ModelDto { Id = state.ModelId, Created = state.Created }] },
            ServerJsonContext.Default.ModelListResponse);

    // ---- completions ---------------------------------------------------------------------------

    public async Task ChatCompletions(HttpContext context)
    {
        var body = await ReadBodyAsync(context);
        var request = RequestValidator.Parse(body, ServerJsonContext.Default.ChatCompletionRequest);
        var messages = RequestValidator.Messages(request);
        // The checkpoint's chat template renders the prompt and decides how tool calls and reasoning are read back.
        var template = state.Model.ChatTemplate;
        var templateOptions = RequestValidator.TemplateOptions(request, state.Options.ChatTemplateArguments);
        string rendered;
        try
        {
            rendered = template.Render(messages, templateOptions);
        }
        catch (TemplateRaisedException e)
        {
            throw ApiException.BadRequest($"The model's chat template does not accept this conversation: {e.Message}", "messages", "invalid_value");
        }
        catch (TemplateRenderException e)
        {
            throw ApiException.BadRequest($"The model's chat template could not render this conversation: {e.Reason}", "messages", "invalid_value");
        }
        var prompt = state.Model.EncodeRenderedChat(rendered);
        bool completionField = request.MaxCompletionTokens is not null;
        var options = RequestValidator.Options(
            new RequestValidator.Sampling(request.MaxCompletionTokens ?? request.MaxTokens,
                completionField ? "max_completion_tokens" : "max_tokens", request.Temperature, request.TopP, request.TopK,
                request.FrequencyPenalty, request.PresencePenalty, request.Seed, request.N, request.Stop),
            prompt.Length, state.Scheduler.ContextLength, state.Options.DefaultMaxTokens, state.Defaults,
            [template.EndOfTurn ?? ChatTemplate.ImEnd]) with { SkipSpecialTokens = false }; // markers may be special tokens
        var parser = new ChatOutputParser(template.OutputFormat, template.EndsInsideReasoning(rendered));

        string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string model = string.IsNullOrEmpty(request.Model) ? state.ModelId : request.Model;

        if (request.Stream != true)
        {
            var result = await RunAsync(context, prompt, options, onStart: null, onText: null);
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
                        FinishReason = calls.Count > 0 && result.FinishReason == "stop" ? "tool_calls" : result.FinishReason,
                    },
                ],
                Usage = result.Usage,
            };
            await WriteJsonAsync(context, response, ServerJsonContext.Default.ChatCompletionResponse);
            return;
        }

        var typeInfo = ServerJsonContext.Default.ChatCompletionChunk;
        ChatCompletionChunk Chunk(ChatDeltaDto delta, string? finish) => new()
        {
            Id = id, Created = created, Model = model,
            Choices = [new ChatChunkChoiceDto { Delta = delta, FinishReason = finish }],
        };
        int callCount = 0;
        async Task WriteSegments(List<ChatOutputSegment> segments)
        {
            foreach (var segment in segments)
            {
                var delta = segment.Kind switch
                {
                    ChatOutputKind.Text => new ChatDeltaDto { Content = segment.Text },
                    ChatOutputKind.Reasoning => new ChatDeltaDto { ReasoningContent = segment.Text },
                    _ => new ChatDeltaDto { ToolCalls = segment.Calls!.Select(c => ToolCallDtos.From(c, callCount++)).ToList() },
                };
                await WriteEventAsync(context, Chunk(delta, null), typeInfo);
            }
        }
        var streamed = await RunAsync(context, prompt, options,
            onStart: async () =>
            {
                await StartEventStreamAsync(context);
                await WriteEventAsync(context, Chunk(new ChatDeltaDto { Role = "assistant", Content = "" }, null), typeInfo);
            },
            onText: text => WriteSegments(parser.Push(text)));
        await WriteSegments(parser.Flush());
        string finishReason = callCount > 0 && streamed.FinishReason == "stop" ? "tool_calls" : streamed.FinishReason;
        await WriteEventAsync(context, Chunk(new ChatDeltaDto(), finishReason), typeInfo);
        if (request.StreamOptions?.IncludeUsage == true)
            await WriteEventAsync(context, new ChatCompletionChunk { Id = id, Created = created, Model = model, Usage = streamed.Usage },
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
        var prompt = state.Model.EncodePrompt(text);
        if (prompt.Length == 0)
            throw ApiException.BadRequest("'prompt' must not be empty.", "prompt", "invalid_value");
        var options = RequestValidator.Options(
            new RequestValidator.Sampling(request.MaxTokens, "max_tokens", request.Temperature, request.TopP, request.TopK,
                request.FrequencyPenalty, request.PresencePenalty, request.Seed, request.N, request.Stop),
            prompt.Length, state.Scheduler.ContextLength, state.Options.DefaultMaxTokens, state.Defaults, []);

        string id = "cmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string model = string.IsNullOrEmpty(request.Model) ? state.ModelId : request.Model;
        var typeInfo = ServerJsonContext.Default.TextCompletionResponse;
        TextCompletionResponse Make(string piece, string? finish, UsageDto? usage) => new()
        {
            Id = id, Created = created, Model = model,
            Choices = [new TextChoiceDto { Text = piece, FinishReason = finish }],
            Usage = usage,
        };

        if (request.Stream != true)
        {
            var result = await RunAsync(context, prompt, options, onStart: null, onText: null);
            await WriteJsonAsync(context, Make(result.Text, result.FinishReason, result.Usage), typeInfo);
            return;
        }

        var streamed = await RunAsync(context, prompt, options,
            onStart: () => StartEventStreamAsync(context),
            onText: piece => WriteEventAsync(context, Make(piece, null, null), typeInfo));
        await WriteEventAsync(context, Make("", streamed.FinishReason, null), typeInfo);
        if (request.StreamOptions?.IncludeUsage == true)
            await WriteEventAsync(context, new TextCompletionResponse { Id = id, Created = created, Model = model, Usage = streamed.Usage },
                typeInfo);
        await WriteDoneAsync(context);
    }

    private readonly record struct RunResult(string Text, string FinishReason, UsageDto Usage);

    /// <summary>Admits the request, waits for a slot, prefills and generates; cancelled when the client
    /// disconnects or the server stops.</summary>
    private async Task<RunResult> RunAsync(HttpContext context, int[] prompt, GenerationOptions options,
        Func<Task>? onStart, Func<string, Task>? onText)
    {
        var metrics = state.Metrics;
        switch (state.Scheduler.TryAdmit(out var ticket))
        {
            case GenerationScheduler.Admission.QueueFull:
                metrics.OnRejected();
                throw new ApiException(429,
                    "The server is busy: too many requests are running or queued. Retry later.",
                    "rate_limit_exceeded", null, "rate_limit_exceeded") { RetryAfterSeconds = state.Options.RetryAfterSeconds };
            case GenerationScheduler.Admission.ShuttingDown:
                metrics.OnRejected();
                throw new ApiException(503, "The server is shutting down.", "server_error", null, "server_shutting_down");
        }

        using (ticket)
        using (var linked = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, stopping))
        {
            var ct = linked.Token;
            try
            {
                var session = await ticket!.AcquireAsync(ct);
                metrics.OnStarted();
                await Task.Run(() => session.SetPrompt(prompt, ct), ct);
                if (onStart is not null) await onStart();
                var text = new StringBuilder();
                int completionTokens = 0;
                if (state.Options.ScriptedCompletion is { } script)
                {
                    foreach (var piece in script())
                    {
                        completionTokens++;
                        text.Append(piece);
                        if (onText is not null) await onText(piece);
                    }
                }
                else
                {
                    await foreach (var token in session.GenerateAsync(options, ct))
                    {
                        if (token.Id >= 0) completionTokens++;
                        if (token.Text.Length == 0) continue;
                        text.Append(token.Text);
                        if (onText is not null) await onText(token.Text);
                    }
                }
                string finish = state.Options.ScriptedCompletion is not null || session.LastFinishReason == FinishReason.Stop ? "stop" : "length";
                metrics.OnCompleted();
                return new RunResult(text.ToString(), finish, new UsageDto
                {
                    PromptTokens = prompt.Length,
                    CompletionTokens = completionTokens,
                    TotalTokens = prompt.Length + completionTokens,
                });
            }
            catch (Exception) when (ct.IsCancellationRequested)
            {
                metrics.OnCancelled();
                if (context.RequestAborted.IsCancellationRequested)
                    logger.LogInformation("Client disconnected: generation cancelled");
                throw;
            }
            catch (Exception)
            {
                ticket!.DiscardSession = true;
                metrics.OnFailed();
                throw;
            }
        }
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
