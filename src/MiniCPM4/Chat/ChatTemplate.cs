using System.Text;
using System.Text.RegularExpressions;

namespace MiniCPM4.Chat;

/// <summary>
/// The ChatML prompt format of MiniCPM4 checkpoints, rendered in C# (no Jinja engine):
/// <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c> per message, then <c>&lt;|im_start|&gt;assistant\n</c>.
/// </summary>
public static partial class ChatTemplate
{
    /// <summary>The token that opens a turn.</summary>
    public const string ImStart = ChatMlRenderer.ImStart;

    /// <summary>The token that closes a turn (MiniCPM4's <c>eos_token</c>).</summary>
    public const string ImEnd = ChatMlRenderer.ImEnd;

    /// <summary>Strings that end an assistant turn when they appear in generated text.</summary>
    public static IReadOnlyList<string> StopStrings { get; } = [ImEnd];

    /// <summary>
    /// Renders messages as a MiniCPM4 ChatML prompt. The BOS token is not part of the string: prepend its id when
    /// the tokenizer's <c>AddBosByDefault</c> is set.
    /// </summary>
    /// <param name="messages">The conversation.</param>
    /// <param name="addGenerationPrompt">Append <c>&lt;|im_start|&gt;assistant\n</c> so that the model answers.</param>
    public static string Format(IEnumerable<ChatMessage> messages, bool addGenerationPrompt = true)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var sb = new StringBuilder();
        foreach (var message in messages)
        {
            if (message is null)
                throw new ArgumentException("A message is null.", nameof(messages));
            if (string.IsNullOrEmpty(message.Role))
                throw new ArgumentException("A message has no role.", nameof(messages));
            ArgumentNullException.ThrowIfNull(message.Content, nameof(messages));
            ChatMlRenderer.AppendTurn(sb, message.Role, message.Content);
        }

        if (addGenerationPrompt)
            ChatMlRenderer.AppendGenerationPrompt(sb);
        return sb.ToString();
    }

    /// <summary>
    /// Whether a checkpoint's Jinja <c>chat_template</c> produces the ChatML that <see cref="Format"/> renders: either
    /// the MiniCPM4 template (compared after normalising whitespace, quotes and Jinja trim markers), or a template
    /// that loops over the messages emitting <c>'&lt;|im_start|&gt;' + role + '\n' + … + '&lt;|im_end|&gt;' + '\n'</c>
    /// and
    /// adds <c>'&lt;|im_start|&gt;assistant\n'</c> under <c>add_generation_prompt</c>. False for anything else
    /// (including null), so the caller can warn.
    /// </summary>
    public static bool IsCompatible(string? checkpointChatTemplate)
    {
        if (string.IsNullOrWhiteSpace(checkpointChatTemplate))
            return false;

        string canonical = Canonicalize(checkpointChatTemplate);
        if (canonical == CanonicalMiniCpm4)
            return true;

        // Structure: a loop over the messages ...
        var loop = MessageLoop().Match(canonical);
        if (!loop.Success)
            return false;
        string variable = Regex.Escape(loop.Groups[1].Value);

        // ... emitting '<|im_start|>' + v['role'] + '\n' + <content> + '<|im_end|>\n' ...
        var turn = new Regex(
            @"'<\|im_start\|>'\+" + variable + @"\['role'\]\+'\\n'\+[^{}]+?\+'<\|im_end\|>\\n'",
            RegexOptions.CultureInvariant);
        if (!turn.IsMatch(canonical, loop.Index))
            return false;

        // ... and the generation prompt.
        return canonical.Contains("add_generation_prompt", StringComparison.Ordinal) &&
               canonical.Contains(@"'<|im_start|>assistant\n'", StringComparison.Ordinal);
    }

    private static readonly string CanonicalMiniCpm4 = Canonicalize(ChatMlRenderer.JinjaTemplate);

    [GeneratedRegex(@"\{%for(\w+)in(?:\w+)?messages(?:\[[^\]]*\])?%\}", RegexOptions.CultureInvariant)]
    private static partial Regex MessageLoop();

    [GeneratedRegex(@"'((?:[^'\\]|\\.)*)'\+'((?:[^'\\]|\\.)*)'", RegexOptions.CultureInvariant)]
    private static partial Regex AdjacentLiterals();

    [GeneratedRegex(@"\b(\w+)\.(role|content)\b", RegexOptions.CultureInvariant)]
    private static partial Regex AttributeAccess();

    /// <summary>
    /// A canonical form for comparing templates: whitespace outside string literals removed, literals single-quoted
    /// with real newlines written as <c>\n</c>, <c>~</c> read as <c>+</c>, Jinja trim markers (<c>{%-</c>, <c>-}}</c>…)
    /// dropped, <c>x.role</c> read as <c>x['role']</c>, and adjacent literals joined (<c>'a'+'b'</c> → <c>'ab'</c>).
    /// </summary>
    internal static string Canonicalize(string template)
    {
        var sb = new StringBuilder(template.Length);
        char quote = '\0';
        for (int i = 0; i < template.Length; i++)
        {
            char c = template[i];
            if (quote == '\0')
            {
                if (char.IsWhiteSpace(c))
                    continue;
                if (c is '\'' or '"')
                {
                    quote = c;
                    sb.Append('\'');
                }
                else
                {
                    sb.Append(c == '~' ? '+' : c);
                }

                continue;
            }

            if (c == '\\' && i + 1 < template.Length)
            {
                char next = template[++i];
                if (next == '"')
                    sb.Append('"'); // \" and " are the same character
                else
                    sb.Append('\\').Append(next);
            }
            else if (c == quote)
            {
                sb.Append('\'');
                quote = '\0';
            }
            else if (c == '\'')
            {
                sb.Append("\\'");
            }
            else if (c == '\n')
            {
                sb.Append("\\n");
            }
            else
            {
                sb.Append(c);
            }
        }

        string s = sb.ToString()
            .Replace("{%-", "{%", StringComparison.Ordinal).Replace("-%}", "%}", StringComparison.Ordinal)
            .Replace("{{-", "{{", StringComparison.Ordinal).Replace("-}}", "}}", StringComparison.Ordinal)
            .Replace("{%+", "{%", StringComparison.Ordinal).Replace("+%}", "%}", StringComparison.Ordinal);
        s = AttributeAccess().Replace(s, "$1['$2']");
        string previous;
        do
        {
            previous = s;
            s = AdjacentLiterals().Replace(s, "'$1$2'");
        }
        while (s != previous);
        return s;
    }
}
