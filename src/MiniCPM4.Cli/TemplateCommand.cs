using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using MiniCPM4.Chat;
using MiniCPM4.Chat.Jinja;
using MiniCPM4.Checkpoints;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Cli;

/// <summary>
/// `minicpm4 template render`: prints what a chat template renders for a conversation (to check a checkpoint's template
/// against transformers' apply_chat_template), and the shared <c>--chat-arg</c> option of generate and chat.
/// </summary>
internal static class TemplateCommand
{
    /// <summary><c>--chat-arg key=value</c> of generate --chat and chat: a chat template variable.</summary>
    internal static readonly Option<string[]> ChatArg = new("--chat-arg")
    {
        Description =
            "Chat template variable key=value (repeatable), e.g. enable_thinking=false; the value is read as JSON " +
            "when it parses, else as a string",
        AllowMultipleArgumentsPerToken = false,
    };

    private static readonly Option<string> Template = new("--template")
    {
        Description =
            "A Jinja chat template file, or a checkpoint directory (its chat_template.jinja or " +
            "tokenizer_config.json, with bos_token and eos_token)",
        Required = true,
    };
    private static readonly Option<string> Messages = new("--messages")
    {
        Description =
            "JSON file: the messages (an array of {role, content, ...} as transformers takes them), or an object " +
            "with \"messages\" and optionally \"tools\"",
        Required = true,
    };
    private static readonly Option<string?> Tools =
        new("--tools") { Description =
        "JSON file: an array of tool schemas ({\"type\": \"function\", \"function\": {...}})" };
    private static readonly Option<bool> AddGenerationPrompt =
        new("--add-generation-prompt") { Description = "Append the assistant's generation prompt" };
    private static readonly Option<string[]> Arg = new("--arg")
    {
        Description =
            "Template variable key=value (repeatable; bos_token and eos_token too); the value is read as JSON when " +
            "it parses, else as a string",
        AllowMultipleArgumentsPerToken = false,
    };
    private static readonly Option<string?> Now =
        new("--now") { Description = "The time strftime_now formats, ISO 8601 (default: the current time)" };

    public static Command Create()
    {
        var render = new Command("render", "Print the prompt a chat template renders for a conversation");
        render.Options.Add(Template);
        render.Options.Add(Messages);
        render.Options.Add(Tools);
        render.Options.Add(AddGenerationPrompt);
        render.Options.Add(Arg);
        render.Options.Add(Now);
        render.SetAction((parse, _) => Cli.Guard(parse, () => RenderAsync(parse)));
        var command = new Command("template", "Chat templates");
        command.Subcommands.Add(render);
        return command;
    }

    /// <summary>key=value pairs; values parse as JSON when they can, else they are strings.</summary>
    internal static Dictionary<string, object?> ParseArguments(IEnumerable<string>? pairs, string option)
    {
        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var pair in pairs ?? [])
        {
            int eq = pair.IndexOf('=');
            if (eq <= 0) throw new UsageException($"{option} '{pair}': expected key=value");
            string key = pair[..eq].Trim(), text = pair[(eq + 1)..];
            if (key.Length == 0) throw new UsageException($"{option} '{pair}': the key is empty");
            object? value;
            try
            {
                using var doc = JsonDocument.Parse(text);
                value = doc.RootElement.Clone();
            }
            catch (JsonException)
            {
                value = text;
            }
            result[key] = value;
        }
        return result;
    }

    /// <summary>The chat template options of generate --chat and chat (--chat-arg).</summary>
    internal static ChatTemplateOptions ChatTemplateOptionsFrom(ParseResult parse)
    {
        var arguments = ParseArguments(parse.GetValue(ChatArg), "--chat-arg");
        return new ChatTemplateOptions { Arguments = arguments.Count > 0 ? arguments : null };
    }

    private static Task RenderAsync(ParseResult parse)
    {
        string templatePath = parse.GetValue(Template)!;
        var arguments = ParseArguments(parse.GetValue(Arg), "--arg");
        ModelChatTemplate template;
        if (Directory.Exists(templatePath))
        {
            var files = CheckpointInspection.ReadTemplateSettings(templatePath);
            if (files.ChatTemplate is null
                && !File.Exists(Path.Combine(templatePath, ModelChatTemplate.TemplateFileName)))
                throw new UsageException(
                    $"{templatePath} has no chat template (no {ModelChatTemplate.TemplateFileName}, no chat_template " +
                    $"in tokenizer_config.json)");
            template = ModelChatTemplate.Load(templatePath, files.ChatTemplate, files.BosToken, files.EosToken);
        }
        else if (File.Exists(templatePath))
        {
            template = ModelChatTemplate.Parse(File.ReadAllText(templatePath), origin: templatePath);
        }
        else
        {
            throw new FileNotFoundException($"--template {templatePath}: no such file or directory");
        }

        JsonElement messages;
        JsonElement? embeddedTools = null;
        using (var doc = ReadJson(parse.GetValue(Messages)!, "--messages"))
        {
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("messages", out var m))
            {
                messages = m.Clone();
                if (root.TryGetProperty("tools", out var t) && t.ValueKind != JsonValueKind.Null) embeddedTools =
                    t.Clone();
            }
            else
            {
                messages = root.Clone();
            }
        }
        if (messages.ValueKind != JsonValueKind.Array)
            throw new UsageException("--messages: expected a JSON array of messages (or an object with \"messages\")");

        JsonElement? tools = embeddedTools;
        if (parse.GetValue(Tools) is { } toolsPath)
        {
            using var doc = ReadJson(toolsPath, "--tools");
            tools = doc.RootElement.Clone();
        }
        if (tools is { } t2 && t2.ValueKind != JsonValueKind.Array) throw new UsageException(
            "--tools: expected a JSON array");

        DateTime? now = null;
        if (parse.GetValue(Now) is { } nowText)
        {
            if (!DateTime.TryParse(nowText, CultureInfo.InvariantCulture, DateTimeStyles.None, out var parsed))
                throw new UsageException($"--now '{nowText}': expected an ISO 8601 date and time");
            now = parsed;
        }

        var options = new ChatTemplateOptions
        {
            AddGenerationPrompt = parse.GetValue(AddGenerationPrompt),
            Tools = tools is { } list ? list.EnumerateArray().ToList() : null,
            Arguments = arguments,
            Now = now,
        };
        string prompt;
        try
        {
            prompt = template.Render(messages, options);
        }
        catch (TemplateRaisedException e)
        {
            throw new InvalidDataException($"the template raised an exception: {e.Message}");
        }
        var stdout = Console.OpenStandardOutput();
        var bytes = new System.Text.UTF8Encoding(false).GetBytes(prompt);
        stdout.Write(bytes);
        stdout.Flush();
        return Task.CompletedTask;
    }

    private static JsonDocument ReadJson(string path, string option)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{option} {path}: no such file");
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{option} {path}: not valid JSON ({e.Message})");
        }
    }
}
