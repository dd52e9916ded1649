using System.Globalization;
using System.Text.Json;
using System.Text;

namespace MiniCPM4.Checkpoints;

/// <summary>One weight tensor of an opened <see cref="Checkpoint"/>, served from its memory-mapped file.</summary>
public sealed class CheckpointTensor
{
    private readonly SafetensorsFile _file;
    private readonly TensorInfo _info;

    internal CheckpointTensor(SafetensorsFile file, TensorInfo info)
    {
        _file = file;
        _info = info;
    }

    /// <summary>Hugging Face tensor name, e.g. "model.layers.0.self_attn.q_proj.weight".</summary>
    public string Name => _info.Name;

    /// <summary>Element type (F32, F16 or BF16; I32 for packed int4 weights and AutoGPTQ's qzeros / g_idx).</summary>
    public TensorDType DType => _info.DType;

    /// <summary>Dimensions, outermost first, as stored (Linear weights are [out_features, in_features]).</summary>
    public long[] Shape => _info.Shape;

    /// <summary>Size of the tensor data in bytes.</summary>
    public long ByteLength => _info.ByteLength;

    /// <summary>Full path of the safetensors file holding the tensor.</summary>
    public string FilePath => _file.Path;

    /// <summary>The tensor data; valid until the checkpoint is disposed.</summary>
    /// <exception cref="CheckpointException">The tensor is over 2 GiB (use <see cref="Pointer"/>).</exception>
    public ReadOnlySpan<byte> GetBytes() => _file.GetBytes(_info);

    /// <summary>Pointer to the tensor data (<see cref="ByteLength"/> bytes); valid until the checkpoint is
    /// disposed.</summary>
    internal unsafe byte* Pointer => _file.GetPointer(_info);

    public override string ToString() => $"{Name} {DType} {TensorDTypeInfo.FormatShape(Shape)}";
}

/// <summary>
/// A Hugging Face-format MiniCPM checkpoint directory: config.json, optional generation_config.json and
/// safetensors weights (one file, or shards with model.safetensors.index.json). Opening validates the config
/// and every tensor the architecture needs (presence, dtype, shape) without reading the weight data; the data is
/// memory-mapped and stays available until <see cref="Dispose"/>.
/// A config.json with a quantization_config makes it an int4 (W4A16) checkpoint: each linear layer is then read as
/// CPM.cu's Marlin tensors (fused qkv_proj / gate_up_proj or per projection) or AutoGPTQ's, told apart by the
/// tensors' shapes (see <see cref="Linears"/>); the weights file is chosen as CPM.cu does (model_gptq.safetensors).
/// </summary>
public sealed class Checkpoint : IDisposable
{
    /// <summary>Name of the shard index file.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    internal const long MaxIndexBytes = 64L << 20;

    /// <summary>The weights file of CPM.cu's Marlin checkpoints.</summary>
    public const string GptqFileName = "model_gptq.safetensors";

    /// <summary>The weights file CPM.cu requires when a quantized checkpoint holds several safetensors files.</summary>
    public const string GptqMarlinFileName = "model_gptq_marlin.safetensors";

    private readonly List<SafetensorsFile> _files;
    private readonly List<CheckpointTensor> _tensors;
    private readonly Dictionary<string, CheckpointTensor> _byName;

    /// <summary>The validated model architecture.</summary>
    public MiniCpmConfig Config { get; }

    /// <summary>Sampling defaults from generation_config.json (all null when the file is absent).</summary>
    public GenerationConfig Generation { get; }

    /// <summary>Full path of the checkpoint directory.</summary>
    public string Directory { get; }

    /// <summary>
    /// The tensors the architecture needs, in canonical order (embeddings, layers, final norm, lm_head); an int4 layer
    /// contributes its qweight and scales (and AutoGPTQ's qzeros / g_idx) where a dense one has its weight.
    /// </summary>
    public IReadOnlyList<CheckpointTensor> Tensors => _tensors;

    /// <summary>The linear layers (seven per decoder layer, fewer entries when fused), in canonical order.</summary>
    public IReadOnlyList<CheckpointLinear> Linears { get; }

    /// <summary>The tensors that are not part of a linear layer (embedding, norms, LM head), in canonical
    /// order.</summary>
    internal IReadOnlyList<CheckpointTensor> OtherTensors { get; }

    /// <summary>The quantization_config of config.json, or null for a dense checkpoint.</summary>
    public QuantizationConfig? Quantization => Config.Quantization;

