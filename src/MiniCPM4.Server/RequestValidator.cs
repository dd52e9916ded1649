using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using MiniCPM4.Chat;

namespace MiniCPM4.Server;

/// <summary>Parses request bodies and checks every field before any work is queued.</summary>
internal static class RequestValidator
{
    private static readonly HashSet<string> Roles =
        new(StringComparer.Ordinal) { "system", "developer", "user", "assistant", "tool" };

    /// <summary>Deserializes a JSON object, turning syntax and type errors into 400s that name the field.</summary>
    public static T Parse<T>(byte[] body, JsonTypeInfo<T> typeInfo) where T : class
    {
        if (body.Length == 0)
            throw ApiException.BadRequest("The request body is empty; expected a JSON object.");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body);
        }
        catch (JsonException)
        {
            throw ApiException.BadRequest("We could not parse the JSON body of your request: it is not valid JSON.");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw ApiException.BadRequest(
                    $"The request body must be a JSON object, not {Describe(document.RootElement.ValueKind)}.");
            try
            {
                return document.Deserialize(typeInfo)
                       ?? throw ApiException.BadRequest("The request body must be a JSON object.");
            }
            catch (JsonException ex)
            {
                string? param = PathToParam(ex.Path);
                throw ApiException.BadRequest(
                    param is null ? "The request body has a field of the wrong type." : $"Invalid type for '{param}'.",
                    param, "invalid_type");
            }
        }
    }

    // "$.messages[0].role" -> "messages[0].role"; "$" -> null.
    internal static string? PathToParam(string? path)
    {
        if (string.IsNullOrEmpty(path) || path == "$") return null;
        var p = path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : path.TrimStart('$');
        return p.Length == 0 ? null : p;
    }

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

    public static List<ChatMessage> Messages(ChatCompletionRequest request)
    {
        if (request.Messages is null)
            throw ApiException.BadRequest("Missing required parameter: 'messages'.", "messages",
                "missing_required_parameter");
        if (request.Messages.Count == 0)
            throw ApiException.BadRequest("'messages' must contain at least one message.", "messages", "empty_array");
        var result = new List<ChatMessage>(request.Messages.Count);
        for (int i = 0; i < request.Messages.Count; i++)
        {
            var m = request.Messages[i]
                    ?? throw ApiException.BadRequest($"'messages[{i}]' must be an object.", $"messages[{i}]",
                        "invalid_type");
            if (string.IsNullOrEmpty(m.Role))
                throw ApiException.BadRequest($"Missing required parameter: 'messages[{i}].role'.",
                    $"messages[{i}].role",
                    "missing_required_parameter");
            if (!Roles.Contains(m.Role))
                throw ApiException.BadRequest(
                    $"Invalid value '{m.Role}' for 'messages[{i}].role': supported roles are system, developer, " +
                        $"user, assistant and tool.",
                    $"messages[{i}].role", "invalid_value");
            string role = m.Role == "developer" ? "system" : m.Role;
            var toolCalls = role == "assistant" ? ToolCalls(m.ToolCalls, $"messages[{i}].tool_calls") : null;
            bool contentOptional = toolCalls is { Count: > 0 }
                && m.Content is null or { ValueKind: JsonValueKind.Null };
            result.Add(new ChatMessage(role, contentOptional ? "" : Content(m.Content, $"messages[{i}].content"))
            {
                ToolCalls = toolCalls,
                ToolCallId = role == "tool" ? m.ToolCallId : null,
                Name = role == "tool" ? m.Name : null,
                ReasoningContent = role == "assistant" ? m.ReasoningContent : null,
            });
        }
        return result;
    }

    /// <summary>An assistant message's tool_calls: [{id, type: "function", function: {name, arguments}}], arguments a
    /// JSON text (as OpenAI sends them) or a JSON object, holding an object.</summary>
    private static List<ChatToolCall>? ToolCalls(JsonElement? value, string param)
    {
        if (value is not { } calls || calls.ValueKind == JsonValueKind.Null) return null;
        if (calls.ValueKind != JsonValueKind.Array)
            throw ApiException.BadRequest($"Invalid type for '{param}': expected an array.", param, "invalid_type");
        var result = new List<ChatToolCall>();
        int index = 0;
        foreach (var call in calls.EnumerateArray())
        {
            string p = $"{param}[{index++}]";
            if (call.ValueKind != JsonValueKind.Object || !call.TryGetProperty("function", out var fn)
                || fn.ValueKind != JsonValueKind.Object)
                throw ApiException.BadRequest($"Invalid '{p}': expected an object with a 'function' object.", p,
                    "invalid_type");
            if (!fn.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String
                || name.GetString()!.Length == 0)
                throw ApiException.BadRequest($"Missing required parameter: '{p}.function.name'.", $"{p}.function.name",
                    "missing_required_parameter");
            JsonElement arguments = default;
            bool ok = fn.TryGetProperty("arguments", out var a);
            if (ok && a.ValueKind == JsonValueKind.String)
            {
                try
                {
                    using var doc = JsonDocument.Parse(a.GetString()!);
                    arguments = doc.RootElement.Clone();
                }
                catch (JsonException)
                {
                    ok = false;
                }
            }
            else if (ok)
            {
                arguments = a;
            }
            if (!ok || arguments.ValueKind != JsonValueKind.Object)
                throw ApiException.BadRequest(
                    $"Invalid '{p}.function.arguments': expected a JSON object (as a string).",
                    $"{p}.function.arguments", "invalid_value");
            var args =
                arguments.EnumerateObject().ToDictionary(x => x.Name, x => (object?)x.Value.Clone(),
                StringComparer.Ordinal);
            string? id = call.TryGetProperty("id", out var idValue) && idValue.ValueKind == JsonValueKind.String
                ? idValue.GetString() : null;
            result.Add(new ChatToolCall(name.GetString()!, args, id));
        }
        return result;
    }

    /// <summary>The chat template variables of a request: the server's defaults, then chat_template_kwargs; tools
    /// unless
    /// tool_choice is "none".</summary>
    public static ChatTemplateOptions TemplateOptions(ChatCompletionRequest request, IReadOnlyDictionary<string,
        object?>? defaults)
    {
        var arguments = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (defaults is not null)
            foreach (var (k, v) in defaults) arguments[k] = v;
        if (request.ChatTemplateKwargs is { } kwargs && kwargs.ValueKind != JsonValueKind.Null)
        {
            if (kwargs.ValueKind != JsonValueKind.Object)
                throw ApiException.BadRequest("Invalid type for 'chat_template_kwargs': expected an object.",
                    "chat_template_kwargs", "invalid_type");
            foreach (var p in kwargs.EnumerateObject()) arguments[p.Name] = p.Value.Clone();
        }
        List<JsonElement>? tools = null;
        if (request.Tools is { Count: > 0 } given)
        {
            for (int i = 0; i < given.Count; i++)
            {
                var t = given[i];
                if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("function", out var fn)
                    || fn.ValueKind != JsonValueKind.Object ||
                    !fn.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String)
                    throw ApiException.BadRequest(
                        $"Invalid 'tools[{i}]': expected {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}.",
                        $"tools[{i}]", "invalid_value");
            }
            bool none = request.ToolChoice is { ValueKind: JsonValueKind.String } choice
                && choice.GetString() == "none";
            if (!none) tools = given;
        }
        return new ChatTemplateOptions { Tools = tools, Arguments = arguments.Count > 0 ? arguments : null };
    }

    private static string Content(JsonElement? content, string param)
    {
        if (content is not { } c || c.ValueKind == JsonValueKind.Null)
            throw ApiException.BadRequest($"Missing required parameter: '{param}'.", param,
                "missing_required_parameter");
        if (c.ValueKind == JsonValueKind.String) return c.GetString()!;
        if (c.ValueKind != JsonValueKind.Array)
            throw ApiException.BadRequest($"Invalid type for '{param}': expected a string or an array of text parts.",
                param,
                "invalid_type");
        var sb = new StringBuilder();
        int index = 0;
        foreach (var part in c.EnumerateArray())
        {
            string partParam = $"{param}[{index}]";
            if (part.ValueKind != JsonValueKind.Object)
                throw ApiException.BadRequest($"Invalid type for '{partParam}': expected an object.", partParam,
                    "invalid_type");
            if (!part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
                throw ApiException.BadRequest($"Missing required parameter: '{partParam}.type'.", $"{partParam}.type",
                    "missing_required_parameter");
            if (type.GetString() != "text")
                throw ApiException.BadRequest(
                    $"Invalid value '{type.GetString()}' for '{partParam}.type': only text parts are supported.",
                    $"{partParam}.type", "invalid_value");
            if (!part.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                throw ApiException.BadRequest($"Invalid type for '{partParam}.text': expected a string.",
                    $"{partParam}.text",
                    "invalid_type");
            if (index > 0) sb.Append('\n');
            sb.Append(text.GetString());
            index++;
        }
        if (index == 0)
            throw ApiException.BadRequest($"'{param}' must contain at least one text part.", param, "empty_array");
        return sb.ToString();
    }

    public static string Prompt(TextCompletionRequest request)
    {
        if (request.Prompt is not { } p || p.ValueKind == JsonValueKind.Null)
            throw ApiException.BadRequest("Missing required parameter: 'prompt'.", "prompt",
                "missing_required_parameter");
        if (p.ValueKind == JsonValueKind.String) return p.GetString()!;
        if (p.ValueKind == JsonValueKind.Array && p.GetArrayLength() == 1 && p[0].ValueKind == JsonValueKind.String)
            return p[0].GetString()!;
        throw ApiException.BadRequest("Invalid type for 'prompt': expected a string (one prompt per request).",
            "prompt",
            "invalid_type");
    }

    /// <summary>Sampling fields common to both endpoints.</summary>
    public readonly record struct Sampling(
        int? MaxTokens, string MaxTokensParam, double? Temperature, double? TopP, int? TopK, double? FrequencyPenalty,
        double? PresencePenalty, long? Seed, int? N, JsonElement? Stop);

    /// <summary>Checks the sampling fields and the context budget; returns the generation options.</summary>
    public static GenerationOptions Options(Sampling s, int promptTokens, int contextLength, int defaultMaxTokens,
        GenerationOptions defaults, IReadOnlyList<string> extraStops)
    {
        if (s.N is { } n && n != 1)
            throw ApiException.BadRequest("Only n = 1 is supported.", "n", "invalid_value");
        if (s.MaxTokens is { } max)
        {
            if (max < 1)
                throw ApiException.BadRequest($"Invalid '{s.MaxTokensParam}': {max}; it must be at least 1.",
                    s.MaxTokensParam,
                    "invalid_value");
            if (max > contextLength)
                throw ApiException.BadRequest(
                    $"Invalid '{s.MaxTokensParam}': {max} is more than this model's context length of " +
                        $"{contextLength} tokens.",
                    s.MaxTokensParam, "invalid_value");
        }
        if (s.Temperature is { } t && !(t >= 0 && t <= 2))
            throw ApiException.BadRequest($"Invalid 'temperature': {t}; it must be between 0 and 2.", "temperature",
                "invalid_value");
        if (s.TopP is { } topP && !(topP > 0 && topP <= 1))
            throw ApiException.BadRequest($"Invalid 'top_p': {topP}; it must be greater than 0 and at most 1.", "top_p",
                "invalid_value");
        if (s.TopK is { } topK && topK < 0)
            throw ApiException.BadRequest($"Invalid 'top_k': {topK}; it must be at least 0.", "top_k", "invalid_value");
        if (s.FrequencyPenalty is { } fp && !(fp >= -2 && fp <= 2))
            throw ApiException.BadRequest($"Invalid 'frequency_penalty': {fp}; it must be between -2 and 2.",
                "frequency_penalty", "invalid_value");
        if (s.PresencePenalty is { } pp && !(pp >= -2 && pp <= 2))
            throw ApiException.BadRequest($"Invalid 'presence_penalty': {pp}; it must be between -2 and 2.",
                "presence_penalty", "invalid_value");
        var stops = new List<string>(extraStops);
        stops.AddRange(StopStrings(s.Stop));

        // The prompt must leave room for at least one generated token.
        if (promptTokens >= contextLength)
            throw ApiException.BadRequest(
                $"This model's maximum context length is {contextLength} tokens, but the prompt has {promptTokens} " +
                    $"tokens.",
                "messages", "context_length_exceeded");
        int room = contextLength - promptTokens;
        if (s.MaxTokens is { } requested && requested > room)
            throw ApiException.BadRequest(
                $"This model's maximum context length is {contextLength} tokens, but {promptTokens + requested} were " +
                    $"requested " +
                $"({promptTokens} in the prompt, {requested} for the completion).", s.MaxTokensParam,
                    "context_length_exceeded");

        return defaults with
        {
            MaxTokens = s.MaxTokens ?? Math.Min(defaultMaxTokens, room),
            Temperature = (float)(s.Temperature ?? (defaults.Temperature > 0 ? defaults.Temperature : 1.0)),
            TopP = (float)(s.TopP ?? defaults.TopP),
            TopK = s.TopK ?? defaults.TopK,
            FrequencyPenalty = (float)(s.FrequencyPenalty ?? 0),
            PresencePenalty = (float)(s.PresencePenalty ?? 0),
            Seed = s.Seed is { } seed ? unchecked((ulong)seed) : null,
            StopStrings = stops.Count > 0 ? stops : null,
            SkipSpecialTokens = true,
        };
    }

    private static IEnumerable<string> StopStrings(JsonElement? stop)
    {
        if (stop is not { } s || s.ValueKind == JsonValueKind.Null) return [];
        if (s.ValueKind == JsonValueKind.String)
        {
            var one = s.GetString()!;
            return one.Length > 0 ? [one] : [];
        }
        if (s.ValueKind != JsonValueKind.Array)
            throw ApiException.BadRequest("Invalid type for 'stop': expected a string or an array of strings.", "stop",
                "invalid_type");
        if (s.GetArrayLength() > 4)
            throw ApiException.BadRequest("Invalid 'stop': at most 4 stop sequences are allowed.", "stop",
                "invalid_value");
        var list = new List<string>();
        foreach (var item in s.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.String)
                throw ApiException.BadRequest("Invalid type for 'stop': expected a string or an array of strings.",
                    "stop",
                    "invalid_type");
            var text = item.GetString()!;
            if (text.Length > 0) list.Add(text);
        }
        return list;
    }
}
