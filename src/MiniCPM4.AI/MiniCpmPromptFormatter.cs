using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using MiniCPM4.Chat;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;
using CoreMessage = MiniCPM4.Chat.ChatMessage;

namespace MiniCPM4.AI;

/// <summary>
/// Renders a Microsoft.Extensions.AI conversation with a checkpoint's chat template (<see cref="Render"/>), or as a
/// MiniCPM4 ChatML prompt (<see cref="Format"/>):
/// <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c> per turn and <c>&lt;|im_start|&gt;assistant\n</c> at
/// the end.
/// <see cref="ChatOptions.Instructions"/> and the descriptions of <see cref="ChatOptions.Tools"/> go into the leading
/// system turn; assistant function calls are written back in MiniCPM4's tool-call block and function results become
/// <c>tool</c> turns.
/// </summary>
public static class MiniCpmPromptFormatter
{
    private static readonly JsonSerializerOptions Compact =
        new(AIJsonUtilities.DefaultOptions) { WriteIndented = false };

    /// <summary>Renders the prompt (without BOS), ending with the assistant generation prompt.</summary>
    public static string Format(IEnumerable<ChatMessage> messages, ChatOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages.ToList();
        var turns = new List<CoreMessage>();
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
            turns.Add(new CoreMessage("system", system));
        }
        for (int i = start; i < list.Count; i++)
            AddTurns(turns, list[i] ?? throw new ArgumentException("A message is null.", nameof(messages)));
        return ChatTemplate.Format(turns);
    }

    /// <summary>The key of <see cref="ChatOptions.AdditionalProperties"/> holding template variables (a dictionary or a
    /// JSON object).</summary>
    public const string ChatTemplateArgumentsKey = "chat_template_kwargs";

    /// <summary>The key of <see cref="ChatOptions.AdditionalProperties"/> for MiniCPM4.1's reasoning switch (a
    /// bool).</summary>
    public const string EnableThinkingKey = "enable_thinking";

    /// <summary>
    /// Renders the prompt with <paramref name="template"/> (with the generation prompt). A template that renders tool
    /// definitions (<see cref="ModelChatTemplate.RendersTools"/>) gets <see cref="ChatOptions.Tools"/> as transformers'
    /// JSON
    /// schemas, assistant calls as <c>tool_calls</c>, reasoning as <c>reasoning_content</c> and results as <c>tool</c>
    /// messages with <c>tool_call_id</c> and <c>name</c>. Any other template gets the conversation as <see
    /// cref="Format"/>
    /// writes it: tools described in the system turn and calls written in MiniCPM4's tool-call block.
    /// <see cref="ChatOptions.Instructions"/> is appended to the system message either way.
    /// </summary>
    public static string Render(ModelChatTemplate template, IEnumerable<ChatMessage> messages,
        ChatOptions? options = null,
        IReadOnlyDictionary<string, object?>? defaultArguments = null)
    {
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages.ToList();
        if (list.Any(m => m is null)) throw new ArgumentException("A message is null.", nameof(messages));
        var templateOptions = TemplateOptions(options, defaultArguments);
        if (!template.RendersTools)
            return template.Render(LegacyMessages(list, options, template.OutputFormat.ThinkTags), templateOptions);

        var functions = options?.Tools?.OfType<AIFunctionDeclaration>().ToList() ?? [];
        bool useTools = functions.Count > 0 && options!.ToolMode is not NoneChatToolMode;
        if (useTools)
        {
            templateOptions = templateOptions with
            {
                Tools = functions.Select(f => JsonSerializer.SerializeToElement(new Dictionary<string, object?>
                {
                    ["type"] = "function",
                    ["function"] = new Dictionary<string, object?>
                    {
                        ["name"] = f.Name,
                        ["description"] = f.Description,
                        ["parameters"] = f.JsonSchema,
                    },
                }, Compact.GetTypeInfo(typeof(Dictionary<string, object?>)))).ToList(),
            };
        }
        var result = new List<CoreMessage>();
        string extra = options?.Instructions?.Trim() ?? "";
        if (useTools && options!.ToolMode is RequiredChatToolMode required)
            extra = (extra.Length > 0 ? extra + "\n\n" : "") + (required.RequiredFunctionName is { } name
                ? $"You must call the function {name}." : "You must call at least one function.");
        int start = 0;
        if (extra.Length > 0)
        {
            string system = extra;
            if (list.Count > 0 && list[0].Role == ChatRole.System)
            {
                var own = string.Concat(list[0].Contents.OfType<TextContent>().Select(t => t.Text));
                system = own.Length > 0 ? own + "\n\n" + extra : extra;
                start = 1;
            }
            result.Add(new CoreMessage("system", system));
        }
        var callNames = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = start; i < list.Count; i++)
        {
            var m = list[i];
            string role = RoleName(m.Role);
            string text = string.Concat(m.Contents.OfType<TextContent>().Select(t => t.Text));
            var results = m.Contents.OfType<FunctionResultContent>().ToList();
            if (results.Count > 0)
            {
                if (text.Length > 0) result.Add(new CoreMessage(role, text));
                foreach (var r in results)
                    result.Add(new CoreMessage("tool", FormatResult(r.Result))
                    {
                        ToolCallId = r.CallId,
                        Name = callNames.TryGetValue(r.CallId, out var n) ? n : null,
                    });
                continue;
            }
            var calls = m.Contents.OfType<FunctionCallContent>().ToList();
            foreach (var c in calls) callNames[c.CallId] = c.Name;
            var reasoning = string.Concat(m.Contents.OfType<TextReasoningContent>().Select(r => r.Text));
            result.Add(new CoreMessage(role, text)
            {
                ReasoningContent = reasoning.Length > 0 ? reasoning : null,
                ToolCalls = calls.Count > 0
                    ? calls.Select(c => new ChatToolCall(c.Name, c.Arguments is null
                        ? new Dictionary<string, object?>()
                        : c.Arguments.ToDictionary(kv => kv.Key, kv => kv.Value), c.CallId)).ToList()
                    : null,
            });
        }
        return template.Render(result, templateOptions);
    }

    /// <summary>
    /// Template variables for a request: <paramref name="defaults"/>, then <see
    /// cref="ChatOptions.AdditionalProperties"/>'
    /// <c>chat_template_kwargs</c> (a dictionary or JSON object) and <c>enable_thinking</c> (a bool).
    /// </summary>
    public static ChatTemplateOptions TemplateOptions(ChatOptions? options, IReadOnlyDictionary<string,
        object?>? defaults = null)
    {
        var arguments = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (defaults is not null)
            foreach (var (k, v) in defaults) arguments[k] = v;
        if (options?.AdditionalProperties is { } extra)
        {
            if (extra.TryGetValue(ChatTemplateArgumentsKey, out var kwargs))
            {
                switch (kwargs)
                {
                    case JsonElement { ValueKind: JsonValueKind.Object } json:
                        foreach (var p in json.EnumerateObject()) arguments[p.Name] = p.Value;
                        break;
                    case IEnumerable<KeyValuePair<string, object?>> map:
                        foreach (var (k, v) in map) arguments[k] = v;
                        break;
                    case null:
                        break;
                    default:
                        throw new ArgumentException(
                            $"ChatOptions.AdditionalProperties[\"{ChatTemplateArgumentsKey}\"] must be a dictionary " +
                            $"or a JSON object");
                }
            }
            if (extra.TryGetValue(EnableThinkingKey, out var thinking))
            {
                arguments[EnableThinkingKey] = thinking switch
                {
                    bool b => b,
                    JsonElement { ValueKind: JsonValueKind.True } => true,
                    JsonElement { ValueKind: JsonValueKind.False } => false,
                    _ => throw new ArgumentException(
                        $"ChatOptions.AdditionalProperties[\"{EnableThinkingKey}\"] must be a bool"),
                };
            }
        }
        return new ChatTemplateOptions { AddGenerationPrompt = true, Arguments = arguments.Count > 0 ? arguments
            : null };
    }

    /// <summary>The conversation as <see cref="Format"/> writes it, as messages for a template that does not render
    /// tools.</summary>
    private static List<CoreMessage> LegacyMessages(List<ChatMessage> list, ChatOptions? options, bool thinkTags)
    {
        var result = new List<CoreMessage>();
        var extraSystem = SystemExtras(options);
        int start = 0;
        if (extraSystem.Length > 0)
        {
            string system = extraSystem;
            if (list.Count > 0 && list[0].Role == ChatRole.System)
            {
                var own = RenderContent(list[0], thinkTags);
                system = own.Length > 0 ? own + "\n\n" + extraSystem : extraSystem;
                start = 1;
            }
            result.Add(new CoreMessage("system", system));
        }
        for (int i = start; i < list.Count; i++)
        {
            var message = list[i];
            var results = message.Contents.OfType<FunctionResultContent>().ToList();
            if (results.Count > 0)
            {
                var other = RenderContent(message, thinkTags);
                if (other.Length > 0) result.Add(new CoreMessage(RoleName(message.Role), other));
                foreach (var r in results) result.Add(
                    new CoreMessage("tool", FormatResult(r.Result)) { ToolCallId = r.CallId });
                continue;
            }
            result.Add(new CoreMessage(RoleName(message.Role), RenderContent(message, thinkTags)));
        }
        return result;
    }

    /// <summary>One message as ChatML turn(s); function results become one <c>tool</c> turn each.</summary>
    internal static string RenderMessage(ChatMessage message)
    {
        var turns = new List<CoreMessage>();
        AddTurns(turns, message);
        return ChatTemplate.Format(turns, addGenerationPrompt: false);
    }

    private static void AddTurns(List<CoreMessage> turns, ChatMessage message)
    {
        var results = message.Contents.OfType<FunctionResultContent>().ToList();
        if (results.Count > 0)
        {
            var other = RenderContent(message);
            if (other.Length > 0) turns.Add(new CoreMessage(RoleName(message.Role), other));
            foreach (var r in results) turns.Add(new CoreMessage("tool", FormatResult(r.Result)));
            return;
        }
        turns.Add(new CoreMessage(RoleName(message.Role), RenderContent(message)));
    }

    private static string RoleName(ChatRole role) => string.IsNullOrEmpty(role.Value) ? "user"
        : role.Value.ToLowerInvariant();


    /// <summary>Reasoning, text and function calls of a message in MiniCPM4's output format (reasoning in
    /// <c>&lt;think&gt;</c> tags when the template uses them).</summary>
    private static string RenderContent(ChatMessage message, bool thinkTags = false)
    {
        var sb = new StringBuilder();
        var reasoning = string.Concat(message.Contents.OfType<TextReasoningContent>().Select(r => r.Text));
        if (reasoning.Length > 0 && thinkTags)
            sb.Append("<think>\n").Append(reasoning).Append("\n</think>\n\n");
        else if (reasoning.Length > 0)
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
            sb.Append(
                "# Tools\n\nYou can call the following functions. Each is described by a JSON object:\n<tools>\n");
            foreach (var f in functions)
            {
                var description = new Dictionary<string, object?>
                {
                    ["name"] = f.Name,
                    ["description"] = f.Description,
                    ["parameters"] = f.JsonSchema,
                };
                sb.Append(
                    JsonSerializer.Serialize(description, Compact.GetTypeInfo(typeof(Dictionary<string, object?>))))
                    .Append('\n');
            }
            sb.Append(
                "</tools>\n\nTo call functions, answer with a block in this exact format (keyword arguments as " +
                "Python literals, one call per line):\n")
                .Append(MiniCpmToolCallParser.ToolCallStart).Append(
                    "\n```python\nfunction_name(argument=\"text\", number=5)\n```\n")
                .Append(MiniCpmToolCallParser.ToolCallEnd).Append(
                    "\nThe results come back in tool turns; then answer the user.");
            if (options.ToolMode is RequiredChatToolMode required)
                sb.Append(required.RequiredFunctionName is { } name
                    ? $"\nYou must call the function {name}."
                    : "\nYou must call at least one function.");
        }
        return sb.ToString();
    }
}
