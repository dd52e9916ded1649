using System.CommandLine;
using System.Text;
using System.Text.Json;
using MiniCPM4.Chat;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 generate`: stream a continuation (or, with --chat, an assistant reply) to stdout.</summary>
internal static class GenerateCommand
{
    private static readonly Option<string> Prompt =
        new("--prompt", "-p") { Description = "Prompt text", Required = true };
    private static readonly Option<bool> ChatMode =
        new("--chat") { Description = "Wrap the prompt as a user turn with the checkpoint's chat template" };

    public static Command Create()
    {
        var command = new Command("generate", "Generate text from a prompt");
        Cli.AddModelOptions(command);
        command.Options.Add(Prompt);
        command.Options.Add(ChatMode);
        command.Options.Add(TemplateCommand.ChatArg);
        Cli.AddGenerationOptions(command);
        command.Options.Add(Cli.Json);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => RunAsync(parse, ct)));
        return command;
    }

    private static async Task RunAsync(ParseResult parse, CancellationToken ct)
    {
        var prompt = parse.GetValue(Prompt)!;
        bool json = parse.GetValue(Cli.Json);
        using var model = await Cli.LoadModelAsync(parse, ct);
        var options = Cli.GenerationOptionsFrom(parse, model);
        using var session = Cli.CreateSession(parse, model);
        if (!parse.GetValue(ChatMode) && parse.GetValue(TemplateCommand.ChatArg) is { Length: > 0 })
            throw new UsageException("--chat-arg needs --chat (it sets a chat template variable)");
        var promptTokens = parse.GetValue(ChatMode)
            ? model.EncodeChat([new ChatMessage("user", prompt)], TemplateCommand.ChatTemplateOptionsFrom(parse))
            : model.EncodePrompt(prompt);
        if (promptTokens.Length == 0) throw new UsageException(
            "the prompt is empty and the tokenizer adds no BOS token");
        if (promptTokens.Length > session.Capacity)
            throw new MiniCpmContextFullException(
                $"the prompt has {promptTokens.Length} tokens but the context holds {session.Capacity} (raise " +
                    $"--context, up to max_position_embeddings = {model.Config.MaxPositionEmbeddings})");
        await session.SetPromptAsync(promptTokens, ct);

        var text = new StringBuilder();
        var ids = new List<int>();
        var stdout = Console.Out;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await foreach (var token in session.GenerateAsync(options, ct))
        {
            if (token.Id >= 0) ids.Add(token.Id);
            text.Append(token.Text);
            if (!json && token.Text.Length > 0)
            {
                await stdout.WriteAsync(token.Text);
                await stdout.FlushAsync(ct);
            }
        }
        clock.Stop();
        var stats = session.Statistics;
        if (json)
        {
            using var buffer = new MemoryStream();
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                w.WriteString("text", text.ToString());
                w.WriteStartArray("token_ids");
                foreach (var id in ids) w.WriteNumberValue(id);
                w.WriteEndArray();
                w.WriteNumber("prompt_tokens", promptTokens.Length);
                w.WriteNumber("generated_tokens", ids.Count);
                w.WriteString("finish_reason", FinishName(session.LastFinishReason));
                w.WriteNumber("prefill_tokens_per_s", Math.Round(stats.PrefillTokensPerSecond, 3));
                w.WriteNumber("decode_tokens_per_s", Math.Round(stats.DecodeTokensPerSecond, 3));
                // Wall-clock rate of the whole generation (sampling, drafting and verification included).
                w.WriteNumber("generate_tokens_per_s", clock.Elapsed > TimeSpan.Zero
                    ? Math.Round(ids.Count / clock.Elapsed.TotalSeconds, 3) : 0);
                w.WriteBoolean("speculative", model.Draft is not null && options.Speculative?.Enabled != false);
                w.WriteNumber("speculative_steps", stats.SpeculativeSteps);
                w.WriteNumber("mean_accepted_tokens", Math.Round(stats.MeanAcceptedTokens, 4));
                // Adaptive speculation (--spec-tree auto): what it chose.
                w.WriteString("spec_tree", options.Speculative?.Adaptive != false ? "auto"
                    : options.Speculative.TreeSize.ToString(
                    System.Globalization.CultureInfo.InvariantCulture));
                w.WriteNumber("spec_plain_tokens", stats.AdaptivePlainTokens);
                w.WriteNumber("spec_last_tree_size", stats.TreeSize);
                w.WriteNumber("spec_last_tree_levels", stats.TreeLevels);
                w.WriteString("quantization", model.Quantization == WeightQuantization.Int4 ? "int4" : "none");
                w.WriteNumber("int4_linears", model.Int4LinearCount);
                w.WriteEndObject();
            }
            stdout.WriteLine(Encoding.UTF8.GetString(buffer.ToArray()));
        }
        else
        {
            stdout.WriteLine();
        }
    }

    internal static string FinishName(FinishReason? reason) => reason switch
    {
        FinishReason.Stop => "stop",
        FinishReason.Length => "length",
        FinishReason.ContextFull => "context_full",
        _ => "unknown",
    };
}
