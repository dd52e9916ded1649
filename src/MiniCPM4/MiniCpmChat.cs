using System.Runtime.CompilerServices;
using System.Text;
using MiniCPM4.Chat;

namespace MiniCPM4;

/// <summary>
/// A multi-turn conversation on one session, rendered with the checkpoint's chat template
/// (<see cref="MiniCpmModel.ChatTemplate"/>). Each turn evaluates only the new tokens when the template renders the
/// conversation so far as the cached prompt plus the reply (e.g. ChatML: the reply is in the KV cache, so a new user
/// message appends <c>&lt;|im_end|&gt;\n&lt;|im_start|&gt;user\n…&lt;|im_end|&gt;\n&lt;|im_start|&gt;assistant\n</c>
/// and
/// nothing else); otherwise (a template that rewrites earlier turns, e.g. drops their reasoning) the session keeps the
/// longest common token prefix and prefills the rest.
/// </summary>
public sealed class MiniCpmChat
{
    private readonly List<ChatMessage> _history = [];
    private readonly string? _systemPrompt;
    private readonly ChatTemplateOptions _templateOptions;
    private string? _cachedText;

    /// <param name="session">The session that holds the conversation's KV cache.</param>
    /// <param name="systemPrompt">A system message that starts the conversation, or null.</param>
    /// <param name="templateOptions">Template variables for every turn (e.g. <see
    /// cref="ChatTemplateOptions.EnableThinking"/>);
    /// the generation prompt is always added.</param>
    public MiniCpmChat(MiniCpmSession session, string? systemPrompt = null, ChatTemplateOptions? templateOptions = null)
    {
        Session = session;
        _systemPrompt = systemPrompt;
        _templateOptions = (templateOptions ?? new ChatTemplateOptions()) with { AddGenerationPrompt = true };
        Reset();
    }

    public MiniCpmSession Session { get; }
    public IReadOnlyList<ChatMessage> History => _history;

    /// <summary>Forgets the conversation and empties the session.</summary>
    public void Reset()
    {
        _history.Clear();
        _cachedText = null;
        if (_systemPrompt is not null) _history.Add(new ChatMessage("system", _systemPrompt));
        Session.Reset();
    }

    /// <summary>Sends a user message and streams the assistant's reply.</summary>
    public async IAsyncEnumerable<GeneratedToken> SendAsync(string userMessage, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var model = Session.Model;
        var user = new ChatMessage("user", userMessage);
        string prompt = model.ChatTemplate.Render([.. _history, user], _templateOptions);
        bool continuing = Session.Length > 0 && _cachedText is not null
            && prompt.StartsWith(_cachedText, StringComparison.Ordinal);
        if (continuing)
        {
            // The previous prompt and reply are cached; evaluate only what the template adds after them.
            var suffix = model.Tokenizer.Encode(prompt[_cachedText!.Length..], addBos: false);
            await Task.Run(() => Session.Prefill(suffix, cancellationToken), cancellationToken).ConfigureAwait(false);
        }
        else
        {
            var tokens = model.EncodeRenderedChat(prompt);
            await Session.SetPromptAsync(tokens, cancellationToken).ConfigureAwait(false);
        }
        _history.Add(user);
        _cachedText = null;

        var reply = new StringBuilder();
        var stopStrings =
            new List<string>(options?.StopStrings ?? []) { model.ChatTemplate.EndOfTurn ?? ChatTemplate.ImEnd };
        var turnOptions = (options ?? new GenerationOptions()) with { StopStrings = stopStrings };
        try
        {
            await foreach (var token in Session.GenerateAsync(turnOptions, cancellationToken).ConfigureAwait(false))
            {
                reply.Append(token.Text);
                yield return token;
            }
            _cachedText = prompt + reply;
        }
        finally
        {
            // Even a cancelled reply is part of the conversation (its tokens are in the cache).
            _history.Add(new ChatMessage("assistant", reply.ToString()));
        }
    }
}
