using System.CommandLine;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 chat`: an interactive multi-turn chat on stdin/stdout that reuses the KV cache
/// between turns. Commands: /reset, /stats, /help, /exit; Ctrl-C stops a reply.</summary>
internal static class ChatCommand
{
    private static readonly Option<string?> System = new("--system") { Description = "System prompt" };

    public static Command Create()
    {
        var command =
            new Command("chat", "Interactive multi-turn chat (/reset, /stats, /help, /exit; Ctrl-C stops a reply)");
        Cli.AddModelOptions(command);
        command.Options.Add(System);
        command.Options.Add(TemplateCommand.ChatArg);
        Cli.AddGenerationOptions(command);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => RunAsync(parse, ct)));
        return command;
    }

    private const string Help =
        "/reset clears the conversation, /stats shows speed, /help shows this, /exit quits; " +
        "Ctrl-C stops a reply (the conversation stays).";

    private static async Task RunAsync(ParseResult parse, CancellationToken ct)
    {
        using var model = await Cli.LoadModelAsync(parse, ct);
        var options = Cli.GenerationOptionsFrom(parse, model);
        using var session = Cli.CreateSession(parse, model);
        var chat = new MiniCpmChat(session, parse.GetValue(System), TemplateCommand.ChatTemplateOptionsFrom(parse));
        bool interactive = !Console.IsInputRedirected;
        if (interactive) Console.Error.WriteLine("Chat with the model. " + Help);
        // Ctrl-C during a reply stops that reply only; at the prompt it ends the program as usual.
        CancellationTokenSource? reply = null;
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            if (Volatile.Read(ref reply) is not { } current) return;
            e.Cancel = true;
            current.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                if (interactive) Console.Error.Write("> ");
                var line = Console.ReadLine();
                if (line is null) break;
                switch (line.Trim())
                {
                    case "/exit":
                        return;
                    case "":
                        continue;
                    case "/help":
                        Console.Error.WriteLine(Help);
                        continue;
                    case "/reset":
                        chat.Reset();
                        Console.Error.WriteLine("(conversation cleared)");
                        continue;
                    case "/stats":
                        Console.Error.WriteLine(StatsLine(session));
                        continue;
                    case ['/', ..] command when !command.Contains(' ', StringComparison.Ordinal):
                        Console.Error.WriteLine($"unknown command {command}; {Help}");
                        continue;
                }
                using var replyCancellation = CancellationTokenSource.CreateLinkedTokenSource(ct);
                Volatile.Write(ref reply, replyCancellation);
                try
                {
                    await foreach (var token in chat.SendAsync(line, options, replyCancellation.Token))
                    {
                        Console.Out.Write(token.Text);
                        Console.Out.Flush();
                    }
                    Console.Out.WriteLine();
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    Console.Out.WriteLine();
                    Console.Error.WriteLine("(reply stopped; the conversation keeps what was generated)");
                }
                catch (MiniCpmContextFullException e)
                {
                    Console.Error.WriteLine($"minicpm4: {e.Message} — use /reset to start over");
                }
                finally
                {
                    Volatile.Write(ref reply, null);
                }
            }
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    internal static string StatsLine(MiniCpmSession session)
    {
        var s = session.Statistics;
        var line = $"context {session.Length}/{session.Capacity} tokens; prefill {s.PrefillTokens} tokens at " +
                   $"{s.PrefillTokensPerSecond:F1} tok/s; decode {s.DecodedTokens} tokens at " +
                       $"{s.DecodeTokensPerSecond:F1} tok/s";
        if (s.SpeculativeSteps > 0 || s.AdaptivePlainTokens > 0)
            line += $" ({s.SpeculativeSteps} speculative rounds, {s.MeanAcceptedTokens:F2} tokens per round; " +
                    $"{s.AdaptivePlainTokens} tokens decoded plainly by choice; last step: {s.LastStepDescription})";
        return line;
    }
}
