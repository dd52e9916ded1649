using System.Globalization;
using System.Text.Json;

namespace MiniCPM4.Tokenization;

/// <summary>
/// Reads the Hugging Face tokenizer files of a checkpoint (all optional): <c>tokenizer_config.json</c>,
/// <c>added_tokens.json</c> and <c>tokenizer.json</c>. Uses <see cref="JsonDocument"/> only (no reflection-based
/// serialization), so it is trimming- and AOT-safe.
/// </summary>
internal static class CheckpointTokenizerFiles
{
    internal sealed record Result(
        IReadOnlyList<MiniCpmTokenizer.AddedToken> AddedTokens,
        bool? AddBosToken,
        string? BosToken,
        string? EosToken,
        string? ChatTemplate);

    private sealed class Entry(string content, int id, string source)
    {
        public string Content { get; } = content;
        public int Id { get; } = id;
        public string Source { get; } = source;
        public bool? Special { get; set; }
    }

    public static Result Read(string directory)
    {
        var byContent = new Dictionary<string, Entry>(StringComparer.Ordinal);
        var byId = new Dictionary<int, Entry>();
        bool? addBos = null;
        string? bos = null, eos = null, unk = null, pad = null, chatTemplate = null;

        void Add(string content, int id, bool? special, string path)
        {
            if (string.IsNullOrEmpty(content))
                throw new InvalidDataException($"{path}: an added token has empty content.");
            if (id < 0 || id >= 1 << 24)
                throw new InvalidDataException($"{path}: the added token \"{content}\" has an invalid id {id}.");
            if (byContent.TryGetValue(content, out var existing))
            {
                if (existing.Id != id)
                    throw new InvalidDataException(
                        $"{path}: the added token \"{content}\" has id {id}, but {existing.Source} gives it id " +
                        $"{existing.Id}.");
                if (special is not null)
                    existing.Special = (existing.Special ?? false) || special.Value;
                return;
            }

            if (byId.TryGetValue(id, out var other))
                throw new InvalidDataException(
                    $"{path}: the id {id} is given to \"{content}\", but {other.Source} gives it to " +
                    $"\"{other.Content}\".");
            var entry = new Entry(content, id, Path.GetFileName(path)) { Special = special };
            byContent.Add(content, entry);
            byId.Add(id, entry);
        }

        // tokenizer_config.json
        string path = Path.Combine(directory, "tokenizer_config.json");
        if (File.Exists(path))
        {
            using var doc = Parse(path);
            var root = RequireObject(doc.RootElement, path, "the root");
            foreach (var property in root.EnumerateObject())
            {
                switch (property.Name)
                {
                    case "added_tokens_decoder":
                        if (property.Value.ValueKind == JsonValueKind.Null)
                            break;
                        RequireObject(property.Value, path, "'added_tokens_decoder'");
                        foreach (var token in property.Value.EnumerateObject())
                        {
                            if (!int.TryParse(token.Name, NumberStyles.None, CultureInfo.InvariantCulture, out int id))
                                throw new InvalidDataException(
                                    $"{path}: 'added_tokens_decoder' has a key \"{token.Name}\" that is not a token " +
                                    $"id.");
                            var value = RequireObject(token.Value, path, $"'added_tokens_decoder.{token.Name}'");
                            string content =
                                RequireString(value, "content", path, $"'added_tokens_decoder.{token.Name}'");
                            Add(content, id, OptionalBool(value, "special", path), path);
                        }

                        break;
                    case "add_bos_token":
                        addBos = property.Value.ValueKind switch
                        {
                            JsonValueKind.True => true,
                            JsonValueKind.False => false,
                            JsonValueKind.Null => null,
                            _ => throw new InvalidDataException($"{path}: 'add_bos_token' must be true or false."),
                        };
                        break;
                    case "bos_token":
                        bos = TokenName(property.Value, path, property.Name);
                        break;
                    case "eos_token":
                        eos = TokenName(property.Value, path, property.Name);
                        break;
                    case "unk_token":
                        unk = TokenName(property.Value, path, property.Name);
                        break;
                    case "pad_token":
                        pad = TokenName(property.Value, path, property.Name);
                        break;
                    case "chat_template":
                        chatTemplate = ChatTemplateOf(property.Value, path);
                        break;
                }
            }
        }

        // added_tokens.json: { "<|im_start|>": 73441, ... }
        path = Path.Combine(directory, "added_tokens.json");
        if (File.Exists(path))
        {
            using var doc = Parse(path);
            var root = RequireObject(doc.RootElement, path, "the root");
            foreach (var property in root.EnumerateObject())
            {
                if (property.Value.ValueKind != JsonValueKind.Number || !property.Value.TryGetInt32(out int id))
                    throw new InvalidDataException($"{path}: the id of \"{property.Name}\" is not an integer.");
                Add(property.Name, id, null, path);
            }
        }

        // tokenizer.json: { "added_tokens": [ { "id": 73440, "content": "<|im_end|>", "special": true, ... } ], ... }
        path = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(path))
        {
            using var doc = Parse(path);
            var root = RequireObject(doc.RootElement, path, "the root");
            if (root.TryGetProperty("added_tokens", out var list) && list.ValueKind != JsonValueKind.Null)
            {
                if (list.ValueKind != JsonValueKind.Array)
                    throw new InvalidDataException($"{path}: 'added_tokens' must be an array.");
                int index = 0;
                foreach (var item in list.EnumerateArray())
                {
                    string where = $"'added_tokens[{index++}]'";
                    RequireObject(item, path, where);
                    if (!item.TryGetProperty("id", out var idElement) || idElement.ValueKind != JsonValueKind.Number
                        || !idElement.TryGetInt32(out int id))
                        throw new InvalidDataException($"{path}: {where} has no integer 'id'.");
                    Add(RequireString(item, "content", path, where), id, OptionalBool(item, "special", path), path);
                }
            }
        }

