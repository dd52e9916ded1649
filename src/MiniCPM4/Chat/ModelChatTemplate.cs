using System.Text.Json;
using MiniCPM4.Chat.Jinja;

namespace MiniCPM4.Chat;

/// <summary>
/// A checkpoint's chat template, rendered with the Jinja2 renderer (<see cref="JinjaTemplate"/>) the way transformers'
/// <c>apply_chat_template</c> renders it.
/// </summary>
/// <remarks>
/// <para><b>Where the template comes from</b> (<see cref="Load"/>): <c>chat_template.jinja</c> in the checkpoint
/// directory
/// when present, else <c>chat_template</c> of <c>tokenizer_config.json</c> (a string, or the entry named "default" of a
/// list), else MiniCPM4's ChatML (<see cref="ChatMl"/>). <c>bos_token</c> and <c>eos_token</c> come from the tokenizer
/// files.</para>
/// <para><b>What the output parser looks for</b> is decided by rendering probe conversations once (<see
/// cref="OutputFormat"/>):
/// the tool-call syntax is the one the template renders for an assistant message with a tool call
/// (<c>&lt;|tool_call_start|&gt;</c> → <see cref="ToolCallSyntax.McpBlock"/>, <c>&lt;tool_call&gt;</c> →
/// <see cref="ToolCallSyntax.HermesJson"/>, <c>&lt;|tool_call|&gt;</c> → <see cref="ToolCallSyntax.ToolCallToken"/>; a
/// template that
/// renders none of them keeps MiniCPM4's MCP block); <c>&lt;think&gt;</c> reasoning is parsed when the template renders
/// <c>&lt;think&gt;</c> or <c>&lt;/think&gt;</c> in any probe (e.g. the empty think block of
/// <c>enable_thinking=false</c>);
/// <c>&lt;|thought_start|&gt;</c> blocks are always parsed. <see cref="RendersTools"/> tells whether the template
/// writes tool
/// definitions at all (a template that ignores <c>tools</c>, like MiniCPM4's plain ChatML, gets them described in the
/// system turn by <c>MiniCpmChatClient</c>). <see cref="EndOfTurn"/> is the text the template puts after an assistant
/// message (a stop string).</para>
/// </remarks>
public sealed class ModelChatTemplate
{
    /// <summary>The file name transformers saves a separate chat template under.</summary>
    public const string TemplateFileName = "chat_template.jinja";

    private const string ProbeFunction = "probe_function_7f3a";
    private readonly JinjaTemplate _template;

    private ModelChatTemplate(JinjaTemplate template, string origin, string? bosToken, string? eosToken,
        bool isFallback)
    {
        _template = template;
        Origin = origin;
        BosToken = bosToken;
        EosToken = eosToken;
        IsFallback = isFallback;
        (OutputFormat, RendersTools, EndOfTurn) = Analyze();
    }

    /// <summary>The Jinja source.</summary>
    public string Source => _template.Source;

    /// <summary>Where the template came from: "chat_template.jinja", "tokenizer_config.json", or "built-in
    /// ChatML".</summary>
    public string Origin { get; }

    /// <summary>True when the checkpoint has no template (or an unusable one) and MiniCPM4's ChatML is used.</summary>
    public bool IsFallback { get; }

    /// <summary>The <c>bos_token</c> the template sees (null: undefined).</summary>
    public string? BosToken { get; }

    /// <summary>The <c>eos_token</c> the template sees (null: undefined).</summary>
    public string? EosToken { get; }

    /// <summary>What the output parser looks for (see the remarks).</summary>
    public ChatOutputFormat OutputFormat { get; }

    /// <summary>Whether the template renders the tool definitions passed in <see
    /// cref="ChatTemplateOptions.Tools"/>.</summary>
    public bool RendersTools { get; }

    /// <summary>The text that closes an assistant turn (e.g. <c>&lt;|im_end|&gt;</c>), or null when the template shows
    /// none.</summary>
    public string? EndOfTurn { get; }

    /// <summary>MiniCPM4's ChatML: <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c> per message, then
    /// <c>&lt;|im_start|&gt;assistant\n</c>.</summary>
    public static ModelChatTemplate ChatMl { get; } = CreateChatMl("<s>", "</s>");

    /// <summary>MiniCPM4's ChatML (<see cref="ChatMl"/>) with the given special tokens.</summary>
    public static ModelChatTemplate CreateChatMl(string? bosToken, string? eosToken) =>
        new(JinjaTemplate.Parse(ChatMlRenderer.JinjaTemplate), "built-in ChatML", bosToken, eosToken, isFallback: true);

    /// <summary>Parses a template. Syntax errors and unsupported constructs throw <see
    /// cref="TemplateSyntaxException"/>.</summary>
    public static ModelChatTemplate Parse(string source, string? bosToken = null, string? eosToken = null,
        string origin = "given")
    {
        ArgumentNullException.ThrowIfNull(source);
        return new ModelChatTemplate(JinjaTemplate.Parse(source), origin, bosToken, eosToken, isFallback: false);
    }

