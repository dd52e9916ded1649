using System.Text.Json;
using MiniCPM4.Constraints;

namespace MiniCPM4.Server;

/// <summary>How a request lets the model call its tools (OpenAI's <c>tool_choice</c>).</summary>
internal enum ToolMode
{
    /// <summary>No tools, or <c>"none"</c>: the tools are not shown to the model.</summary>
    None,
    /// <summary><c>"auto"</c>: the model may call; a call it starts is constrained to the tools' schemas.</summary>
    Auto,
    /// <summary><c>"required"</c> or a named function: the reply is a call, constrained from its first token.</summary>
    Required,
}

/// <summary>The tools a request offers, how they may be called, and whether several calls may be returned.</summary>
internal sealed record ToolPlan(ToolMode Mode, IReadOnlyList<(string Name, JsonElement Parameters)> Functions,
    bool Parallel)
{
    public static readonly ToolPlan NoTools = new(ToolMode.None, [], true);

    /// <summary>The constraint of a call of one of the plan's functions (arguments valid under its schema).</summary>
    public OutputConstraint CallConstraint()
    {
        try
        {
            return OutputConstraint.ToolCall(Functions);
        }
        catch (ConstraintCompileException e)
        {
            throw ApiException.BadRequest($"Invalid 'tools': a function's parameters schema is not supported: " +
                                          e.Message, "tools", "invalid_schema");
        }
    }
}

/// <summary>Reads <c>tools</c>, <c>tool_choice</c>, <c>parallel_tool_calls</c>, <c>response_format</c>,
/// <c>logprobs</c> and <c>top_logprobs</c>; every problem is a 400 naming the field.</summary>
internal static class OutputRequests
{
    private static readonly JsonElement EmptyParameters = JsonDocument.Parse("""{"type":"object"}""").RootElement;

    public static ToolPlan Tools(ChatCompletionRequest request)
    {
        var functions = new List<(string Name, JsonElement Parameters)>();
        if (request.Tools is { } tools)
        {
            for (int i = 0; i < tools.Count; i++)
            {
                var fn = tools[i].GetProperty("function");
                var name = fn.GetProperty("name").GetString()!;
                var parameters = fn.TryGetProperty("parameters", out var p) && p.ValueKind != JsonValueKind.Null
                    ? p
                    : EmptyParameters;
                if (parameters.ValueKind != JsonValueKind.Object)
                    throw ApiException.BadRequest($"Invalid type for 'tools[{i}].function.parameters': expected an " +
                                                  "object (a JSON Schema).", $"tools[{i}].function.parameters",
                        "invalid_type");
                functions.Add((name, parameters));
            }
        }
        bool parallel = request.ParallelToolCalls ?? true;
        if (request.ToolChoice is not { } choice || choice.ValueKind == JsonValueKind.Null)
            return functions.Count == 0 ? ToolPlan.NoTools : new ToolPlan(ToolMode.Auto, functions, parallel);
        if (choice.ValueKind == JsonValueKind.String)
        {
            var mode = choice.GetString() switch
            {
                "none" => ToolMode.None,
                "auto" => ToolMode.Auto,
                "required" => ToolMode.Required,
                var other => throw ApiException.BadRequest(
                    $"Invalid value '{other}' for 'tool_choice': expected 'none', 'auto', 'required' or " +
                    "{\"type\": \"function\", \"function\": {\"name\": ...}}.", "tool_choice", "invalid_value"),
            };
            if (mode == ToolMode.Required && functions.Count == 0)
                throw ApiException.BadRequest("'tool_choice' is 'required', but the request has no 'tools'.",
                    "tool_choice", "invalid_value");
            return mode == ToolMode.None || functions.Count == 0
                ? ToolPlan.NoTools
                : new ToolPlan(mode, functions, parallel);
        }
        if (choice.ValueKind != JsonValueKind.Object || !choice.TryGetProperty("function", out var f) ||
            f.ValueKind != JsonValueKind.Object || !f.TryGetProperty("name", out var n) ||
            n.ValueKind != JsonValueKind.String)
            throw ApiException.BadRequest("Invalid 'tool_choice': expected 'none', 'auto', 'required' or " +
                                          "{\"type\": \"function\", \"function\": {\"name\": ...}}.", "tool_choice",
                "invalid_type");
        string wanted = n.GetString()!;
        var named = functions.Where(x => x.Name == wanted).ToList();
        if (named.Count == 0)
            throw ApiException.BadRequest($"Invalid 'tool_choice': the request has no tool named '{wanted}'.",
                "tool_choice.function.name", "invalid_value");
        return new ToolPlan(ToolMode.Required, named, parallel);
    }

