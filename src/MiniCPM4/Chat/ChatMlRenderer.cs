using System.Text;

namespace MiniCPM4.Chat;

/// <summary>
/// The one place that writes MiniCPM4's ChatML: <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c> per turn,
/// then <c>&lt;|im_start|&gt;assistant\n</c> as the generation prompt. <see cref="ChatTemplate"/>, the built-in
/// <see cref="ModelChatTemplate.ChatMl"/> and MiniCPM4.AI's prompt formatter all render through it, so they cannot
/// drift apart.
/// </summary>
internal static class ChatMlRenderer
{
    /// <summary>The token that opens a turn.</summary>
    public const string ImStart = "<|im_start|>";

    /// <summary>The token that closes a turn (MiniCPM4's <c>eos_token</c>).</summary>
    public const string ImEnd = "<|im_end|>";

    /// <summary>The role whose turn the generation prompt opens.</summary>
    public const string AssistantRole = "assistant";

    /// <summary>The same format as a Jinja template: the one MiniCPM4 checkpoints ship in
    /// <c>tokenizer_config.json</c>.</summary>
    public const string JinjaTemplate =
        "{% for message in messages %}" +
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}" +
        "{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    /// <summary>Appends one turn.</summary>
    public static StringBuilder AppendTurn(StringBuilder sb, string role, string content) =>
        sb.Append(ImStart).Append(role).Append('\n').Append(content).Append(ImEnd).Append('\n');

    /// <summary>Appends the header of the assistant turn the model is to write.</summary>
    public static StringBuilder AppendGenerationPrompt(StringBuilder sb) =>
        sb.Append(ImStart).Append(AssistantRole).Append('\n');
}