        // The named special tokens are special.
        foreach (string? name in (ReadOnlySpan<string?>)[bos, eos, unk, pad])
        {
            if (name is not null && byContent.TryGetValue(name, out var entry))
                entry.Special = true;
        }

        var tokens = byContent.Values
            .OrderBy(e => e.Id)
            .Select(e => new MiniCpmTokenizer.AddedToken(e.Content, e.Id, e.Special ?? true))
            .ToList();
        return new Result(tokens, addBos, bos, eos, chatTemplate);
    }

    private static JsonDocument Parse(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return JsonDocument.Parse(stream,
                new JsonDocumentOptions { AllowTrailingCommas = false,
                CommentHandling = JsonCommentHandling.Disallow });
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path}: malformed JSON: {ex.Message}", ex);
        }
    }

    private static JsonElement RequireObject(JsonElement element, string path, string what) =>
        element.ValueKind == JsonValueKind.Object
            ? element
            : throw new InvalidDataException($"{path}: {what} must be a JSON object, not {element.ValueKind}.");

    private static string RequireString(JsonElement obj, string name, string path, string what) =>
        obj.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
            ? value.GetString()!
            : throw new InvalidDataException($"{path}: {what} has no string '{name}'.");

    private static bool? OptionalBool(JsonElement obj, string name, string path)
    {
        if (!obj.TryGetProperty(name, out var value))
            return null;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Null => null,
            _ => throw new InvalidDataException($"{path}: '{name}' must be true or false."),
        };
    }

    /// <summary>A special token is written either as a string or as an AddedToken object {"content": ...}.</summary>
    private static string? TokenName(JsonElement value, string path, string name) => value.ValueKind switch
    {
        JsonValueKind.Null => null,
        JsonValueKind.String => value.GetString(),
        JsonValueKind.Object => RequireString(value, "content", path, $"'{name}'"),
        _ => throw new InvalidDataException($"{path}: '{name}' must be a string or an object with 'content'."),
    };

    /// <summary>The template is a string, or a list of {"name", "template"} of which "default" is used.</summary>
    private static string? ChatTemplateOf(JsonElement value, string path)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.Null:
                return null;
            case JsonValueKind.String:
                return value.GetString();
            case JsonValueKind.Array:
                string? first = null;
                foreach (var item in value.EnumerateArray())
                {
                    RequireObject(item, path, "a 'chat_template' entry");
                    string template = RequireString(item, "template", path, "a 'chat_template' entry");
                    first ??= template;
                    if (item.TryGetProperty("name", out var name) && name.ValueKind == JsonValueKind.String
                        && name.GetString() == "default")
                        return template;
                }

                return first;
            default:
                throw new InvalidDataException(
                    $"{path}: 'chat_template' must be a string or a list of named templates.");
        }
    }
}