    /// <summary>The constraint of <c>response_format</c>: none for <c>text</c>, a JSON object for
    /// <c>json_object</c>, the schema for <c>json_schema</c> (objects keep to their declared properties unless
    /// <c>strict</c> is false).</summary>
    public static OutputConstraint? ResponseFormat(JsonElement? value)
    {
        if (value is not { } format || format.ValueKind == JsonValueKind.Null) return null;
        if (format.ValueKind != JsonValueKind.Object)
            throw ApiException.BadRequest("Invalid type for 'response_format': expected an object.", "response_format",
                "invalid_type");
        if (!format.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
            throw ApiException.BadRequest("Missing required parameter: 'response_format.type'.",
                "response_format.type", "missing_required_parameter");
        switch (type.GetString())
        {
            case "text":
                return null;
            case "json_object":
                return OutputConstraint.JsonSchema("""{"type":"object"}""");
            case "json_schema":
                if (!format.TryGetProperty("json_schema", out var spec) || spec.ValueKind != JsonValueKind.Object)
                    throw ApiException.BadRequest("Missing required parameter: 'response_format.json_schema'.",
                        "response_format.json_schema", "missing_required_parameter");
                if (!spec.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String)
                    throw ApiException.BadRequest("Missing required parameter: 'response_format.json_schema.name'.",
                        "response_format.json_schema.name", "missing_required_parameter");
                JsonElement schema = spec.TryGetProperty("schema", out var s) ? s : EmptyParameters;
                if (schema.ValueKind is not (JsonValueKind.Object or JsonValueKind.True or JsonValueKind.False))
                    throw ApiException.BadRequest("Invalid type for 'response_format.json_schema.schema': expected " +
                                                  "an object.", "response_format.json_schema.schema", "invalid_type");
                bool strict = spec.TryGetProperty("strict", out var st) && st.ValueKind == JsonValueKind.True;
                try
                {
                    // strict: exactly the schema (OpenAI's strict schemas close their objects themselves);
                    // otherwise objects still keep to their declared properties, as the chat client does.
                    return strict
                        ? OutputConstraint.JsonSchema(schema.GetRawText())
                        : OutputConstraint.JsonSchemaDeclaredProperties(schema.GetRawText());
                }
                catch (ConstraintCompileException e)
                {
                    throw ApiException.BadRequest(
                        $"Invalid 'response_format.json_schema.schema': {e.Message}",
                        "response_format.json_schema.schema",
                        e.Keyword is null ? "invalid_schema" : "unsupported_keyword");
                }
            case var other:
                throw ApiException.BadRequest(
                    $"Invalid value '{other}' for 'response_format.type': expected 'text', 'json_object' or " +
                    "'json_schema'.", "response_format.type", "invalid_value");
        }
    }

    /// <summary>Alternatives per token for chat: -1 without logprobs, else top_logprobs (0 to 20).</summary>
    public static int ChatLogprobs(ChatCompletionRequest request)
    {
        if (request.TopLogprobs is { } top && (top < 0 || top > 20))
            throw ApiException.BadRequest($"Invalid 'top_logprobs': {top}; it must be between 0 and 20.",
                "top_logprobs", "invalid_value");
        if (request.Logprobs != true)
        {
            if (request.TopLogprobs is > 0)
                throw ApiException.BadRequest("'top_logprobs' needs 'logprobs' to be true.", "top_logprobs",
                    "invalid_value");
            return -1;
        }
        return request.TopLogprobs ?? 0;
    }

    /// <summary>Alternatives per token for completions: -1 without logprobs, else logprobs (0 to 5).</summary>
    public static int TextLogprobs(TextCompletionRequest request)
    {
        if (request.Logprobs is not { } n) return -1;
        if (n < 0 || n > 5)
            throw ApiException.BadRequest($"Invalid 'logprobs': {n}; it must be between 0 and 5.", "logprobs",
                "invalid_value");
        return n;
    }
}
