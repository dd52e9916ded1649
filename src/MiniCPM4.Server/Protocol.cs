using System.Text.Json;
using System.Text.Json.Serialization;

namespace MiniCPM4.Server;

// Request and response shapes of the OpenAI REST API subset the server speaks. Polymorphic fields
// (message content, stop) stay JsonElement and are validated by RequestValidator.

/// <summary>The fields both completion endpoints share.</summary>
internal abstract class CompletionRequest
{
    [JsonPropertyName("model")] public string? Model { get; set; }
    [JsonPropertyName("max_tokens")] public int? MaxTokens { get; set; }
    [JsonPropertyName("temperature")] public double? Temperature { get; set; }
    [JsonPropertyName("top_p")] public double? TopP { get; set; }
    [JsonPropertyName("top_k")] public int? TopK { get; set; }
    [JsonPropertyName("frequency_penalty")] public double? FrequencyPenalty { get; set; }
    [JsonPropertyName("presence_penalty")] public double? PresencePenalty { get; set; }
    [JsonPropertyName("seed")] public long? Seed { get; set; }
    [JsonPropertyName("n")] public int? N { get; set; }
    [JsonPropertyName("stop")] public JsonElement? Stop { get; set; }
    [JsonPropertyName("stream")] public bool? Stream { get; set; }
    [JsonPropertyName("stream_options")] public StreamOptionsDto? StreamOptions { get; set; }
}

internal sealed class ChatCompletionRequest : CompletionRequest
{
    [JsonPropertyName("messages")] public List<ChatMessageDto?>? Messages { get; set; }
    [JsonPropertyName("max_completion_tokens")] public int? MaxCompletionTokens { get; set; }
    [JsonPropertyName("tools")] public List<JsonElement>? Tools { get; set; }
    [JsonPropertyName("tool_choice")] public JsonElement? ToolChoice { get; set; }
    [JsonPropertyName("parallel_tool_calls")] public bool? ParallelToolCalls { get; set; }
    [JsonPropertyName("response_format")] public JsonElement? ResponseFormat { get; set; }
    [JsonPropertyName("logprobs")] public bool? Logprobs { get; set; }
    [JsonPropertyName("top_logprobs")] public int? TopLogprobs { get; set; }
    [JsonPropertyName("chat_template_kwargs")] public JsonElement? ChatTemplateKwargs { get; set; }
}

internal sealed class TextCompletionRequest : CompletionRequest
{
    [JsonPropertyName("prompt")] public JsonElement? Prompt { get; set; }
    [JsonPropertyName("echo")] public bool? Echo { get; set; }
    [JsonPropertyName("logprobs")] public int? Logprobs { get; set; }
}

internal sealed class ChatMessageDto
{
    [JsonPropertyName("role")] public string? Role { get; set; }
    [JsonPropertyName("content")] public JsonElement? Content { get; set; }
    [JsonPropertyName("name")] public string? Name { get; set; }
    [JsonPropertyName("tool_calls")] public JsonElement? ToolCalls { get; set; }
    [JsonPropertyName("tool_call_id")] public string? ToolCallId { get; set; }
    [JsonPropertyName("reasoning_content")] public string? ReasoningContent { get; set; }
}

internal sealed class FunctionCallDto
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    /// <summary>The arguments as a JSON text, as OpenAI sends them.</summary>
    [JsonPropertyName("arguments")] public string Arguments { get; set; } = "{}";
}

internal sealed class ToolCallDto
{
    [JsonPropertyName("index")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Index { get; set; }

    [JsonPropertyName("id")] public string Id { get; set; } = "";
    [JsonPropertyName("type")] public string Type { get; set; } = "function";
    [JsonPropertyName("function")] public FunctionCallDto Function { get; set; } = new();
}

internal sealed class StreamOptionsDto
{
    [JsonPropertyName("include_usage")] public bool? IncludeUsage { get; set; }
}

internal sealed class UsageDto
{
    [JsonPropertyName("prompt_tokens")] public int PromptTokens { get; set; }
    [JsonPropertyName("completion_tokens")] public int CompletionTokens { get; set; }
    [JsonPropertyName("total_tokens")] public int TotalTokens { get; set; }