    /// <summary>The layout of the int4 layers (<see cref="LinearWeightFormat.Marlin"/> or <see
    /// cref="LinearWeightFormat.Gptq"/>), or null when every layer is dense.</summary>
    public LinearWeightFormat? Int4Format => Linears.FirstOrDefault(l => l.IsInt4)?.Format;

    /// <summary>Number of projections (of the 7 per layer) stored as int4; a fused entry counts each projection it
    /// holds.</summary>
    public int Int4ProjectionCount => Linears.Where(l => l.IsInt4).Sum(l => l.Projections.Count);

    /// <summary>Total bytes of <see cref="Tensors"/>.</summary>
    public long TotalBytes { get; }

    /// <summary>Full paths of the safetensors files in use.</summary>
    public IReadOnlyList<string> WeightFiles { get; }

    private Checkpoint(string directory, MiniCpmConfig config, GenerationConfig generation,
        List<SafetensorsFile> files, List<CheckpointTensor> tensors, List<CheckpointLinear> linears,
            List<CheckpointTensor> others)
    {
        Directory = directory;
        Config = config;
        Generation = generation;
        _files = files;
        _tensors = tensors;
        Linears = linears;
        OtherTensors = others;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        TotalBytes = tensors.Sum(t => t.ByteLength);
        WeightFiles = files.Select(f => f.Path).ToArray();
    }

    /// <summary>Finds a required tensor by name.</summary>
    public bool TryGetTensor(string name, out CheckpointTensor tensor) => _byName.TryGetValue(name, out tensor!);

