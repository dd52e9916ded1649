using System.Text.Json;

namespace MiniCPM4.Chat;

/// <summary>How a conversation is rendered with a checkpoint's chat template.</summary>
public sealed record ChatTemplateOptions
{
    /// <summary>Append the assistant's generation prompt (transformers' <c>add_generation_prompt</c>). Default
    /// true.</summary>
    public bool AddGenerationPrompt { get; init; } = true;

    /// <summary>
    /// MiniCPM4.1-style reasoning switch, passed as the template variable <c>enable_thinking</c>; null passes nothing
    /// (the template's default: thinking on for MiniCPM4.1). A value in <see cref="Arguments"/> wins over this.
    /// </summary>
    public bool? EnableThinking { get; init; }

    /// <summary>
    /// Further template variables (transformers' extra keyword arguments of <c>apply_chat_template</c>), e.g.
    /// <c>{"enable_thinking": false}</c>. Values: null, bool, numbers, strings, lists, dictionaries, <see
    /// cref="JsonElement"/>.
    /// They may also replace <c>bos_token</c> and <c>eos_token</c>.
    /// </summary>
    public IReadOnlyDictionary<string, object?>? Arguments { get; init; }

    /// <summary>
    /// Tool definitions as transformers passes them to the template (<c>tools</c>): JSON schemas of the form
    /// <c>{"type": "function", "function": {"name", "description", "parameters"}}</c>. Null or empty: <c>tools</c> is
    /// None.
    /// </summary>
    public IReadOnlyList<JsonElement>? Tools { get; init; }

    /// <summary>Documents for retrieval-augmented templates (<c>documents</c>); null passes None.</summary>
    public IReadOnlyList<JsonElement>? Documents { get; init; }

    /// <summary>The time <c>strftime_now</c> formats; null is the current local time.</summary>
    public DateTime? Now { get; init; }
}
