// A streaming chat console over MiniCpmChat.
//   dotnet run --project samples/ChatConsole -- [checkpoint dir]
// Without a checkpoint it writes a tiny random one to a temp directory (it answers gibberish, by design).
// Commands: /reset clears the conversation, /stats prints the session's counters, /exit quits.
using MiniCPM4;
using MiniCPM4.Checkpoints;

string? tempModel = null;
string modelDir;
if (args.Length > 0)
{
    modelDir = args[0];
}
else
{
    tempModel = Directory.CreateTempSubdirectory("minicpm4-chat-").FullName;
    modelDir = tempModel;
    Console.WriteLine($"No checkpoint given: creating a tiny random model in {modelDir} (its replies are gibberish).");
    CheckpointWriter.CreateRandomModel(modelDir, ModelPreset.Tiny, seed: 1, TensorDType.BF16);
}

using var cts = new CancellationTokenSource();
// Ctrl+C stops the reply being streamed; a second Ctrl+C (or one at the prompt) quits.
bool streaming = false;
Console.CancelKeyPress += (_, e) =>
{
    if (streaming && !cts.IsCancellationRequested)
    {
        e.Cancel = true;
        cts.Cancel();
    }
};

try
{
    using var model = MiniCpmModel.Load(modelDir);
    using var session =
        model.CreateSession(
        new SessionOptions { ContextLength = Math.Clamp(model.Config.MaxPositionEmbeddings, 0, 4096) });
    var chat = new MiniCpmChat(session, systemPrompt: "You are a helpful assistant.");
    var options = GenerationOptions.FromDefaults(model.GenerationDefaults) with { MaxTokens = 256 };
    if (tempModel is not null)
        options = options with { MaxTokens = 32 };

    Console.WriteLine(
        $"Loaded {modelDir} ({model.ParameterCount:N0} parameters, native engine {MiniCpmNative.LoadedLibraryPath}).");
    Console.WriteLine("Type a message; /reset clears the conversation, /stats shows statistics, /exit quits.");

    var token = cts.Token;
    while (true)
    {
        Console.Write("> ");
        string? line = Console.ReadLine();
        if (line is null) break;                      // end of input
        if (Console.IsInputRedirected) Console.WriteLine(line);   // keep piped transcripts readable
        line = line.Trim();
        if (line.Length == 0) continue;
        switch (line)
        {
            case "/exit":
            case "/quit":
                return 0;
            case "/reset":
                chat.Reset();
                session.ResetStatistics();
                Console.WriteLine("(conversation cleared)");
                continue;
            case "/stats":
                PrintStats(session);
                continue;
        }
        if (line.StartsWith('/'))
        {
            Console.WriteLine($"unknown command {line}; use /reset, /stats or /exit");
            continue;
        }

        streaming = true;
        try
        {
            await foreach (var t in chat.SendAsync(line, options, token))
                Console.Write(t.Text);
            Console.WriteLine();
            if (session.LastFinishReason == FinishReason.ContextFull)
                Console.WriteLine("(the context is full: /reset to start over)");
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            Console.WriteLine(" (stopped)");
            return 130;
        }
        catch (MiniCpmContextFullException)
        {
            Console.WriteLine("(the context is full: /reset to start over)");
        }
        finally
        {
            streaming = false;
        }
    }
    return 0;
}
finally
{
    if (tempModel is not null)
    {
        try { Directory.Delete(tempModel, recursive: true); } catch (IOException) { }
    }
}

static void PrintStats(MiniCpmSession session)
{
    var s = session.Statistics;
    Console.WriteLine($"context: {session.Length} / {session.Capacity} tokens");
    Console.WriteLine(
        $"prefill: {s.PrefillTokens} tokens in {s.PrefillTime.TotalMilliseconds:F1} ms " +
        $"({s.PrefillTokensPerSecond:F1} tok/s)");
    Console.WriteLine(
        $"decode:  {s.DecodeTokens} tokens in {s.DecodeTime.TotalMilliseconds:F1} ms ({s.DecodeTokensPerSecond:F1} " +
        $"tok/s)");
    Console.WriteLine($"sampled: {s.GeneratedTokens} tokens, sampling {s.SampleTime.TotalMilliseconds:F1} ms");
}
