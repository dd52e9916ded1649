using System.CommandLine;
using System.Text;
using System.Text.Json;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 tokenize`: print token ids as a JSON array (one line per input with --jsonl).</summary>
internal static class TokenizeCommand
{
    private static readonly Option<string?> Text = new("--text") { Description = "Text to tokenize" };
    private static readonly Option<string?> JsonLines =
        new("--jsonl") { Description = "File with one JSON string per line" };
    private static readonly Option<bool> Bos = new("--bos") { Description = "Prepend the BOS token" };

    public static Command Create()
    {
        var command = new Command("tokenize", "Print the token ids of a text as a JSON array");
        command.Options.Add(Cli.Model);
        command.Options.Add(Text);
        command.Options.Add(JsonLines);
        command.Options.Add(Bos);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => Run(parse)));
        return command;
    }

    private static Task Run(ParseResult parse)
    {
        var text = parse.GetValue(Text);
        var jsonl = parse.GetValue(JsonLines);
        if ((text is null) == (jsonl is null)) throw new UsageException("give exactly one of --text or --jsonl");
        bool bos = parse.GetValue(Bos);
        var tokenizer = MiniCpmTokenizer.Load(Cli.ModelDirectory(parse));
        if (text is not null)
        {
            Console.Out.WriteLine(ToJson(tokenizer.Encode(text, bos)));
            return Task.CompletedTask;
        }
        int lineNumber = 0;
        foreach (var line in File.ReadLines(jsonl!))
        {
            lineNumber++;
            string value;
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException(
                        $"{jsonl}:{lineNumber}: expected a JSON string, found {doc.RootElement.ValueKind}");
                value = doc.RootElement.GetString()!;
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{jsonl}:{lineNumber}: not valid JSON ({e.Message})");
            }
            Console.Out.WriteLine(ToJson(tokenizer.Encode(value, bos)));
        }
        return Task.CompletedTask;
    }

    private static string ToJson(int[] ids) => "[" + string.Join(",", ids) + "]";
}
