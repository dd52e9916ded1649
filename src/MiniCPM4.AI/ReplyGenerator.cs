namespace MiniCPM4.AI;

/// <summary>One reply to generate: the rented session, the rendered prompt and its tokens, the settings; the
/// generator reports how many prompt tokens it evaluated and why it stopped.</summary>
internal sealed class ReplyRequest(MiniCpmSession session, bool isCachedConversation, string prompt, int[] tokens,
    GenerationOptions options)
{
    public MiniCpmSession Session { get; } = session;

    /// <summary>Whether <see cref="Session"/> holds this conversation's KV cache (else it is a spare
    /// session).</summary>
    public bool IsCachedConversation { get; } = isCachedConversation;

    public string Prompt { get; } = prompt;

    public int[] Tokens { get; } = tokens;

    public GenerationOptions Options { get; } = options;

    /// <summary>Prompt tokens evaluated (the rest came from the KV cache); set by the generator.</summary>
    public int Evaluated { get; set; }

    /// <summary>Why generation stopped; set by the generator once the stream ends.</summary>
    public FinishReason? FinishReason { get; set; }
}

/// <summary>Writes the assistant's reply for <see cref="MiniCpmChatClient"/>: the step between rendering the prompt and
/// parsing the output.</summary>
internal interface IReplyGenerator
{
    IAsyncEnumerable<GeneratedToken> GenerateAsync(ReplyRequest request, CancellationToken cancellationToken);
}

/// <summary>Generates with the model in the rented session, reusing the conversation's KV cache.</summary>
internal sealed class SessionReplyGenerator : IReplyGenerator
{
    public static SessionReplyGenerator Instance { get; } = new();

    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(ReplyRequest request,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var session = request.Session;
        // Cached tokens are reported for the conversation's own KV cache only, not a spare session's.
        if (!request.IsCachedConversation) session.Reset();
        request.Evaluated = await session.SetPromptAsync(request.Tokens, cancellationToken).ConfigureAwait(false);
        await foreach (var token in session.GenerateAsync(request.Options, cancellationToken).ConfigureAwait(false))
            yield return token;
        request.FinishReason = session.LastFinishReason;
    }
}
