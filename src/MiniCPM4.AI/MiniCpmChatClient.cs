using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.AI;
using MiniCPM4.Chat;
using MiniCPM4.Constraints;
using MiniCPM4.Tokenization;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace MiniCPM4.AI;

/// <summary>
/// An <see cref="IChatClient"/> over a local <see cref="MiniCpmModel"/>.
/// </summary>
/// <remarks>
/// <para><b>Concurrency.</b> All members are thread-safe. Requests are served by a pool of at most
/// <see cref="MiniCpmChatClientOptions.MaxConcurrentSessions"/> sessions; requests beyond that wait in a first-in,
/// first-out queue (the wait is cancellable). A conversation's session is used by one request at a time.</para>
/// <para><b>Conversations.</b> Every response carries a <see cref="ChatResponse.ConversationId"/> (a new one when the
/// request had none). The client keeps the session (KV cache) and the history of the last
/// <see cref="MiniCpmChatClientOptions.MaxCachedConversations"/> conversations. A request naming a cached conversation
/// reuses the KV cache for the common token prefix and only prefills the rest; the number of reused tokens is reported
/// as
/// <see cref="UsageDetails.CachedInputTokenCount"/>. Such a request may carry the whole history (when it starts with
/// the
/// stored history, or with the same first message, it replaces it) or only the new messages (they are appended to the
/// stored history, as <c>FunctionInvokingChatClient</c> does once a response has a conversation id).</para>
/// <para><b>Options.</b> <see cref="ChatOptions.Instructions"/>, Temperature, TopP, TopK, Seed, MaxOutputTokens,
/// StopSequences, FrequencyPenalty, PresencePenalty, Tools and ToolMode are honoured. A <see cref="GenerationOptions"/>
/// returned by <see cref="ChatOptions.RawRepresentationFactory"/> replaces the sampling settings mapped from
/// ChatOptions
/// (stop sequences are still added). A JSON ResponseFormat constrains the reply token by token: <c>Json</c> to a JSON
/// object, <c>ForJsonSchema</c> to JSON valid under the schema (see <see cref="OutputConstraint"/>). A required tool
/// (<c>ChatToolMode.RequireAny</c> / <c>RequireSpecific</c>) makes the reply one MiniCPM4 tool-call block whose call is
/// constrained to the function's parameters schema. Other options are ignored, with one log line.</para>
/// <para><b>Chat template.</b> Prompts are rendered with the checkpoint's chat template (<see
/// cref="MiniCpmModel.ChatTemplate"/>;
/// see <see cref="MiniCpmPromptFormatter.Render"/>). Template variables come from
/// <see cref="MiniCpmChatClientOptions.ChatTemplateArguments"/> and, per request, from
/// <see cref="ChatOptions.AdditionalProperties"/>: <c>"enable_thinking"</c> (a bool) and <c>"chat_template_kwargs"</c>
/// (a dictionary).</para>
/// <para><b>Tools.</b> AIFunctions reach the template as transformers' JSON schemas (or, when the template does not
/// render
/// tools, are described in the system turn); the model's tool calls, in the syntax the template uses, become
/// <see cref="FunctionCallContent"/> with finish reason ToolCalls, and its reasoning (<c>&lt;think&gt;</c> or thought
/// blocks) becomes <see cref="TextReasoningContent"/> (see <see cref="ChatOutputParser"/>).</para>
/// </remarks>
public sealed class MiniCpmChatClient : IChatClient
{
    private readonly MiniCpmModel _model;
    private readonly MiniCpmChatClientOptions _options;
    private readonly ChatClientMetadata _metadata;
    private readonly string _modelId;
    private readonly MiniCpmSessionPool _pool;
    private readonly IReplyGenerator _generator;
    private readonly ConcurrentDictionary<string, bool> _loggedOnce = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <summary>Creates a client over a loaded model (the client does not own or dispose the model).</summary>
    public MiniCpmChatClient(MiniCpmModel model, MiniCpmChatClientOptions? options = null)
        : this(model, options, SessionReplyGenerator.Instance)
    {
    }

