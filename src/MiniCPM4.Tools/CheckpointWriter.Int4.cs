using System.Buffers;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MiniCPM4.Checkpoints;

/// <summary>The tensor layout <see cref="CheckpointWriter.WriteInt4Checkpoint"/> writes.</summary>
public enum Int4CheckpointFormat
{
    /// <summary>
    /// CPM.cu's Marlin checkpoint: model_gptq.safetensors with fused self_attn.qkv_proj and mlp.gate_up_proj, per layer
    /// o_proj and down_proj, each as qweight I32 [K/16, 2N] + scales F16 [K/128, N] (Marlin-permuted).
    /// </summary>
    Marlin,

    /// <summary>
    /// AutoGPTQ's layout: model.safetensors with per-projection qweight I32 [K/8, N], scales F16 [K/128, N],
    /// qzeros I32 [K/128, N/8] (0x77777777: zero point 8 stored as 7) and g_idx I32 [K] (k / 128).
    /// </summary>
    Gptq,
}

/// <summary>Options of <see cref="CheckpointWriter.WriteInt4Checkpoint"/>.</summary>
public sealed record Int4WriteOptions
{
    public Int4CheckpointFormat Format { get; init; } = Int4CheckpointFormat.Marlin;
    /// <summary>Clip search per group (see <see cref="MiniCpmLoadOptions.QuantizationClipSearch"/>).</summary>
    public bool ClipSearch { get; init; }
    /// <summary>Quantization threads; 0 uses every core.</summary>
    public int Threads { get; init; }
    /// <summary>Write into a non-empty output directory (its weight files are replaced).</summary>
    public bool Overwrite { get; init; }
}

/// <summary>What <see cref="CheckpointWriter.WriteInt4Checkpoint"/> did.</summary>
/// <param name="OutputDirectory">The checkpoint directory written (full path).</param>
/// <param name="WeightsFile">The safetensors file written.</param>
/// <param name="QuantizedLinears">Projections quantized from dense weights.</param>
/// <param name="RepackedLinears">Projections that were int4 already (AutoGPTQ repacked, or Marlin copied).</param>
/// <param name="BytesBefore">Weight bytes of the source checkpoint.</param>
/// <param name="BytesAfter">Bytes of the written weights file.</param>
/// <param name="Elapsed">Wall-clock time of the whole conversion.</param>
public sealed record Int4WriteResult(string OutputDirectory, string WeightsFile, int QuantizedLinears,
    int RepackedLinears,
    long BytesBefore, long BytesAfter, TimeSpan Elapsed);

public static partial class CheckpointWriter
{
    /// <summary>The quantization_config an int4 checkpoint gets: CPM.cu's (gptq, 4 bits, group 128, symmetric, static
    /// groups).</summary>
    internal static QuantizationConfig WrittenQuantizationConfig { get; } =
        new("gptq", 4, 128, true, false, "gptq", true, false);

