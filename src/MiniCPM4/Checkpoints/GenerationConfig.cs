using System.Text.Json;

namespace MiniCPM4.Checkpoints;

/// <summary>
/// Sampling defaults from a Hugging Face generation_config.json. The file is optional; every field is
/// nullable and null means "not specified".
/// </summary>
public sealed record GenerationConfig
{
    public int[]? EosTokenIds { get; init; }
    public int? BosTokenId { get; init; }
    public int? PadTokenId { get; init; }
    public bool? DoSample { get; init; }
    public float? Temperature { get; init; }
    public float? TopP { get; init; }
    public int? TopK { get; init; }
    public float? RepetitionPenalty { get; init; }
    public int? MaxNewTokens { get; init; }

    /// <summary>Reads and validates a generation_config.json file.</summary>
    /// <exception cref="CheckpointException">The file is missing, unreadable, not JSON, or has invalid
    /// values.</exception>
    public static GenerationConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new CheckpointException(full, "generation config file not found");
        return Parse(JsonFields.ReadSmallTextFile(full, MiniCpmConfig.MaxFileBytes), full);
    }

    /// <summary>Parses the text of a generation_config.json; <paramref name="pathForMessages"/> is named in
    /// errors.</summary>
    public static GenerationConfig Parse(string json, string pathForMessages)
    {
        ArgumentNullException.ThrowIfNull(json);
        using var doc = JsonFields.ParseDocument(json, pathForMessages);
        var f = new JsonFields(doc.RootElement, pathForMessages);
        var topP = f.Float("top_p", nonNegative: true);
        if (topP > 1) throw f.Error($"field 'top_p' must be between 0 and 1, found {topP}");
        return new GenerationConfig
        {
            EosTokenIds = f.IntOrIntList("eos_token_id"),
            BosTokenId = f.Int("bos_token_id", 0),
            // Some older configs use -1 for "no padding token".
            PadTokenId = f.Int("pad_token_id") is int pad && pad >= 0 ? pad : null,
            DoSample = f.Bool("do_sample"),
            Temperature = f.Float("temperature", nonNegative: true),
            TopP = topP,
            TopK = f.Int("top_k", 0),
            RepetitionPenalty = f.Float("repetition_penalty", positive: true),
            MaxNewTokens = f.Int("max_new_tokens", 0),
        };
    }

    /// <summary>Writes this config as a Hugging Face generation_config.json (unset fields are omitted).</summary>
    public void WriteJson(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        using var w = new Utf8JsonWriter(fs, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        if (BosTokenId is int bos) w.WriteNumber("bos_token_id", bos);
        if (EosTokenIds is { } eos)
        {
            if (eos.Length == 1) w.WriteNumber("eos_token_id", eos[0]);
            else
            {
                w.WriteStartArray("eos_token_id");
                foreach (var e in eos) w.WriteNumberValue(e);
                w.WriteEndArray();
            }
        }
        if (PadTokenId is int pad) w.WriteNumber("pad_token_id", pad);
        if (DoSample is bool ds) w.WriteBoolean("do_sample", ds);
        if (Temperature is float t) w.WriteNumber("temperature", t);
        if (TopP is float p) w.WriteNumber("top_p", p);
        if (TopK is int k) w.WriteNumber("top_k", k);
        if (RepetitionPenalty is float rp) w.WriteNumber("repetition_penalty", rp);
        if (MaxNewTokens is int m) w.WriteNumber("max_new_tokens", m);
        w.WriteEndObject();
        w.Flush();
        fs.WriteByte((byte)'\n');
    }
}
