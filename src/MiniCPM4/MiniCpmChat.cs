using System.Runtime.CompilerServices;
using System.Text;
using MiniCPM4.Chat;

namespace MiniCPM4;

/// <summary>
/// A multi-turn ChatML conversation on one session. Each turn evaluates only the new tokens: the
/// assistant's reply is already in the KV cache, so a new user message appends
/// <c>&lt;|im_end|&gt;\n&lt;|im_start|&gt;user\n…&lt;|im_end|&gt;\n&lt;|im_start|&gt;assistant\n</c> and nothing else.
/// </summary>
public sealed class MiniCpmChat
{
    private readonly List<ChatMessage> _history = [];
    private readonly string? _systemPrompt;

    public MiniCpmChat(MiniCpmSession session, string? systemPrompt = null)
    {
        Session = session;
        _systemPrompt = systemPrompt;
        Reset();
    }

    public MiniCpmSession Session { get; }
    public IReadOnlyList<ChatMessage> History => _history;

    /// <summary>Forgets the conversation and empties the session.</summary>
    public void Reset()
    {
        _history.Clear();
        if (_systemPrompt is not null) _history.Add(new ChatMessage("system", _systemPrompt));
        Session.Reset();
    }

    /// <summary>Sends a user message and streams the assistant's reply.</summary>
    public async IAsyncEnumerable<GeneratedToken> SendAsync(string userMessage, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var model = Session.Model;
        int[] suffix;
        bool continuing = Session.Length > 0 && _history.Count > 0 && _history[^1].Role == "assistant";
        if (continuing)
        {
            // The previous reply's tokens are cached; close that turn and open the next one.
            var text = "<|im_end|>\n" + ChatTemplate.Format([new ChatMessage("user", userMessage)], addGenerationPrompt: true);
            suffix = model.Tokenizer.Encode(text, addBos: false);
        }
        else
        {
            Session.Reset();
            suffix = model.EncodeChat([.. _history, new ChatMessage("user", userMessage)]);
        }
        await Task.Run(() => Session.Prefill(suffix, cancellationToken), cancellationToken).ConfigureAwait(false);
        _history.Add(new ChatMessage("user", userMessage));

        var reply = new StringBuilder();
        var stopStrings = new List<string>(options?.StopStrings ?? []) { "<|im_end|>" };
        var turnOptions = (options ?? new GenerationOptions()) with { StopStrings = stopStrings };
        try
        {
            await foreach (var token in Session.GenerateAsync(turnOptions, cancellationToken).ConfigureAwait(false))
            {
                reply.Append(token.Text);
                yield return token;
            }
        }
        finally
        {
            // Even a cancelled reply is part of the conversation (its tokens are in the cache).
            _history.Add(new ChatMessage("assistant", reply.ToString()));
        }
    }
}
