using Microsoft.Extensions.AI;
using NUnit.Framework;

namespace MiniCPM4.AI.Tests;

/// <summary>The chat client drives whatever reply generator it is given, and reports what the generator did.</summary>
[TestFixture]
public class ReplyGeneratorTests
{
    private sealed class CountingGenerator : IReplyGenerator
    {
        public int Calls;

        public async IAsyncEnumerable<GeneratedToken> GenerateAsync(ReplyRequest request,
            [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
        {
            Calls++;
            request.Evaluated = 2;
            await Task.Yield();
            yield return new GeneratedToken(7, "abc");
            yield return new GeneratedToken(-1, "");
            request.FinishReason = FinishReason.Length;
        }
    }

    [Test]
    public async Task UsageAndFinishReasonComeFromTheGenerator()
    {
        using var model = TinyModel.Load();
        var generator = new CountingGenerator();
        using var client = new MiniCpmChatClient(model, null, generator);
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")]);
        Assert.That(generator.Calls, Is.EqualTo(1));
        Assert.That(response.Text, Is.EqualTo("abc"));
        Assert.That(response.FinishReason, Is.EqualTo(ChatFinishReason.Length));
        Assert.That(response.Usage!.OutputTokenCount, Is.EqualTo(1));
        Assert.That(response.Usage.AdditionalCounts!["PrefillTokenCount"], Is.EqualTo(2));
        Assert.That(response.Usage.CachedInputTokenCount, Is.EqualTo(response.Usage.InputTokenCount - 2));
    }
}
