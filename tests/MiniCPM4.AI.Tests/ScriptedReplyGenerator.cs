using System.Runtime.CompilerServices;

namespace MiniCPM4.AI.Tests;

/// <summary>A reply generator that answers from a script instead of the model: the script sees the rendered prompt
/// and yields text pieces, one per token. The whole prompt counts as evaluated; the reply stops at MaxTokens.</summary>
internal sealed class ScriptedReplyGenerator(
    Func<string, GenerationOptions, CancellationToken, IAsyncEnumerable<string>> script) : IReplyGenerator
{
    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(ReplyRequest request,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        request.Evaluated = request.Tokens.Length;
        int count = 0;
        await foreach (var piece in script(request.Prompt, request.Options, cancellationToken).ConfigureAwait(false))
        {
            cancellationToken.ThrowIfCancellationRequested();
            count++;
            yield return new GeneratedToken(0, piece);
            if (count >= request.Options.MaxTokens) break;
        }
        request.FinishReason = count >= request.Options.MaxTokens ? FinishReason.Length : FinishReason.Stop;
    }
}
