// An IChatClient pipeline over MiniCPM4: logging and a response cache in front of MiniCpmChatClient.
// Usage: dotnet run --project samples/ChatPipeline -- [checkpoint dir]
// Without a directory a tiny random checkpoint is written to a temp dir first (its answers are gibberish).
using System.Diagnostics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MiniCPM4;
using MiniCPM4.AI;
using MiniCPM4.Samples;

using var checkpoint = SampleCheckpoint.FromArgs(args, "chatpipeline", seed: 3);
string dir = checkpoint.Directory;

using var model = MiniCpmModel.Load(dir);
using var loggerFactory =
    LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Debug));
IDistributedCache cache = new MemoryDistributedCache(Options.Create(new MemoryDistributedCacheOptions()));

using IChatClient client = new ChatClientBuilder(new MiniCpmChatClient(model))
    .UseLogging(loggerFactory)
    .UseDistributedCache(cache)
    .Build();

var metadata = client.GetService<ChatClientMetadata>();
Console.WriteLine($"Model: {metadata?.DefaultModelId} ({metadata?.ProviderName}, {metadata?.ProviderUri})");

List<ChatMessage> question = [new(ChatRole.User, "What is the tallest mountain in the world? Answer in one sentence.")];
var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 48 };

ChatResponse? first = null;
for (int attempt = 1; attempt <= 2; attempt++)
{
    var sw = Stopwatch.StartNew();
    var response = await client.GetResponseAsync(question, options.Clone());
    sw.Stop();
    Console.WriteLine(
        $"--- answer {attempt} ({sw.Elapsed.TotalMilliseconds:F1} ms, response id {response.ResponseId}, " +
                      $"{response.Usage?.InputTokenCount} prompt + {response.Usage?.OutputTokenCount} generated " +
                          $"tokens, finish {response.FinishReason})");
    Console.WriteLine(response.Text);
    first ??= response;
    if (attempt == 2)
    {
        bool cached = response.ResponseId == first.ResponseId && response.Text == first.Text;
        Console.WriteLine(cached
            ? "The second answer came from the distributed cache: same response id, and the model was not run again."
            : "The second answer did NOT come from the cache.");
        if (!cached) return 1;
    }
}
return 0;