    /// <summary>
    /// The template of a checkpoint directory (see the remarks for the order). A template that does not parse is a
    /// <see cref="TemplateSyntaxException"/> naming the file.
    /// </summary>
    public static ModelChatTemplate Load(string directory, string? tokenizerConfigTemplate, string? bosToken,
        string? eosToken)
    {
        var file = Path.Combine(directory, TemplateFileName);
        if (File.Exists(file)) return Parse(File.ReadAllText(file), bosToken, eosToken, TemplateFileName);
        if (!string.IsNullOrWhiteSpace(tokenizerConfigTemplate))
            return Parse(tokenizerConfigTemplate, bosToken, eosToken, "tokenizer_config.json");
        return CreateChatMl(bosToken, eosToken);
    }

    /// <summary>Renders a conversation as transformers does: variables <c>messages</c>, <c>tools</c>, <c>documents</c>,
    /// <c>add_generation_prompt</c>, <c>bos_token</c>, <c>eos_token</c>, then <see
    /// cref="ChatTemplateOptions.EnableThinking"/>
    /// and <see cref="ChatTemplateOptions.Arguments"/>.</summary>
    /// <exception cref="TemplateRaisedException">The template refused the conversation
    /// (<c>raise_exception</c>).</exception>
    /// <exception cref="TemplateRenderException">Rendering failed.</exception>
    public string Render(IEnumerable<ChatMessage> messages, ChatTemplateOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = new List<object?>();
        foreach (var m in messages)
        {
            if (m is null) throw new ArgumentException("A message is null.", nameof(messages));
            if (string.IsNullOrEmpty(m.Role)) throw new ArgumentException("A message has no role.", nameof(messages));
            if (m.Content is null) throw new ArgumentException("A message has no content.", nameof(messages));
            list.Add(MessageValue(m));
        }
        return RenderValues(list, options);
    }

    /// <summary>Renders messages given as JSON objects in transformers' format (role, content, tool_calls,
    /// …).</summary>
    public string Render(JsonElement messages, ChatTemplateOptions? options = null)
    {
        if (messages.ValueKind != JsonValueKind.Array) throw new ArgumentException("messages must be a JSON array",
            nameof(messages));
        return RenderValues(messages, options);
    }