    /// <summary>Opens and validates a checkpoint directory.</summary>
    /// <param name="directory">The directory holding config.json and the weights.</param>
    /// <param name="log">Receives informational lines (ignored tensors and the like).</param>
    /// <exception cref="CheckpointException">Anything wrong with the directory, its config or its weights.</exception>
    public static Checkpoint Open(string directory, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(directory);
        string dir;
        try
        {
            dir = Path.GetFullPath(directory);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new CheckpointException(directory, "invalid checkpoint directory path: " + e.Message, e);
        }
        dir = Path.TrimEndingDirectorySeparator(dir);
        if (!System.IO.Directory.Exists(dir))
        {
            throw new CheckpointException(dir, File.Exists(dir)
                ? "is a file, not a checkpoint directory"
                : "checkpoint directory does not exist");
        }

        string configPath = Path.Combine(dir, "config.json");
        if (!File.Exists(configPath))
            throw new CheckpointException(configPath,
                "config.json not found: a checkpoint directory needs a Hugging Face config.json");
        var config = MiniCpmConfig.Load(configPath);

        string genPath = Path.Combine(dir, "generation_config.json");
        var generation = File.Exists(genPath) ? GenerationConfig.Load(genPath) : new GenerationConfig();

        var files = new List<SafetensorsFile>();
        try
        {
            var map = FindWeights(dir, files, out string mapSource, config.Quantization is not null, log);
            var (tensors, linears, others) = Resolve(config, map, mapSource, configPath, log);
            return new Checkpoint(dir, config, generation, files, tensors, linears, others);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    /// <summary>Unmaps all weight files; tensor spans and pointers become invalid.</summary>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }

    // ------------------------------------------------------------------------------------------------------------

    /// <summary>Kind of a required tensor (used by the random-model writer to pick an initialisation).</summary>
    internal enum TensorRole { Embedding, Linear, Norm, LmHead }

    /// <summary>The tensors a config needs, with Hugging Face names and shapes, in canonical order.</summary>
    internal static List<(string Name, long[] Shape, TensorRole Role)> RequiredTensors(MiniCpmConfig c)
    {
        long hidden = c.HiddenSize, q = (long)c.NumAttentionHeads * c.HeadDim,
            kv = (long)c.NumKeyValueHeads * c.HeadDim;
        long inter = c.IntermediateSize, vocab = c.VocabSize;
        var list = new List<(string, long[], TensorRole)>(9 * c.NumHiddenLayers + 3)
        {
            ("model.embed_tokens.weight", new[] { vocab, hidden }, TensorRole.Embedding),
        };
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = $"model.layers.{i}.";
            list.Add((p + "input_layernorm.weight", new[] { hidden }, TensorRole.Norm));
            list.Add((p + "self_attn.q_proj.weight", new[] { q, hidden }, TensorRole.Linear));
            list.Add((p + "self_attn.k_proj.weight", new[] { kv, hidden }, TensorRole.Linear));
            list.Add((p + "self_attn.v_proj.weight", new[] { kv, hidden }, TensorRole.Linear));
            list.Add((p + "self_attn.o_proj.weight", new[] { hidden, q }, TensorRole.Linear));
            list.Add((p + "post_attention_layernorm.weight", new[] { hidden }, TensorRole.Norm));
            list.Add((p + "mlp.gate_proj.weight", new[] { inter, hidden }, TensorRole.Linear));
            list.Add((p + "mlp.up_proj.weight", new[] { inter, hidden }, TensorRole.Linear));
            list.Add((p + "mlp.down_proj.weight", new[] { hidden, inter }, TensorRole.Linear));
        }
        list.Add(("model.norm.weight", new[] { hidden }, TensorRole.Norm));
        if (!c.TieWordEmbeddings) list.Add(("lm_head.weight", new[] { vocab, hidden }, TensorRole.LmHead));
        return list;
    }

    /// <summary>The seven linear layers of every decoder layer as resolver slots, and CPM.cu's fused groups of
    /// them.</summary>
    internal static (List<LinearResolver.Slot> Slots, List<LinearResolver.FusedGroup> Groups) LinearLayout(
        MiniCpmConfig c, string prefix = "model.")
    {
        long hidden = c.HiddenSize, q = (long)c.NumAttentionHeads * c.HeadDim,
            kv = (long)c.NumKeyValueHeads * c.HeadDim;
        long inter = c.IntermediateSize;
        return LinearLayout(c.NumHiddenLayers, hidden, q, kv, inter, prefix);
    }

    internal static (List<LinearResolver.Slot> Slots, List<LinearResolver.FusedGroup> Groups) LinearLayout(int layers,
        long hidden,
        long q, long kv, long inter, string prefix)
    {
        var slots = new List<LinearResolver.Slot>(7 * layers);
        var groups = new List<LinearResolver.FusedGroup>(2 * layers);
        for (int i = 0; i < layers; i++)
        {
            string p = $"{prefix}layers.{i}.";
            LinearResolver.Slot sq = new(p + "self_attn.q_proj", q, hidden),
                sk = new(p + "self_attn.k_proj", kv, hidden),
                sv = new(p + "self_attn.v_proj", kv, hidden), so = new(p + "self_attn.o_proj", hidden, q),
                sg = new(p + "mlp.gate_proj", inter, hidden), su = new(p + "mlp.up_proj", inter, hidden),
                sd = new(p + "mlp.down_proj", hidden, inter);
            slots.AddRange([sq, sk, sv, so, sg, su, sd]);
            groups.Add(new(p + "self_attn.qkv_proj", [sq, sk, sv]));
            groups.Add(new(p + "mlp.gate_up_proj", [sg, su]));
        }
        return (slots, groups);
    }

    private static readonly CompositeFormat ConvertCommand = CompositeFormat.Parse(
        "python -c \"from transformers import AutoModelForCausalLM as M; M.from_pretrained('{0}', " +
            "trust_remote_code=True).save_pretrained('{1}', safe_serialization=True)\"");

    /// <summary>Locates and opens the weight files; returns tensor name → (file, info) and the path errors should
    /// name.</summary>
    /// <remarks>With <paramref name="quantized"/> (the config has a quantization_config) and no index, the file is
    /// chosen as
    /// CPM.cu does: model_gptq.safetensors, else the only .safetensors file, else (among several)
    /// model_gptq_marlin.safetensors.</remarks>
    internal static Dictionary<string, (SafetensorsFile File, TensorInfo Info)> FindWeights(
        string dir, List<SafetensorsFile> opened, out string mapSource, bool quantized = false,
            Action<string>? log = null)
    {
        string[] entries;
        try
        {
            entries = System.IO.Directory.GetFiles(dir).Select(Path.GetFileName).OfType<string>()
                .Order(StringComparer.Ordinal).ToArray();
        }
        catch (Exception e) when (CheckpointException.IsIoError(e))
        {
            throw new CheckpointException(dir, "cannot list the checkpoint directory: " + e.Message, e);
        }

        string? indexName = entries.Contains(IndexFileName) ? IndexFileName : null;
        if (indexName == null)
        {
            var otherIndexes =
                entries.Where(n => n.EndsWith(".safetensors.index.json", StringComparison.Ordinal)).ToArray();
            if (otherIndexes.Length == 1) indexName = otherIndexes[0];
            else if (otherIndexes.Length > 1)
                throw new CheckpointException(dir,
                    $"found several safetensors index files ({string.Join(", ", otherIndexes)}) and no " +
                    $"{IndexFileName}");
        }
        if (indexName != null)
        {
            mapSource = Path.Combine(dir, indexName);
            return LoadIndex(dir, mapSource, opened);
        }

        var safetensors = entries.Where(n => n.EndsWith(".safetensors", StringComparison.Ordinal)).ToArray();
        if (quantized && safetensors.Length > 1)
        {
            string? chosen = safetensors.Contains(GptqFileName) ? GptqFileName
                : safetensors.Contains(GptqMarlinFileName) ? GptqMarlinFileName : null;
            if (chosen is null)
                throw new CheckpointException(dir,
                    $"found {safetensors.Length} .safetensors files and no {IndexFileName}: a quantized " +
                    $"checkpoint's weights are {GptqFileName} or, among several files, {GptqMarlinFileName} " +
                    $"(found {string.Join(", ", safetensors.Take(10))}{(safetensors.Length > 10 ? ", ..." : "")})");
            log?.Invoke(
                $"quantized checkpoint: loading {chosen}, ignoring " +
                $"{string.Join(", ", safetensors.Where(n => n != chosen).Take(5))}");
            safetensors = [chosen];
        }
        if (safetensors.Length > 1)
            throw new CheckpointException(dir,
                $"found {safetensors.Length} .safetensors files but no {IndexFileName} saying which tensor is where: " +
                                               string.Join(", ", safetensors.Take(10))
                                                   + (safetensors.Length > 10 ? ", ..." : ""));
        if (safetensors.Length == 1)
        {
            var file = SafetensorsFile.Open(Path.Combine(dir, safetensors[0]));
            opened.Add(file);
            mapSource = file.Path;
            return file.Tensors.Values.ToDictionary(t => t.Name, t => (file, t), StringComparer.Ordinal);
        }

        var pickles =
            entries.Where(n => n.EndsWith(".bin", StringComparison.Ordinal)
            || n.EndsWith(".pt", StringComparison.Ordinal)
                                         || n.EndsWith(".pth", StringComparison.Ordinal)
                                             || n.EndsWith(".bin.index.json", StringComparison.Ordinal)
                                         || n.EndsWith(".ckpt", StringComparison.Ordinal)).ToArray();
        if (pickles.Length > 0)
        {
            string outDir = dir + "-safetensors";
            throw new CheckpointException(dir,
                $"found PyTorch checkpoint file(s) " +
                    $"({string.Join(", ", pickles.Take(5))}{(pickles.Length > 5 ? ", ..." : "")}) but no " +
                        $".safetensors weights. " +
                "PyTorch pickle files are not loaded because unpickling them can execute arbitrary code. " +
                "Convert the checkpoint to safetensors first, e.g.: "
                    + string.Format(CultureInfo.InvariantCulture, ConvertCommand, dir, outDir));
        }
        throw new CheckpointException(dir, quantized
            ? $"no weights found: expected {GptqFileName} (or another single .safetensors file) or {IndexFileName} " +
                $"with its shards"
            : $"no weights found: expected model.safetensors or {IndexFileName} with its shards");
    }

    private static Dictionary<string,
        (SafetensorsFile, TensorInfo)> LoadIndex(string dir, string indexPath, List<SafetensorsFile> opened)
    {
        var weightMap = new List<(string Tensor, string File)>();
        using (var doc = JsonFields.ParseDocument(JsonFields.ReadSmallTextFile(indexPath, MaxIndexBytes), indexPath))
        {
            var f = new JsonFields(doc.RootElement, indexPath);
            if (!f.TryGet("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new CheckpointException(indexPath, "the index has no \"weight_map\" object");
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new CheckpointException(indexPath,
                        $"weight_map entry for '{p.Name}' must be a file name string");
                weightMap.Add((p.Name, p.Value.GetString()!));
            }
        }

        var byFile = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        var map = new Dictionary<string, (SafetensorsFile, TensorInfo)>(StringComparer.Ordinal);
        foreach (var (tensor, fileName) in weightMap)
        {
            if (!byFile.TryGetValue(fileName, out var file))
            {
                if (!IsPlainFileName(fileName))
                    throw new CheckpointException(indexPath,
                        $"weight_map entry for '{tensor}' names '{fileName}', which is not a plain file name inside " +
                            $"the checkpoint directory");
                string full = Path.Combine(dir, fileName);
                if (!File.Exists(full))
                    throw new CheckpointException(indexPath,
                        $"weight_map entry for '{tensor}' names shard '{fileName}', which does not exist ({full})");
                file = SafetensorsFile.Open(full);
                opened.Add(file);
                byFile.Add(fileName, file);
            }
            if (!file.Tensors.TryGetValue(tensor, out var info))
                throw new CheckpointException(file.Path,
                    $"tensor '{tensor}' is listed in {indexPath} but is not in this shard");
            if (!map.TryAdd(tensor, (file, info)))
                throw new CheckpointException(indexPath, $"tensor '{tensor}' is listed twice in weight_map");
        }
        return map;
    }

    private static readonly System.Buffers.SearchValues<char> PathSeparatorsAndNul =
        System.Buffers.SearchValues.Create("/\\\0:");

    private static bool IsPlainFileName(string name) =>
        name.Length > 0 && name != "." && name != ".." && name.AsSpan().IndexOfAny(PathSeparatorsAndNul) < 0
        && name.IndexOfAny(Path.GetInvalidFileNameChars()) < 0 && !Path.IsPathRooted(name)
            && Path.GetFileName(name) == name;

    private static (List<CheckpointTensor> Tensors, List<CheckpointLinear> Linears,
        List<CheckpointTensor> Others) Resolve(
        MiniCpmConfig config, Dictionary<string, (SafetensorsFile File, TensorInfo Info)> map, string mapSource,
            string configPath,
        Action<string>? log)
    {
        bool quantized = config.Quantization is not null;
        var required = RequiredTensors(config);
        var (slots, groups) = LinearLayout(config);
        var used = new HashSet<string>(StringComparer.Ordinal);
        var linearMissing = new List<string>();
        var linears = LinearResolver.Resolve(slots, groups, map, quantized, linearMissing, used);

        // Missing tensors in canonical order (a missing linear is named by the tensor a checkpoint of its kind would
        // have).
        var missing = new List<string>();
        foreach (var (name, _, role) in required)
        {
            if (role == TensorRole.Linear)
            {
                string module = name[..^".weight".Length];
                if (!linears.ContainsKey(module)) missing.Add(module + (quantized ? ".qweight" : ".weight"));
            }
            else if (!map.ContainsKey(name))
            {
                missing.Add(name);
            }
        }
        if (missing.Count > 0)
        {
            string more = missing.Count > 1 ? $" (and {missing.Count - 1} other required tensor(s) are missing)" : "";
            throw new CheckpointException(mapSource, $"missing tensor '{missing[0]}'{more}");
        }

        var tensors = new List<CheckpointTensor>(required.Count);
        var linearList = new List<CheckpointLinear>(slots.Count);
        var others = new List<CheckpointTensor>();
        var emitted = new HashSet<CheckpointLinear>();
        foreach (var (name, shape, role) in required)
        {
            if (role == TensorRole.Linear)
            {
                var linear = linears[name[..^".weight".Length]];
                if (emitted.Add(linear))
                {
                    linearList.Add(linear);
                    tensors.AddRange(linear.Tensors);
                }
                continue;
            }
            var entry = map[name];
            LinearResolver.RequireDense(name, entry, shape);
            var tensor = new CheckpointTensor(entry.File, entry.Info);
            tensors.Add(tensor);
            others.Add(tensor);
            used.Add(name);
        }
        LinearResolver.CheckConsistent(linearList, quantized, configPath, mapSource);

        if (config.TieWordEmbeddings && map.ContainsKey("lm_head.weight"))
        {
            log?.Invoke(
                "ignoring lm_head.weight: tie_word_embeddings is true, so model.embed_tokens.weight serves as the LM " +
                "head");
            used.Add("lm_head.weight");
        }
        var extras = map.Keys.Where(k => !used.Contains(k)).Order(StringComparer.Ordinal).ToList();
        if (extras.Count > 0)
        {
            string sample = string.Join(", ", extras.Take(5)) + (extras.Count > 5 ? ", ..." : "");
            log?.Invoke($"ignoring {extras.Count} tensor(s) that MiniCPM does not use: {sample}");
        }
        return (tensors, linearList, others);
    }
}