    /// <summary>
    /// Writes an int4 (W4A16) copy of a checkpoint: the seven linear layers of every decoder layer quantized (dense
    /// source; round-to-nearest with the per-group absmax, optionally with clip search) or repacked (AutoGPTQ source),
    /// the embedding, norms and LM head copied in their dtype; config.json with CPM.cu's quantization_config; and the
    /// directory's other top-level files (tokenizer, generation config, ...) copied as they are. The result loads
    /// directly
    /// (<see cref="MiniCpmModel.Load(string, MiniCpmLoadOptions?)"/>) and gives the same logits as loading the source
    /// with
    /// <see cref="WeightQuantization.Int4"/>; in the Marlin format CPM.cu can read it too.
    /// Memory: one (fused) layer's int4 tensors at a time; the source stays memory-mapped.
    /// </summary>
    /// <exception cref="CheckpointException">The source checkpoint is invalid.</exception>
    /// <exception cref="MiniCpmUnsupportedException">A linear layer's shape cannot be int4, or the conversion is not
    /// supported.</exception>
    /// <exception cref="IOException">The output is the source, or is not empty and <see
    /// cref="Int4WriteOptions.Overwrite"/> is false.</exception>
    public static Int4WriteResult WriteInt4Checkpoint(string sourceDirectory, string outputDirectory,
        Int4WriteOptions? options = null,
        IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sourceDirectory);
        ArgumentNullException.ThrowIfNull(outputDirectory);
        options ??= new Int4WriteOptions();
        var clock = Stopwatch.StartNew();
        string src = Path.TrimEndingDirectorySeparator(Path.GetFullPath(sourceDirectory));
        string dst = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputDirectory));
        if (SameDirectory(src, dst))
            throw new IOException(
                $"the output directory {dst} is the source checkpoint; write the int4 checkpoint somewhere else");
        if (Directory.Exists(dst) && Directory.EnumerateFileSystemEntries(dst).Any() && !options.Overwrite)
            throw new IOException(
                $"the output directory {dst} is not empty (overwrite it with --force / Int4WriteOptions.Overwrite)");
        Interop.NativeLibraryResolver.EnsureLoaded();

        using var checkpoint = Checkpoint.Open(src);
        bool gptq = options.Format == Int4CheckpointFormat.Gptq;
        if (gptq && checkpoint.Int4Format is { } existing)
            throw new MiniCpmUnsupportedException(existing == LinearWeightFormat.Gptq
                ? $"{src} is already an AutoGPTQ int4 checkpoint"
                : $"{src} is a Marlin int4 checkpoint; converting Marlin tensors back to the AutoGPTQ layout is not " +
                    $"supported");
        if (LinearLoader.CheckQuantizable(
            checkpoint.Linears.Where(l => !l.IsInt4).Select(l => (l.Name, l.OutFeatures, l.InFeatures))) is { } bad)
            throw bad;

        Directory.CreateDirectory(dst);
        foreach (var f in Directory.GetFiles(dst))
        {
            string n = Path.GetFileName(f);
            if (n.EndsWith(".safetensors", StringComparison.Ordinal)
                || n.EndsWith(".safetensors.index.json", StringComparison.Ordinal)) File.Delete(f);
        }

        var settings = new Int4Settings(options.ClipSearch, options.Threads);
        var plan = new Int4Plan(checkpoint, settings, gptq);
        string weightsName = gptq ? "model.safetensors" : Checkpoint.GptqFileName;
        string weightsPath = Path.Combine(dst, weightsName);
        long total = plan.Entries.Sum(e => e.Bytes), done = 0;
        try
        {
            WriteSafetensorsStreaming(weightsPath, plan.Entries.Select(e => (e.Name, e.DType, e.Shape)).ToList(),
                new Dictionary<string, string> { ["format"] = "pt" }, (i, stream) =>
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    plan.Entries[i].Write(stream);
                    done += plan.Entries[i].Bytes;
                    progress?.Report(total == 0 ? 1 : (double)done / total);
                });
        }
        catch
        {
            try
            {
                File.Delete(weightsPath);
            }
            catch (IOException)
            {
            }
            throw;
        }
        finally
        {
            plan.Dispose();
        }

        WriteQuantizedConfig(Path.Combine(checkpoint.Directory, "config.json"), Path.Combine(dst, "config.json"));
        foreach (var f in Directory.GetFiles(src))
        {
            string n = Path.GetFileName(f);
            if (n == "config.json" || IsWeightsFile(n)) continue;
            File.Copy(f, Path.Combine(dst, n), overwrite: true);
        }
        progress?.Report(1);
        return new Int4WriteResult(dst, weightsPath, plan.Quantized, plan.Repacked, checkpoint.TotalBytes,
            new FileInfo(weightsPath).Length,
            clock.Elapsed);
    }

    private static bool SameDirectory(string a, string b)
    {
        if (string.Equals(a, b, OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase
            : StringComparison.Ordinal)) return true;
        try
        {
            // The same directory under another name (a symbolic link to it, say).
            string ra = new DirectoryInfo(a).ResolveLinkTarget(true)?.FullName ?? a;
            string rb = Directory.Exists(b) ? new DirectoryInfo(b).ResolveLinkTarget(true)?.FullName ?? b : b;
            return string.Equals(Path.TrimEndingDirectorySeparator(ra), Path.TrimEndingDirectorySeparator(rb),
                StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static bool IsWeightsFile(string n) =>
        n.EndsWith(".safetensors", StringComparison.Ordinal)
            || n.EndsWith(".safetensors.index.json", StringComparison.Ordinal)
        || n.EndsWith(".bin", StringComparison.Ordinal) || n.EndsWith(".bin.index.json", StringComparison.Ordinal)
        || n.EndsWith(".pt", StringComparison.Ordinal) || n.EndsWith(".pth", StringComparison.Ordinal)
            || n.EndsWith(".ckpt", StringComparison.Ordinal);

    /// <summary>The source config.json with quantization_config set (every other field kept as it was).</summary>
    private static void WriteQuantizedConfig(string sourceConfig, string path)
    {
        var root = JsonNode.Parse(JsonFields.ReadSmallTextFile(sourceConfig, MiniCpmConfig.MaxFileBytes)) as JsonObject
                   ?? throw new CheckpointException(sourceConfig, "expected a JSON object at the top level");
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
            WrittenQuantizationConfig.Write(w);
        root["quantization_config"] = JsonNode.Parse(buffer.ToArray());
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    /// <summary>The output tensors of an int4 checkpoint in file order, each with the code that writes its
    /// bytes.</summary>
    private sealed unsafe class Int4Plan : IDisposable
    {
        public sealed record Entry(string Name, TensorDType DType, long[] Shape, long Bytes, Action<Stream> Write);

        private readonly Int4Settings _settings;
        private MarlinTensors? _pendingMarlin;
        private byte[]? _pendingScales;
        private int _pendingScalesBytes;

        public List<Entry> Entries { get; } = new();
        public int Quantized { get; private set; }
        public int Repacked { get; private set; }

        public Int4Plan(Checkpoint checkpoint, Int4Settings settings, bool gptq)
        {
            _settings = settings;
            var config = checkpoint.Config;
            var byProjection = new Dictionary<string, CheckpointLinear>(StringComparer.Ordinal);
            foreach (var l in checkpoint.Linears)
                foreach (var p in l.Projections) byProjection[p] = l;
            foreach (var l in checkpoint.Linears)
            {
                if (l.Format == LinearWeightFormat.Dense) Quantized += l.Projections.Count;
                else Repacked += l.Projections.Count;
            }
            var others = checkpoint.OtherTensors.ToDictionary(t => t.Name, StringComparer.Ordinal);

            Copy(others["model.embed_tokens.weight"]);
            var (_, groups) = Checkpoint.LinearLayout(config);
            for (int i = 0; i < config.NumHiddenLayers; i++)
            {
                string p = $"model.layers.{i}.";
                Copy(others[p + "input_layernorm.weight"]);
                var qkv = groups[2 * i];
                var gateUp = groups[2 * i + 1];
                if (gptq)
                {
                    foreach (var m in qkv.Members) Gptq(byProjection[m.Name]);
                    Gptq(byProjection[p + "self_attn.o_proj"]);
                    Copy(others[p + "post_attention_layernorm.weight"]);
                    foreach (var m in gateUp.Members) Gptq(byProjection[m.Name]);
                    Gptq(byProjection[p + "mlp.down_proj"]);
                }
                else
                {
                    Marlin(qkv.Name, qkv.Members.Select(m => byProjection[m.Name]).Distinct().ToList());
                    Marlin(p + "self_attn.o_proj", [byProjection[p + "self_attn.o_proj"]]);
                    Copy(others[p + "post_attention_layernorm.weight"]);
                    Marlin(gateUp.Name, gateUp.Members.Select(m => byProjection[m.Name]).Distinct().ToList());
                    Marlin(p + "mlp.down_proj", [byProjection[p + "mlp.down_proj"]]);
                }
            }
            Copy(others["model.norm.weight"]);
            if (others.TryGetValue("lm_head.weight", out var head)) Copy(head);
        }

        private void Copy(CheckpointTensor t) =>
            Entries.Add(new Entry(t.Name, t.DType, t.Shape, t.ByteLength, s => WriteRaw(s, t.Pointer, t.ByteLength)));

        /// <summary>qweight + scales of the Marlin module <paramref name="name"/> built from <paramref name="parts"/>
        /// (in column order).</summary>
        private void Marlin(string name, List<CheckpointLinear> parts)
        {
            long k = parts[0].InFeatures, n = parts.Sum(l => l.OutFeatures);
            Entries.Add(
                new Entry(name + ".qweight", TensorDType.I32, [k / 16, 2 * n], MarlinTensors.QWeightByteCount(n, k),
                s =>
            {
                _pendingMarlin?.Dispose();
                _pendingMarlin = BuildMarlin(parts);
                s.Write(_pendingMarlin.QWeight);
            }));
            Entries.Add(
                new Entry(name + ".scales", TensorDType.F16, [k / LinearResolver.GroupSize, n],
                MarlinTensors.ScalesByteCount(n, k), s =>
            {
                var m = _pendingMarlin ?? throw new InvalidOperationException("scales written before their qweight");
                s.Write(m.Scales);
                m.Dispose();
                _pendingMarlin = null;
            }));
        }

        private MarlinTensors BuildMarlin(List<CheckpointLinear> parts)
        {
            if (parts.Count == 1) return ToMarlin(parts[0]);
            var built = new List<MarlinTensors>(parts.Count);
            try
            {
                foreach (var l in parts) built.Add(ToMarlin(l));
                return Int4Weights.ConcatN(built);
            }
            finally
            {
                foreach (var b in built) b.Dispose();
            }
        }

        private MarlinTensors ToMarlin(CheckpointLinear l) => l.Format switch
        {
            LinearWeightFormat.Dense =>
                Int4Weights.Quantize(l.Weight!.Name, l.Weight.FilePath, l.Weight.DType, l.Weight.Pointer,
                l.Weight.ByteLength, l.OutFeatures, l.InFeatures, _settings),
            LinearWeightFormat.Gptq => Int4Weights.RepackGptq(l),
            _ => Int4Weights.CopyMarlin(l),
        };

        /// <summary>AutoGPTQ tensors of a dense projection: qweight, scales, qzeros (all 7) and g_idx (k /
        /// 128).</summary>
        private void Gptq(CheckpointLinear l)
        {
            var w = l.Weight!;
            long k = l.InFeatures, n = l.OutFeatures;
            long qBytes = k / 8 * n * 4, sBytes = k / LinearResolver.GroupSize * n * 2;
            Entries.Add(new Entry(l.Name + ".qweight", TensorDType.I32, [k / 8, n], qBytes, s =>
            {
                byte[] q = ArrayPool<byte>.Shared.Rent(Int4Weights.CheckedBytes(qBytes, "qweight"));
                ReturnPendingScales();
                _pendingScalesBytes = Int4Weights.CheckedBytes(sBytes, "scales");
                _pendingScales = ArrayPool<byte>.Shared.Rent(_pendingScalesBytes);
                try
                {
                    Int4Weights.QuantizeGptq(w.Name, w.FilePath, w.DType, w.Pointer, w.ByteLength, n, k, _settings,
                        q.AsSpan(0, (int)qBytes), _pendingScales.AsSpan(0, _pendingScalesBytes));
                    s.Write(q, 0, (int)qBytes);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(q);
                }
            }));
            Entries.Add(new Entry(l.Name + ".scales", TensorDType.F16, [k / LinearResolver.GroupSize, n], sBytes, s =>
            {
                s.Write(_pendingScales ?? throw new InvalidOperationException("scales written before their qweight"), 0,
                    _pendingScalesBytes);
                ReturnPendingScales();
            }));
            long groups = k / LinearResolver.GroupSize;
            Entries.Add(new Entry(l.Name + ".qzeros", TensorDType.I32, [groups, n / 8], groups * (n / 8) * 4, s =>
            {
                Span<byte> word = [0x77, 0x77, 0x77, 0x77];
                for (long i = 0; i < groups * (n / 8); i++) s.Write(word);
            }));
            Entries.Add(new Entry(l.Name + ".g_idx", TensorDType.I32, [k], k * 4, s =>
            {
                Span<byte> word = stackalloc byte[4];
                for (long i = 0; i < k; i++)
                {
                    System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(word,
                        (int)(i / LinearResolver.GroupSize));
                    s.Write(word);
                }
            }));
        }

        private void ReturnPendingScales()
        {
            if (_pendingScales is not null) ArrayPool<byte>.Shared.Return(_pendingScales);
            _pendingScales = null;
        }

        private static void WriteRaw(Stream s, byte* p, long length)
        {
            const int Chunk = 1 << 30;
            for (long off = 0; off < length; off += Chunk)
                s.Write(new ReadOnlySpan<byte>(p + off, (int)Math.Min(Chunk, length - off)));
        }

        public void Dispose()
        {
            _pendingMarlin?.Dispose();
            _pendingMarlin = null;
            ReturnPendingScales();
        }
    }
}
