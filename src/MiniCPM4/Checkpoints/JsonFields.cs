using System.Text.Json;

namespace MiniCPM4.Checkpoints;

/// <summary>
/// Typed, validated access to the fields of one JSON object of a config file. Every failure is a
/// <see cref="CheckpointException"/> naming the file and the field. A field whose value is JSON null counts
/// as absent (Hugging Face writes nulls for unset options).
/// </summary>
internal readonly struct JsonFields
{
    private readonly JsonElement _obj;
    private readonly string _path;
    private readonly string _prefix;

    public JsonFields(JsonElement obj, string path, string prefix = "")
    {
        _path = path;
        _prefix = prefix;
        if (obj.ValueKind != JsonValueKind.Object)
            throw new CheckpointException(path, prefix.Length == 0
                ? "expected a JSON object at the top level"
                : $"'{prefix.TrimEnd('.')}' must be a JSON object");
        _obj = obj;
    }

    public string Path => _path;

    public CheckpointException Error(string problem) => new(_path, problem);

    public bool TryGet(string name, out JsonElement value)
    {
        if (_obj.TryGetProperty(name, out value) && value.ValueKind != JsonValueKind.Null) return true;
        value = default;
        return false;
    }

    public bool Has(string name) => TryGet(name, out _);

    public JsonFields Object(string name) =>
        TryGet(name, out var v) ? new JsonFields(v, _path, _prefix + name + ".") : throw Missing(name);

    private CheckpointException Missing(string name) => Error($"required field '{_prefix}{name}' is missing");

    private CheckpointException WrongType(string name, string expected, JsonElement v) =>
        Error($"field '{_prefix}{name}' must be {expected}, found {Describe(v)}");

    private static string Describe(JsonElement v)
    {
        string raw = v.GetRawText();
        if (raw.Length > 40) raw = raw[..40] + "...";
        return v.ValueKind switch
        {
            JsonValueKind.Object => "an object",
            JsonValueKind.Array => "an array",
            _ => raw,
        };
    }

    private static bool TryInt64(JsonElement v, out long value)
    {
        value = 0;
        if (v.ValueKind != JsonValueKind.Number) return false;
        if (v.TryGetInt64(out value)) return true;
        // Accept integral floating-point spellings such as 4096.0.
        if (v.TryGetDouble(out double d) && double.IsFinite(d) && Math.Floor(d) == d && Math.Abs(d) < 9e15)
        {
            value = (long)d;
            return true;
        }
        return false;
    }

    public int? Int(string name, int min = int.MinValue, int max = int.MaxValue)
    {
        if (!TryGet(name, out var v)) return null;
        return ToInt(v, name, min, max);
    }

    private int ToInt(JsonElement v, string name, int min, int max)
    {
        if (!TryInt64(v, out long l)) throw WrongType(name, "an integer", v);
        if (l < min || l > max)
        {
            string range = max == int.MaxValue ? $">= {min}" : $"between {min} and {max}";
            throw Error($"field '{_prefix}{name}' must be {range}, found {l}");
        }
        return (int)l;
    }

    public int RequiredInt(string name, int min = 1, int max = int.MaxValue) =>
        Int(name, min, max) ?? throw Missing(name);

    public float? Float(string name, bool positive = false, bool nonNegative = false)
    {
        if (!TryGet(name, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d)) throw WrongType(name, "a number", v);
        float f = (float)d;
        if (!float.IsFinite(f)) throw Error($"field '{_prefix}{name}' must be a finite number, found {d}");
        if (positive && !(f > 0)) throw Error($"field '{_prefix}{name}' must be positive, found {d}");
        if (nonNegative && f < 0) throw Error($"field '{_prefix}{name}' must not be negative, found {d}");
        return f;
    }

    public bool? Bool(string name)
    {
        if (!TryGet(name, out var v)) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw WrongType(name, "true or false", v),
        };
    }

    public string? String(string name)
    {
        if (!TryGet(name, out var v)) return null;
        if (v.ValueKind != JsonValueKind.String) throw WrongType(name, "a string", v);
        return v.GetString();
    }

    public string[]? StringArray(string name)
    {
        if (!TryGet(name, out var v)) return null;
        if (v.ValueKind == JsonValueKind.String) return new[] { v.GetString()! };
        if (v.ValueKind != JsonValueKind.Array) throw WrongType(name, "an array of strings", v);
        var list = new List<string>();
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.String) throw WrongType(name, "an array of strings", v);
            list.Add(e.GetString()!);
        }
        return list.ToArray();
    }

    /// <summary>An integer or a list of integers (how Hugging Face spells eos_token_id).</summary>
    public int[]? IntOrIntList(string name, int min = 0)
    {
        if (!TryGet(name, out var v)) return null;
        if (v.ValueKind == JsonValueKind.Number) return new[] { ToInt(v, name, min, int.MaxValue) };
        if (v.ValueKind != JsonValueKind.Array) throw WrongType(name, "an integer or a list of integers", v);
        var list = new List<int>();
        foreach (var e in v.EnumerateArray()) list.Add(ToInt(e, name, min, int.MaxValue));
        return list.ToArray();
    }

    public float[]? FloatArray(string name)
    {
        if (!TryGet(name, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Array) throw WrongType(name, "an array of numbers", v);
        var list = new List<float>();
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out double d))
                throw WrongType(name, "an array of numbers", v);
            float f = (float)d;
            if (!float.IsFinite(f)) throw Error($"field '{_prefix}{name}' contains a non-finite value {d}");
            list.Add(f);
        }
        return list.ToArray();
    }

    /// <summary>Parses <paramref name="json"/>; invalid JSON becomes a <see cref="CheckpointException"/>.</summary>
    public static JsonDocument ParseDocument(string json, string path)
    {
        try
        {
            return JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw new CheckpointException(path, "invalid JSON: " + e.Message, e);
        }
    }

    /// <summary>Reads a small text file (config, index) after checking its size; I/O failures are wrapped.</summary>
    public static string ReadSmallTextFile(string path, long maxBytes)
    {
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            long length = fs.Length;
            if (length > maxBytes)
                throw new CheckpointException(path,
                    $"file is {length} bytes, larger than the {maxBytes} bytes allowed for this file");
            var bytes = new byte[length];
            fs.ReadExactly(bytes);
            try
            {
                return new System.Text.UTF8Encoding(false, true).GetString(bytes).TrimStart('\uFEFF');
            }
            catch (System.Text.DecoderFallbackException e)
            {
                throw new CheckpointException(path, "the file is not valid UTF-8", e);
            }
        }
        catch (Exception e) when (CheckpointException.IsIoError(e))
        {
            throw CheckpointException.Io(path, e);
        }
    }
}
