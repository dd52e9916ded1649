using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;

namespace MiniCPM4.AI;

/// <summary>
/// Renders a Microsoft.Extensions.AI conversation as a MiniCPM4 ChatML prompt:
/// <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c> per turn and <c>&lt;|im_start|&gt;assistant\n</c> at the end.
/// <see cref="ChatOptions.Instructions"/> and the descriptions of <see cref="ChatOptions.Tools"/> go into the leading
/// system turn; assistant function calls are written back in MiniCPM4's tool-call block and function results become
/// <c>tool</c> turns.
/// </summary>
public static class MiniCpmPromptFormatter
{
    private const string ImStart = "<|im_start|>";
    private const string ImEnd = "<|im_end|>";

    private static readonly JsonSerializerOptions Compact = new(AIJsonUtilities.DefaultOptions) { WriteIndented = false };

    /// <summary>Renders the prompt (without BOS), ending with the assistant generation prompt.</summary>
    public static string Format(IEnumerable<ChatMessage> messages, ChatOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages.ToList();
        var sb = new StringBuilder();
        var extraSystem = SystemExtras(options);
        int start = 0;
        if (extraSystem.Length > 0)
        {
            string system = extraSystem;
            if (list.Count > 0 && list[0] is { } first && first.Role == ChatRole.System)
            {
                var own = RenderContent(first);
                system = own.Length > 0 ? own + "\n\n" + extraSystem : extraSystem;
                start = 1;
            }
            AppendTurn(sb, "system", system);
        }
        for (int i = start; i < list.Count; i++) AppendMessage(sb, list[i] ?? throw new ArgumentException("A message is null.", nameof(messages)));
        sb.Append(ImStart).Append("assistant\n");
        return sb.ToString();
    }

    /// <summary>One message as ChatML turn(s); function results become one <c>tool</c> turn each.</summary>
    internal static string RenderMessage(ChatMessage message)
    {
        var sb = new StringBuilder();
        AppendMessage(sb, message);
        return sb.ToString();
    }

    private static void AppendMessage(StringBuilder sb, ChatMessage message)
    {
        var results = message.Contents.OfType<FunctionResultContent>().ToList();
        if (results.Count > 0)
        {
            var other = RenderContent(message);
            if (other.Length > 0) AppendTurn(sb, RoleName(message.Role), other);
            foreach (var r in results) AppendTurn(sb, "tool", FormatResult(r.Result));
            return;
        }
        AppendTurn(sb, RoleName(message.Role), RenderContent(message));
    }

    private static string RoleName(ChatRole role) => string.IsNullOrEmpty(role.Value) ? "user" : role.Value.ToLowerInvariant();

    private static void AppendTurn(StringBuilder sb, string role, string content) =>
        sb.Append(ImStart).Append(role).Append('\n').Append(content).Append(ImEnd).Append('\n');

    /// <summary>Reasoning, text and function calls of a message in MiniCPM4's output format.</summary>
    private static string RenderContent(ChatMessage message)
    {
        var sb = new StringBuilder();
        var reasoning = string.Concat(message.Contents.OfType<TextReasoningContent>().Select(r => r.Text));
        if (reasoning.Length > 0)
            sb.Append(MiniCpmToolCallParser.ThoughtStart).Append('\n').Append(reasoning).Append('\n')
                .Append(MiniCpmToolCallParser.ThoughtEnd).Append('\n');
        foreach (var c in message.Contents)
            if (c is TextContent t) sb.Append(t.Text);
        var calls = message.Contents.OfType<FunctionCallContent>().ToList();
        if (calls.Count > 0) MiniCpmToolCallParser.FormatCalls(sb, calls);
        return sb.ToString();
    }

    private static string FormatResult(object? result) => result switch
    {
        null => "None",
        string s => s,
        JsonElement { ValueKind: JsonValueKind.String } e => e.GetString()!,
        _ => JsonSerializer.Serialize(result, Compact.GetTypeInfo(typeof(object))),
    };

    private static string SystemExtras(ChatOptions? options)
    {
        if (options is null) return "";
        var sb = new StringBuilder();
        if (!string.IsNullOrWhiteSpace(options.Instructions)) sb.Append(options.Instructions.Trim());
        var functions = options.Tools?.OfType<AIFunctionDeclaration>().ToList() ?? [];
        if (functions.Count > 0 && options.ToolMode is not NoneChatToolMode)
        {
            if (sb.Length > 0) sb.Append("\n\n");
            sb.Append("# Tools\n\nYou can call the following functions. Each is described by a JSON object:\n<tools>\n");
            foreach (var f in functions)
            {
                var description = new Dictionary<string, object?>
                {
                    ["name"] = f.Name,
                    ["description"] = f.Description,
                    ["parameters"] = f.JsonSchema,
                };
                sb.Append(JsonSerializer.Serialize(description, Compact.GetTypeInfo(typeof(Dictionary<string, object?>))))
                    .Append('\n');
            }
            sb.Append("</tools>\n\nTo call functions, answer with a block in this exact format (keyword arguments as Python literals, one call per line):\n")
                .Append(MiniCpmToolCallParser.ToolCallStart).Append("\n```python\nfunction_name(argument=\"text\", number=5)\n```\n")
                .Append(MiniCpmToolCallParser.ToolCallEnd).Append("\nThe results come back in tool turns; then answer the user.");
            if (options.ToolMode is RequiredChatToolMode required)
                sb.Append(required.RequiredFunctionName is { } name
                    ? $"\nYou must call the function {name}."
                    : "\nYou must call at least one function.");
        }
        return sb.ToString();
    }
}