    private string RenderValues(object messages, ChatTemplateOptions? options)
    {
        options ??= new ChatTemplateOptions();
        var variables = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = messages,
            ["tools"] = options.Tools is { Count: > 0 } tools ? tools.Select(t => (object?)t).ToList() : null,
            ["documents"] = options.Documents is { Count: > 0 } documents ? documents.Select(d => (object?)d).ToList()
                : null,
            ["add_generation_prompt"] = options.AddGenerationPrompt,
        };
        if (BosToken is not null) variables["bos_token"] = BosToken;
        if (EosToken is not null) variables["eos_token"] = EosToken;
        if (options.EnableThinking is { } thinking) variables["enable_thinking"] = thinking;
        if (options.Arguments is not null)
            foreach (var (key, value) in options.Arguments) variables[key] = value;
        return _template.Render(variables, new JinjaRenderOptions { Now = options.Now });
    }

    private static Dictionary<string, object?> MessageValue(ChatMessage m)
    {
        var d = new Dictionary<string, object?>(StringComparer.Ordinal) { ["role"] = m.Role, ["content"] = m.Content };
        if (m.ReasoningContent is not null) d["reasoning_content"] = m.ReasoningContent;
        if (m.ToolCalls is { Count: > 0 } calls)
        {
            d["tool_calls"] = calls.Select((c, i) => (object?)new Dictionary<string, object?>(StringComparer.Ordinal)
            {
                ["id"] = c.Id ?? $"call_{i}",
                ["type"] = "function",
                ["function"] = new Dictionary<string, object?>(StringComparer.Ordinal)
                {
                    ["name"] = c.Name,
                    ["arguments"] = c.Arguments.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal),
                },
            }).ToList();
        }
        if (m.ToolCallId is not null) d["tool_call_id"] = m.ToolCallId;
        if (m.Name is not null) d["name"] = m.Name;
        return d;
    }

    /// <summary>Whether a rendered prompt leaves a <c>&lt;think&gt;</c> block open (the model continues inside
    /// it).</summary>
    public bool EndsInsideReasoning(string prompt)
    {
        if (!OutputFormat.ThinkTags) return false;
        int open = prompt.LastIndexOf("<think>", StringComparison.Ordinal);
        return open >= 0 && prompt.IndexOf("</think>", open, StringComparison.Ordinal) < 0;
    }

    // ---- probes --------------------------------------------------------------------------------------------------

    private string? TryRender(IEnumerable<ChatMessage> messages, ChatTemplateOptions options)
    {
        try
        {
            return Render(messages, options);
        }
        catch (TemplateException)
        {
            return null;
        }
    }

    private (ChatOutputFormat Format, bool RendersTools, string? EndOfTurn) Analyze()
    {
        using var toolDoc = JsonDocument.Parse(
            "{\"type\": \"function\", \"function\": {\"name\": \"" + ProbeFunction
                + "\", \"description\": \"probe\", " +
            "\"parameters\": {\"type\": \"object\", \"properties\": {\"probe_argument\": {\"type\": \"string\"}}, " +
                "\"required\": [\"probe_argument\"]}}}");
        var tools = new[] { toolDoc.RootElement.Clone() };
        var user = new ChatMessage("user", "probe question");
        var withTools = new ChatTemplateOptions { Tools = tools, Now = new DateTime(2026, 1, 1) };

        string? toolsPrompt = TryRender([user], withTools);
        bool rendersTools = toolsPrompt?.Contains(ProbeFunction, StringComparison.Ordinal) == true;

        var call = new ChatMessage("assistant", "")
        {
            ToolCalls =
                [new ChatToolCall(ProbeFunction, new Dictionary<string, object?> { ["probe_argument"] = "probe value" },
                "call_probe")],
        };
        var result = new ChatMessage("tool", "probe result") { ToolCallId = "call_probe", Name = ProbeFunction };
        string? callPrompt = TryRender([user, call, result, new ChatMessage("user", "probe follow-up")], withTools)
                             ?? TryRender([user, call, result], withTools)
                             ?? TryRender([user, call], withTools with { AddGenerationPrompt = false });

        var syntax = ToolCallSyntax.McpBlock;
        if (callPrompt is not null)
        {
            int mcp = IndexOf(callPrompt, "<|tool_call_start|>"), hermes = IndexOf(callPrompt, "<tool_call>"),
                token = IndexOf(callPrompt, "<|tool_call|>");
            int first = new[] { mcp, hermes, token }.Where(i => i >= 0).DefaultIfEmpty(-1).Min();
            if (first >= 0) syntax = first == hermes ? ToolCallSyntax.HermesJson : first == token
                ? ToolCallSyntax.ToolCallToken : ToolCallSyntax.McpBlock;
        }

        var plain = new ChatTemplateOptions { Now = new DateTime(2026, 1, 1) };
        var thinkingOff = plain with { EnableThinking = false };
        // Reasoning kept apart (reasoning_content): a template that writes it back in <think> tags uses them.
        var reasoned = new ChatMessage("assistant", "probe answer") { ReasoningContent = "probe reasoning" };
        string?[] renders =
        [
            toolsPrompt, callPrompt,
            TryRender([user], thinkingOff), TryRender([user], plain with { EnableThinking = true }),
            TryRender([user, reasoned, new ChatMessage("user", "probe follow-up")], plain),
        ];
        bool think =
            renders.Any(r => r is not null
            && (r.Contains("<think>", StringComparison.Ordinal) || r.Contains("</think>", StringComparison.Ordinal)));

        // The end of an assistant turn: what follows the assistant's text up to the next turn's text.
        string? endOfTurn = null;
        const string answer = "probe answer 5d1c";
        ChatMessage[] exchange =
            [user, new ChatMessage("assistant", answer), new ChatMessage("user", "probe next 5d1c")];
        string? turns = TryRender(exchange, plain with { AddGenerationPrompt = false })
                        ?? TryRender(exchange, withTools with { AddGenerationPrompt = false });
        if (turns is not null)
        {
            int a = turns.IndexOf(answer, StringComparison.Ordinal),
                b = turns.IndexOf("probe next 5d1c", StringComparison.Ordinal);
            if (a >= 0 && b > a)
            {
                string between = turns[(a + answer.Length)..b];
                // Up to the first line break or the start of the next turn's header: "<|im_end|>\n<|im_start|>user\n"
                // -> "<|im_end|>".
                string marker = between.Split('\n')[0].Trim();
                if (marker.Length > 0)
                {
                    int nextOpen = marker.IndexOf('<', 1);
                    endOfTurn = nextOpen > 0 && marker.StartsWith('<') && marker.IndexOf('>') < nextOpen
                        ? marker[..(marker.IndexOf('>') + 1)] : marker;
                }
            }
        }
        if (endOfTurn is null && EosToken is not null
            && turns?.Contains(answer + EosToken, StringComparison.Ordinal) == true) endOfTurn = EosToken;

        return (new ChatOutputFormat { ToolCalls = syntax, ThinkTags = think, ThoughtTags = true }, rendersTools,
            endOfTurn);
    }

    private static int IndexOf(string s, string marker) => s.IndexOf(marker, StringComparison.Ordinal);
}