    internal MiniCpmChatClient(MiniCpmModel model, MiniCpmChatClientOptions? options, IReplyGenerator generator)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(generator);
        _model = model;
        _options = options ?? new MiniCpmChatClientOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.MaxConcurrentSessions, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(_options.MaxCachedConversations, nameof(options));
        _modelId = _options.ModelId ?? Path.GetFileName(model.Directory.TrimEnd(Path.DirectorySeparatorChar));
        _metadata = new ChatClientMetadata("minicpm", new Uri(model.Directory), _modelId);
        // The pool keeps each conversation's session (KV cache) with its history as the cached state.
        _pool = new MiniCpmSessionPool(model, new SessionPoolOptions
        {
            MaxConcurrentSessions = _options.MaxConcurrentSessions,
            MaxCachedConversations = _options.MaxCachedConversations,
            SessionOptions = new SessionOptions { ContextLength = _options.ContextLength },
            ConversationEvicted = _options.Log is { } log
                ? id => log($"conversation {id} evicted from the cache")
                : null,
        });
        _generator = generator;
    }

    /// <summary>Conversations whose session and history are cached now.</summary>
    public int CachedConversationCount
    {
        get => _pool.CachedConversationCount;
    }

    /// <inheritdoc />
    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default) =>
        GetStreamingResponseAsync(messages, options, cancellationToken).ToChatResponseAsync(cancellationToken);

    /// <inheritdoc />
    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages,
        ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var list = messages.ToList();
        if (list.Any(m => m is null)) throw new ArgumentException("A message is null.", nameof(messages));
        return StreamAsync(list, options, cancellationToken);
    }

    private async IAsyncEnumerable<ChatResponseUpdate> StreamAsync(List<ChatMessage> incoming, ChatOptions? options,
        [EnumeratorCancellation] CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        var generation = MapOptions(options);
        string conversationId = options?.ConversationId ?? "minicpm-" + Guid.NewGuid().ToString("N");
        string modelId = options?.ModelId ?? _modelId;
        string responseId = "resp_" + Guid.NewGuid().ToString("N");
        string messageId = "msg_" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;

        ChatResponseUpdate Update(IList<AIContent> contents) => new(ChatRole.Assistant, contents)
        {
            ResponseId = responseId,
            MessageId = messageId,
            ConversationId = conversationId,
            ModelId = modelId,
            CreatedAt = created,
        };

        using var lease = await _pool.RentAsync(options?.ConversationId, ct).ConfigureAwait(false);
        {
            var history = ResolveHistory(lease.State as List<ChatMessage>, incoming);
            // The checkpoint's chat template renders the prompt and decides what the output parser looks for.
            var prompt =
                MiniCpmPromptFormatter.Render(_model.ChatTemplate, history, options, _options.ChatTemplateArguments);
            // A required tool call: the reply opens a MiniCPM4 call block, the call itself is constrained to the
            // functions' parameter schemas (see MapOptions), and the block is closed after it.
            bool forcedCall = generation.Constraint is { Kind: ConstraintKind.ToolCall };
            if (forcedCall) prompt += CallBlockHeader;
            var tokens = _model.EncodeRenderedChat(prompt);

            var filter = forcedCall
                ? new ToolCallStreamFilter(ChatOutputFormat.MiniCpm4)
                : new ToolCallStreamFilter(_model.ChatTemplate.OutputFormat,
                    _model.ChatTemplate.EndsInsideReasoning(prompt));
            if (forcedCall) filter.Push(CallBlockHeader);
            var text = new StringBuilder();
            var reasoning = new StringBuilder();
            var calls = new List<FunctionCallContent>();
            int outputTokens = 0, evaluated;
            FinishReason? finish;

            List<ChatResponseUpdate> ToUpdates(List<Segment> segments)
            {
                var updates = new List<ChatResponseUpdate>(segments.Count);
                foreach (var s in segments)
                {
                    switch (s.Kind)
                    {
                        case SegmentKind.Text:
                            text.Append(s.Text);
                            updates.Add(Update([new TextContent(s.Text)]));
                            break;
                        case SegmentKind.Reasoning:
                            reasoning.Append(s.Text);
                            updates.Add(Update([new TextReasoningContent(s.Text)]));
                            break;
                        default:
                            calls.AddRange(s.Calls!);
                            updates.Add(Update([.. s.Calls!]));
                            break;
                    }
                }
                return updates;
            }

            var request = new ReplyRequest(lease.Session, lease.IsCachedConversation, prompt, tokens, generation);
            await foreach (var token in _generator.GenerateAsync(request, ct).ConfigureAwait(false))
            {
                if (token.Id >= 0) outputTokens++;
                if (token.Text.Length == 0) continue;
                foreach (var u in ToUpdates(filter.Push(token.Text))) yield return u;
            }
            evaluated = request.Evaluated;
            finish = request.FinishReason;
            if (forcedCall && finish == FinishReason.Stop)
                foreach (var u in ToUpdates(filter.Push(CallBlockFooter))) yield return u;
            foreach (var u in ToUpdates(filter.Flush())) yield return u;

            var usage = new UsageDetails
            {
                InputTokenCount = tokens.Length,
                OutputTokenCount = outputTokens,
                TotalTokenCount = tokens.Length + outputTokens,
                CachedInputTokenCount = tokens.Length - evaluated,
                AdditionalCounts = new() { ["PrefillTokenCount"] = evaluated },
            };
            var final = Update([new UsageContent(usage)]);
            final.FinishReason = calls.Count > 0 ? ChatFinishReason.ToolCalls
                : finish is FinishReason.Length or FinishReason.ContextFull ? ChatFinishReason.Length
                : ChatFinishReason.Stop;

            var reply = new List<AIContent>();
            if (reasoning.Length > 0) reply.Add(new TextReasoningContent(reasoning.ToString()));
            if (text.Length > 0) reply.Add(new TextContent(text.ToString()));
            reply.AddRange(calls);
            lease.Keep(conversationId, new List<ChatMessage>([.. history, new ChatMessage(ChatRole.Assistant, reply)]));
            yield return final;
        }
    }

    private GenerationOptions MapOptions(ChatOptions? options)
    {
        GenerationOptions g;
        if (options?.RawRepresentationFactory?.Invoke(this) is GenerationOptions typed)
        {
            g = typed;
        }
        else
        {
            g = _options.DefaultGenerationOptions ?? GenerationOptions.FromDefaults(_model.GenerationDefaults);
            if (options is not null)
            {
                if (options.Temperature is float t) g = g with { Temperature = t };
                if (options.TopP is float p) g = g with { TopP = p };
                if (options.TopK is int k) g = g with { TopK = k };
                if (options.Seed is long seed) g = g with { Seed = unchecked((ulong)seed) };
                if (options.MaxOutputTokens is int max) g = g with { MaxTokens = max };
                if (options.FrequencyPenalty is float f) g = g with { FrequencyPenalty = f };
                if (options.PresencePenalty is float pp) g = g with { PresencePenalty = pp };
            }
        }
        if (options is not null)
        {
            if (options.ResponseFormat is ChatResponseFormatJson json && g.Constraint is null)
                g = g with { Constraint = ConstraintFor(json) };
            if (options.ToolMode is RequiredChatToolMode required && g.Constraint is null)
                g = g with { Constraint = ToolCallConstraint(options, required) };
            if (options.Reasoning is not null) LogOnce("Reasoning", "ChatOptions.Reasoning is not supported; ignored");
            if (options.AllowBackgroundResponses == true)
                LogOnce("AllowBackgroundResponses", "ChatOptions.AllowBackgroundResponses is not supported; ignored");
            if (options.ContinuationToken is not null)
                LogOnce("ContinuationToken", "ChatOptions.ContinuationToken is not supported; ignored");
        }
        var stops = new List<string>(g.StopStrings ?? []);
        if (options?.StopSequences is { } sequences) stops.AddRange(sequences.Where(s => !string.IsNullOrEmpty(s)));
        stops.Add(_model.ChatTemplate.EndOfTurn ?? "<|im_end|>");
        // Special tokens stay in the text: MiniCPM4's tool-call and thought markers may be special tokens.
        return g with { StopStrings = stops, SkipSpecialTokens = false };
    }

    // ChatResponseFormat.Json: a JSON object; ForJsonSchema: JSON valid under the schema (so GetResponseAsync<T>
    // always gets text that deserializes), with only the properties the schema declares (as OpenAI's strict mode
    // requires of its schemas). A schema the engine cannot enforce fails the request.
    private static OutputConstraint ConstraintFor(ChatResponseFormatJson format) =>
        format.Schema is { } schema
            ? OutputConstraint.JsonSchemaDeclaredProperties(schema.GetRawText())
            : OutputConstraint.JsonSchema("""{"type":"object"}""");

    private static readonly string CallBlockHeader = MiniCpmToolCallParser.ToolCallStart + "\n```python\n";
    private static readonly string CallBlockFooter = "\n```\n" + MiniCpmToolCallParser.ToolCallEnd + "\n";

    // ChatToolMode.RequireAny / RequireSpecific: the reply is one call of the required function(s), its keyword
    // arguments valid under the function's parameters schema.
    private static OutputConstraint ToolCallConstraint(ChatOptions options, RequiredChatToolMode required)
    {
        var functions = options.Tools?.OfType<AIFunctionDeclaration>().ToList() ?? [];
        if (required.RequiredFunctionName is { } name) functions = functions.Where(f => f.Name == name).ToList();
        if (functions.Count == 0)
            throw new ArgumentException(required.RequiredFunctionName is { } missing
                ? $"ChatToolMode requires the function '{missing}', but ChatOptions.Tools has no function of that name"
                : "ChatToolMode requires a function call, but ChatOptions.Tools has no function", nameof(options));
        return OutputConstraint.ToolCall(functions.Select(f => (f.Name, f.JsonSchema)));
    }

    private void LogOnce(string key, string message)
    {
        if (_options.Log is { } log && _loggedOnce.TryAdd(key, true)) log(message);
    }

    /// <summary>The conversation's history for this request: the request's messages when they repeat the stored history
    /// (or start like it), otherwise the stored history followed by them.</summary>
    private static List<ChatMessage> ResolveHistory(List<ChatMessage>? stored, List<ChatMessage> incoming)
    {
        if (stored is null || stored.Count == 0) return incoming;
        if (incoming.Count == 0) return stored;
        string firstIncoming = MiniCpmPromptFormatter.RenderMessage(incoming[0]);
        if (firstIncoming == MiniCpmPromptFormatter.RenderMessage(stored[0])) return incoming;
        return [.. stored, .. incoming];
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType == typeof(MiniCpmModel)) return _model;
        if (serviceType == typeof(MiniCpmTokenizer)) return _model.Tokenizer;
        if (serviceType == typeof(MiniCpmChatClientOptions)) return _options;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <summary>Frees the cached sessions. The model is not disposed. Calls still running free theirs when they
    /// end.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _pool.Dispose();
    }
}
