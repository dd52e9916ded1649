namespace MiniCPM4.Chat;

/// <summary>
/// One chat turn: a role ("system", "user", "assistant", "tool", …) and its text, plus what chat templates render for
/// tool use and reasoning (each becomes the field of the same name in the message a template sees, as in transformers).
/// </summary>
public sealed record ChatMessage(string Role, string Content)
{
    /// <summary>The assistant's reasoning (<c>reasoning_content</c>), when it is kept apart from <see
    /// cref="Content"/>.</summary>
    public string? ReasoningContent { get; init; }

    /// <summary>The assistant's function calls (<c>tool_calls</c>).</summary>
    public IReadOnlyList<ChatToolCall>? ToolCalls { get; init; }

    /// <summary>For a <c>tool</c> message: the id of the call it answers (<c>tool_call_id</c>).</summary>
    public string? ToolCallId { get; init; }

    /// <summary>For a <c>tool</c> message: the function's name (<c>name</c>).</summary>
    public string? Name { get; init; }
}

/// <summary>
/// A function call: its name and arguments (JSON-like values: null, bool, numbers, strings, lists, dictionaries,
/// <see cref="System.Text.Json.JsonElement"/>). A template sees <c>{"id", "type": "function", "function": {"name",
/// "arguments"}}</c> with the arguments as a mapping, the way transformers passes them.
/// </summary>
public sealed record ChatToolCall(string Name, IReadOnlyDictionary<string, object?> Arguments, string? Id = null);