    /// <summary>Prompt tokens whose KV cache was reused (a conversation's earlier turns, a shared prefix).</summary>
    [JsonPropertyName("prompt_tokens_details")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public PromptTokensDetailsDto? PromptTokensDetails { get; set; }

    /// <summary>Speculative decoding's rounds and the tokens they produced (null without a draft).</summary>
    [JsonPropertyName("speculative")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SpeculativeUsageDto? Speculative { get; set; }
}

internal sealed class PromptTokensDetailsDto
{
    [JsonPropertyName("cached_tokens")] public int CachedTokens { get; set; }
}

internal sealed class SpeculativeUsageDto
{
    [JsonPropertyName("rounds")] public long Rounds { get; set; }
    [JsonPropertyName("tokens")] public long Tokens { get; set; }
    /// <summary>Tokens per draft-and-verify round: the accepted draft tokens plus the target's own token.</summary>
    [JsonPropertyName("accepted_tokens_per_round")] public double AcceptedTokensPerRound { get; set; }
}

internal class TopLogprobDto
{
    [JsonPropertyName("token")] public string Token { get; set; } = "";
    [JsonPropertyName("logprob")] public double Logprob { get; set; }
    [JsonPropertyName("bytes")] public List<int>? Bytes { get; set; }
}

internal sealed class TokenLogprobDto : TopLogprobDto
{
    [JsonPropertyName("top_logprobs")] public List<TopLogprobDto> TopLogprobs { get; set; } = [];
}

internal sealed class ChatLogprobsDto
{
    [JsonPropertyName("content")] public List<TokenLogprobDto> Content { get; set; } = [];
}

/// <summary>The legacy completions logprobs object.</summary>
internal sealed class TextLogprobsDto
{
    [JsonPropertyName("tokens")] public List<string> Tokens { get; set; } = [];
    [JsonPropertyName("token_logprobs")] public List<double> TokenLogprobs { get; set; } = [];
    [JsonPropertyName("top_logprobs")] public List<Dictionary<string, double>> TopLogprobs { get; set; } = [];
    [JsonPropertyName("text_offset")] public List<int> TextOffset { get; set; } = [];
}

internal sealed class TokenizeRequest
{
    [JsonPropertyName("content")] public string? Content { get; set; }
    [JsonPropertyName("add_special")] public bool? AddSpecial { get; set; }
    [JsonPropertyName("with_pieces")] public bool? WithPieces { get; set; }
}

internal sealed class TokenPieceDto
{
    [JsonPropertyName("id")] public int Id { get; set; }
    [JsonPropertyName("piece")] public string Piece { get; set; } = "";
}

internal sealed class TokenizeResponse
{
    [JsonPropertyName("tokens")] public List<int> Tokens { get; set; } = [];

    [JsonPropertyName("pieces")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<TokenPieceDto>? Pieces { get; set; }
}

internal sealed class DetokenizeRequest
{
    [JsonPropertyName("tokens")] public List<int>? Tokens { get; set; }
}

internal sealed class DetokenizeResponse
{
    [JsonPropertyName("content")] public string Content { get; set; } = "";
}

internal sealed class AssistantMessageDto
{
    [JsonPropertyName("role")] public string Role { get; set; } = "assistant";
    /// <summary>The text; null when the reply is only tool calls.</summary>
    [JsonPropertyName("content")] public string? Content { get; set; } = "";

    [JsonPropertyName("reasoning_content")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ReasoningContent { get; set; }

    [JsonPropertyName("tool_calls")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<ToolCallDto>? ToolCalls { get; set; }
}

internal sealed class ChatChoiceDto
{
    [JsonPropertyName("index")] public int Index { get; set; }
    [JsonPropertyName("message")] public AssistantMessageDto Message { get; set; } = new();
    [JsonPropertyName("logprobs")] public ChatLogprobsDto? Logprobs { get; set; }
    [JsonPropertyName("finish_reason")] public string FinishReason { get; set; } = "stop";
}

/// <summary>The fields every completion object and stream chunk starts with.</summary>
internal abstract class CompletionEnvelope<TChoice>(string objectType)
{
    [JsonPropertyName("id")] public string Id { get; set; } = "";
    [JsonPropertyName("object")] public string Object { get; set; } = objectType;
    [JsonPropertyName("created")] public long Created { get; set; }
    [JsonPropertyName("model")] public string Model { get; set; } = "";
    [JsonPropertyName("choices")] public List<TChoice> Choices { get; set; } = [];
}

internal sealed class ChatCompletionResponse() : CompletionEnvelope<ChatChoiceDto>("chat.completion")
{
    [JsonPropertyName("usage")] public UsageDto Usage { get; set; } = new();
}

internal sealed class ChatDeltaDto
{
    [JsonPropertyName("role")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Role { get; set; }

    [JsonPropertyName("content")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Content { get; set; }

    [JsonPropertyName("reasoning_content")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ReasoningContent { get; set; }

    [JsonPropertyName("tool_calls")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<ToolCallDto>? ToolCalls { get; set; }
}

internal sealed class ChatChunkChoiceDto
{
    [JsonPropertyName("index")] public int Index { get; set; }
    [JsonPropertyName("delta")] public ChatDeltaDto Delta { get; set; } = new();

    [JsonPropertyName("logprobs")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ChatLogprobsDto? Logprobs { get; set; }

    [JsonPropertyName("finish_reason")] public string? FinishReason { get; set; }
}

internal sealed class ChatCompletionChunk() : CompletionEnvelope<ChatChunkChoiceDto>("chat.completion.chunk")
{
    [JsonPropertyName("usage")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public UsageDto? Usage { get; set; }
}

internal sealed class TextChoiceDto
{
    [JsonPropertyName("index")] public int Index { get; set; }
    [JsonPropertyName("text")] public string Text { get; set; } = "";
    [JsonPropertyName("logprobs")] public TextLogprobsDto? Logprobs { get; set; }
    [JsonPropertyName("finish_reason")] public string? FinishReason { get; set; }
}

/// <summary>A <c>text_completion</c> object, whole or as a stream chunk.</summary>
internal sealed class TextCompletionResponse() : CompletionEnvelope<TextChoiceDto>("text_completion")
{
    [JsonPropertyName("usage")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public UsageDto? Usage { get; set; }
}

internal sealed class ModelDto
{
    [JsonPropertyName("id")] public string Id { get; set; } = "";
    [JsonPropertyName("object")] public string Object { get; set; } = "model";
    [JsonPropertyName("created")] public long Created { get; set; }
    [JsonPropertyName("owned_by")] public string OwnedBy { get; set; } = "minicpm4.net";
}

internal sealed class ModelListResponse
{
    [JsonPropertyName("object")] public string Object { get; set; } = "list";
    [JsonPropertyName("data")] public List<ModelDto> Data { get; set; } = [];
}

internal sealed class HealthResponse
{
    [JsonPropertyName("status")] public string Status { get; set; } = "ok";
}

internal sealed class ErrorDetail
{
    [JsonPropertyName("message")] public string Message { get; set; } = "";
    [JsonPropertyName("type")] public string Type { get; set; } = "invalid_request_error";
    [JsonPropertyName("param")] public string? Param { get; set; }
    [JsonPropertyName("code")] public string? Code { get; set; }
}

internal sealed class ErrorResponse
{
    [JsonPropertyName("error")] public ErrorDetail Error { get; set; } = new();
}

[JsonSourceGenerationOptions(
    JsonSerializerDefaults.Web,
    AllowTrailingCommas = false,
    ReadCommentHandling = JsonCommentHandling.Disallow,
    NumberHandling = JsonNumberHandling.Strict,
    PropertyNameCaseInsensitive = false,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(ChatCompletionRequest))]
[JsonSerializable(typeof(TextCompletionRequest))]
[JsonSerializable(typeof(ChatCompletionResponse))]
[JsonSerializable(typeof(ChatCompletionChunk))]
[JsonSerializable(typeof(TextCompletionResponse))]
[JsonSerializable(typeof(ModelListResponse))]
[JsonSerializable(typeof(HealthResponse))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(TokenizeRequest))]
[JsonSerializable(typeof(TokenizeResponse))]
[JsonSerializable(typeof(DetokenizeRequest))]
[JsonSerializable(typeof(DetokenizeResponse))]
internal sealed partial class ServerJsonContext : JsonSerializerContext;

/// <summary>Parsed calls in OpenAI's shape: arguments as a JSON text.</summary>
internal static class ToolCallDtos
{
    public static ToolCallDto From(MiniCPM4.Chat.ChatToolCall call, int? index) => new()
    {
        Index = index,
        Id = call.Id ?? "call_" + Guid.NewGuid().ToString("N")[..24],
        Function = new FunctionCallDto { Name = call.Name, Arguments = ArgumentsJson(call.Arguments) },
    };

    private static string ArgumentsJson(IReadOnlyDictionary<string, object?> arguments)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
            Write(w, arguments, 0);
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static void Write(Utf8JsonWriter w, object? value, int depth)
    {
        if (depth > 64) throw new InvalidOperationException("tool call arguments nest too deeply");
        switch (value)
        {
            case null: w.WriteNullValue(); break;
            case bool b: w.WriteBooleanValue(b); break;
            case string s: w.WriteStringValue(s); break;
            case long l: w.WriteNumberValue(l); break;
            case int i: w.WriteNumberValue(i); break;
            case double d: w.WriteNumberValue(d); break;
            case JsonElement e: e.WriteTo(w); break;
            case IReadOnlyDictionary<string, object?> map:
                w.WriteStartObject();
                foreach (var (k, v) in map)
                {
                    w.WritePropertyName(k);
                    Write(w, v, depth + 1);
                }
                w.WriteEndObject();
                break;
            case IEnumerable<object?> list:
                w.WriteStartArray();
                foreach (var item in list) Write(w, item, depth + 1);
                w.WriteEndArray();
                break;
            default: w.WriteStringValue(
                Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)); break;
        }
    }
}
