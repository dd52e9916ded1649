using System.CommandLine;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 chat`: an interactive multi-turn chat on stdin/stdout that reuses the KV cache
/// between turns. Commands: /reset, /stats, /exit.</summary>
internal static class ChatCommand
{
    private static readonly Option<string?> System = new("--system") { Description = "System prompt" };

    public static Command Create()
    {
        var command = new Command("chat", "Interactive multi-turn chat (/reset, /stats, /exit)");
        Cli.AddModelOptions(command);
        command.Options.Add(System);
        command.Options.Add(TemplateCommand.ChatArg);
        Cli.AddGenerationOptions(command);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => RunAsync(parse, ct)));
        return command;
    }

    private static async Task RunAsync(ParseResult parse, CancellationToken ct)
    {
        using var model = await Cli.LoadModelAsync(parse, ct);
        var options = Cli.GenerationOptionsFrom(parse, model);
        using var session = model.CreateSession(Cli.SessionOptionsFrom(parse));
        var chat = new MiniCpmChat(session, parse.GetValue(System), TemplateCommand.ChatTemplateOptionsFrom(parse));
        bool interactive = !Console.IsInputRedirected;
        if (interactive) Console.Error.WriteLine("Chat with the model. /reset clears the conversation, /stats shows speed, /exit quits.");
        while (!ct.IsCancellationRequested)
        {
            if (interactive) Console.Error.Write("> ");
            var line = Console.ReadLine();
            if (line is null || line.Trim() == "/exit") break;
            if (line.Trim().Length == 0) continue;
            if (line.Trim() == "/reset")
            {
                chat.Reset();
                Console.Error.WriteLine("(conversation cleared)");
                continue;
            }
            if (line.Trim() == "/stats")
            {
                var s = session.Statistics;
                Console.Error.WriteLine(
                    $"context {session.Length}/{session.Capacity} tokens; prefill {s.PrefillTokens} tokens at {s.PrefillTokensPerSecond:F1} tok/s; decode {s.DecodeTokens} tokens at {s.DecodeTokensPerSecond:F1} tok/s");
                continue;
            }
            try
            {
                await foreach (var token in chat.SendAsync(line, options, ct))
                {
                    Console.Out.Write(token.Text);
                    Console.Out.Flush();
                }
                Console.Out.WriteLine();
            }
            catch (MiniCpmContextFullException e)
            {
                Console.Error.WriteLine($"minicpm4: {e.Message} — use /reset to start over");
            }
        }
    }
}
