using System.Buffers.Binary;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace MiniCPM4.Checkpoints;

/// <summary>Model sizes <see cref="CheckpointWriter.CreateRandomModel(string, ModelPreset, ulong, TensorDType,
/// IProgress{double}?)"/> can produce.</summary>
public enum ModelPreset
{
    /// <summary>A few-MB model for tests: vocab 32002, hidden 128, 2 layers, 4 heads (2 KV), head_dim 32, FFN 384,
    /// tied.</summary>
    Tiny,
    /// <summary>MiniCPM4-0.5B shapes: vocab 73448, hidden 1024, 24 layers, 16 heads (2 KV), head_dim 64, FFN 4096,
    /// tied.</summary>
    MiniCpm4_0_5B,
    /// <summary>MiniCPM4-8B shapes: vocab 73448, hidden 4096, 32 layers, 32 heads (2 KV), head_dim 128, FFN 16384,
    /// untied, LongRoPE.</summary>
    MiniCpm4_8B,
}

/// <summary>Writes safetensors files and complete random-weight Hugging Face checkpoints.</summary>
public static partial class CheckpointWriter
{
    /// <summary>Name of the embedded SentencePiece model shipped as tokenizer.model.</summary>
    internal const string TokenizerResourceName = "MiniCPM4.Resources.tokenizer.model";

    /// <summary>ChatML chat template in the MiniCPM4 style.</summary>
    public const string ChatTemplate =
        "{% for message in messages %}" +
        "{% if loop.first and message['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful " +
            "assistant.<|im_end|>\\n' }}{% endif %}" +
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
        "{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    private const int ChunkElements = 1 << 20;

    // ------------------------------------------------------------------------------------------------------------
    // safetensors

    /// <summary>
    /// Writes a safetensors file: the 8-byte little-endian header length, the JSON header (padded with spaces to a
    /// multiple of 8 bytes) and the tensor data in the given order.
    /// </summary>
    /// <exception cref="ArgumentException">A tensor's data length disagrees with its shape and dtype, or a name
    /// repeats.</exception>
    public static void WriteSafetensors(string path,
        IEnumerable<(string Name, TensorDType DType, long[] Shape, ReadOnlyMemory<byte> Data)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        var specs = list.Select(t => (t.Name, t.DType, t.Shape)).ToList();
        var lengths = ByteLengths(specs);
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i].Data.Length != lengths[i])
                throw new ArgumentException(
                    $"tensor '{list[i].Name}': {list[i].Data.Length} bytes of data, but shape " +
                                            $"{TensorDTypeInfo.FormatShape(list[i].Shape)} of {list[i].DType} needs " +
                                                $"{lengths[i]}", nameof(tensors));
        }
        WriteSafetensorsStreaming(path, specs, metadata, (i, stream) => stream.Write(list[i].Data.Span));
    }

    private static long[] ByteLengths(IReadOnlyList<(string Name, TensorDType DType, long[] Shape)> specs)
    {
        var lengths = new long[specs.Count];
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < specs.Count; i++)
        {
            var (name, dtype, shape) = specs[i];
            ArgumentNullException.ThrowIfNull(name);
            ArgumentNullException.ThrowIfNull(shape);
            if (name == "__metadata__" || !names.Add(name))
                throw new ArgumentException($"tensor name '{name}' is reserved or appears twice", "tensors");
            long n = dtype.SizeInBytes();
            foreach (long d in shape)
            {
                if (d < 0) throw new ArgumentException($"tensor '{name}' has a negative dimension", "tensors");
                n = checked(n * d);
            }
            lengths[i] = n;
        }
        return lengths;
    }

    /// <summary>
    /// Writes a safetensors file whose data is produced by <paramref name="writeData"/>(index, stream), called once
    /// per tensor in order; it must write exactly the tensor's byte length.
    /// </summary>
    internal static void WriteSafetensorsStreaming(string path,
        IReadOnlyList<(string Name, TensorDType DType, long[] Shape)> specs,
        IReadOnlyDictionary<string, string>? metadata, Action<int, Stream> writeData)
    {
        var lengths = ByteLengths(specs);
        var json = new MemoryStream();
        using (var w = new Utf8JsonWriter(json))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var kv in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(kv.Key,
                    kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            for (int i = 0; i < specs.Count; i++)
            {
                w.WriteStartObject(specs[i].Name);
                w.WriteString("dtype", specs[i].DType.ToSafetensorsName());
                w.WriteStartArray("shape");
                foreach (long d in specs[i].Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                offset += lengths[i];
                w.WriteNumberValue(offset);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        while (json.Length % 8 != 0) json.WriteByte((byte)' ');

        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> prefix = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)json.Length);
        fs.Write(prefix);
        json.Position = 0;
        json.CopyTo(fs);
        for (int i = 0; i < specs.Count; i++)
        {
            long before = fs.Position;
            writeData(i, fs);
            if (fs.Position - before != lengths[i])
                throw new InvalidOperationException(
                    $"tensor '{specs[i].Name}': wrote {fs.Position - before} bytes, expected {lengths[i]}");
        }
    }

    // ------------------------------------------------------------------------------------------------------------
    // random models

    /// <summary>The config.json a preset writes (for the given weight dtype).</summary>
    public static MiniCpmConfig GetPresetConfig(ModelPreset preset, TensorDType dtype = TensorDType.BF16)
    {
        string torchDtype = dtype switch
        {
            TensorDType.BF16 => "bfloat16",
            TensorDType.F16 => "float16",
            TensorDType.F32 => "float32",
            _ => throw new ArgumentException($"random models can be written as F32, F16 or BF16, not {dtype}",
                nameof(dtype)),
        };
        var common = new MiniCpmConfig
        {
            Architectures = new[] { "MiniCPMForCausalLM" },
            ModelType = "minicpm",
            RmsNormEps = 1e-6f,
            RopeTheta = 10000f,
            ScaleEmb = 12f,
            ScaleDepth = 1.4f,
            DimModelBase = 256f,
            BosTokenId = 1,
            EosTokenIds = new[] { 2, 32001 },
            TorchDtype = torchDtype,
        };
        return preset switch
        {
            ModelPreset.Tiny => common with
            {
                VocabSize = 32002, HiddenSize = 128, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
                HeadDim = 32, IntermediateSize = 384, MaxPositionEmbeddings = 2048, TieWordEmbeddings = true,
                // A base below hidden_size makes the LM-head multiplier (dim_model_base / hidden_size = 0.5)
                // non-trivial.
                DimModelBase = 64f,
            },
            ModelPreset.MiniCpm4_0_5B => common with
            {
                VocabSize = 73448, HiddenSize = 1024, NumHiddenLayers = 24, NumAttentionHeads = 16,
                    NumKeyValueHeads = 2,
                HeadDim = 64, IntermediateSize = 4096, MaxPositionEmbeddings = 32768, TieWordEmbeddings = true,
            },
            ModelPreset.MiniCpm4_8B => common with
            {
                VocabSize = 73448, HiddenSize = 4096, NumHiddenLayers = 32, NumAttentionHeads = 32,
                    NumKeyValueHeads = 2,
                HeadDim = 128, IntermediateSize = 16384, MaxPositionEmbeddings = 32768, TieWordEmbeddings = false,
                RopeScaling = new RopeScalingConfig("longrope", Enumerable.Repeat(1f, 64).ToArray(),
                    Enumerable.Repeat(1f, 64).ToArray(), 32768),
            },
            _ => throw new ArgumentOutOfRangeException(nameof(preset), preset, "unknown preset"),
        };
    }

    private static long MaxShardBytes(ModelPreset preset) => preset switch
    {
        ModelPreset.MiniCpm4_8B => 2_000_000_000L,
        ModelPreset.MiniCpm4_0_5B => 500_000_000L,
        _ => long.MaxValue,
    };

    /// <summary>
    /// Writes a complete Hugging Face-format checkpoint with random, well-conditioned weights: config.json,
    /// generation_config.json, tokenizer.model (the embedded 32k SentencePiece fixture), tokenizer_config.json
    /// (ChatML template, &lt;|im_start|&gt;=32000, &lt;|im_end|&gt;=32001) and safetensors weights — a single
    /// model.safetensors for <see cref="ModelPreset.Tiny"/>, Hugging Face-style shards plus
    /// model.safetensors.index.json for the others. Weights are generated and written in chunks, never the whole
    /// model in memory. The same seed and dtype always give byte-identical files. Existing weight files with the
    /// names this method writes (model.safetensors, the index, model-NNNNN-of-NNNNN.safetensors) are replaced.
    /// </summary>
    public static void CreateRandomModel(string outputDirectory, ModelPreset preset, ulong seed = 0,
        TensorDType dtype = TensorDType.BF16, IProgress<double>? progress = null) =>
        CreateRandomModel(outputDirectory, preset, seed, dtype, progress, MaxShardBytes(preset));

    /// <summary><see cref="CreateRandomModel(string, ModelPreset, ulong, TensorDType, IProgress{double}?)"/> with an
    /// explicit shard size; <see cref="long.MaxValue"/> writes a single model.safetensors.</summary>
    internal static void CreateRandomModel(string outputDirectory, ModelPreset preset, ulong seed,
        TensorDType dtype, IProgress<double>? progress, long maxShardBytes)
    {
        ArgumentNullException.ThrowIfNull(outputDirectory);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxShardBytes, 1);
        var config = GetPresetConfig(preset, dtype);
        string dir = Path.GetFullPath(outputDirectory);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(dir))
        {
            string n = Path.GetFileName(f);
            if (n == "model.safetensors" || n == Checkpoint.IndexFileName || IsShardName(n)) File.Delete(f);
        }

        config.WriteJson(Path.Combine(dir, "config.json"));
        new GenerationConfig
        {
            BosTokenId = 1,
            EosTokenIds = new[] { 2, 32001 },
            PadTokenId = 2,
            DoSample = true,
            Temperature = 0.8f,
            TopP = 0.8f,
        }.WriteJson(Path.Combine(dir, "generation_config.json"));
        WriteTokenizerModel(Path.Combine(dir, "tokenizer.model"));
        WriteTokenizerConfig(Path.Combine(dir, "tokenizer_config.json"), config.MaxPositionEmbeddings);

        var required = Checkpoint.RequiredTensors(config);
        var specs = required.Select(r => (r.Name, dtype, r.Shape)).ToList();
        var lengths = ByteLengths(specs);
        long total = lengths.Sum();
        long done = 0;
        void Advance(long bytes)
        {
            done += bytes;
            progress?.Report(total == 0 ? 1.0 : (double)done / total);
        }

        // Group tensors into shards the way save_pretrained does: in order, starting a new shard when the next
        // tensor would push the current one over the limit.
        long limit = maxShardBytes;
        var shards = new List<List<int>> { new() };
        long current = 0;
        for (int i = 0; i < specs.Count; i++)
        {
            if (shards[^1].Count > 0 && current + lengths[i] > limit)
            {
                shards.Add(new List<int>());
                current = 0;
            }
            shards[^1].Add(i);
            current += lengths[i];
        }
        bool sharded = limit != long.MaxValue;

        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int s = 0; s < shards.Count; s++)
        {
            string file = !sharded ? "model.safetensors" : $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            var members = shards[s];
            WriteSafetensorsStreaming(Path.Combine(dir, file), members.Select(i => specs[i]).ToList(), meta,
                (k, stream) =>
            {
                var (name, shape, role) = required[members[k]];
                WriteRandomTensor(stream, name, shape, role, config, seed, dtype, Advance);
            });
            foreach (int i in members) weightMap[specs[i].Name] = file;
        }

        if (sharded)
        {
            using var fs =
                new FileStream(Path.Combine(dir, Checkpoint.IndexFileName), FileMode.Create, FileAccess.Write);
            using var w = new Utf8JsonWriter(fs, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteStartObject("metadata");
            w.WriteNumber("total_size", total);
            w.WriteEndObject();
            w.WriteStartObject("weight_map");
            foreach (var kv in weightMap) w.WriteString(kv.Key, kv.Value);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        progress?.Report(1.0);
    }

    /// <summary>True for names of the form model-NNNNN-of-NNNNN.safetensors.</summary>
    /// <summary>
    /// Writes a random EAGLE-2 draft for <paramref name="target"/> in the MiniCPM4-Eagle layout (config.json with the
    /// target's muP scales and one layer; model.safetensors with fc, input_norm1/2 and layers.0.*). Its proposals are
    /// random, so it only exercises the speculative machinery: acceptance stays near one token per round.
    /// </summary>
    public static void CreateRandomDraft(string outputDirectory, MiniCpmConfig target, ulong seed = 0,
        TensorDType dtype = TensorDType.BF16)
    {
        ArgumentNullException.ThrowIfNull(outputDirectory);
        ArgumentNullException.ThrowIfNull(target);
        System.IO.Directory.CreateDirectory(outputDirectory);
        long h = target.HiddenSize, i = target.IntermediateSize;
        long q = (long)target.NumAttentionHeads * target.HeadDim, kv = (long)target.NumKeyValueHeads * target.HeadDim;
        var specs = new List<(string Name, long[] Shape, Checkpoint.TensorRole Role)>
        {
            ("fc.weight", [h, 2 * h], Checkpoint.TensorRole.Linear),
            ("fc.bias", [h], Checkpoint.TensorRole.Norm),
            ("input_norm1.weight", [h], Checkpoint.TensorRole.Norm),
            ("input_norm2.weight", [h], Checkpoint.TensorRole.Norm),
            ("layers.0.input_layernorm.weight", [h], Checkpoint.TensorRole.Norm),
            ("layers.0.self_attn.q_proj.weight", [q, h], Checkpoint.TensorRole.Linear),
            ("layers.0.self_attn.k_proj.weight", [kv, h], Checkpoint.TensorRole.Linear),
            ("layers.0.self_attn.v_proj.weight", [kv, h], Checkpoint.TensorRole.Linear),
            ("layers.0.self_attn.o_proj.weight", [h, q], Checkpoint.TensorRole.Linear),
            ("layers.0.post_attention_layernorm.weight", [h], Checkpoint.TensorRole.Norm),
            ("layers.0.mlp.gate_proj.weight", [i, h], Checkpoint.TensorRole.Linear),
            ("layers.0.mlp.up_proj.weight", [i, h], Checkpoint.TensorRole.Linear),
            ("layers.0.mlp.down_proj.weight", [h, i], Checkpoint.TensorRole.Linear),
        };
        WriteSafetensorsStreaming(Path.Combine(outputDirectory, "model.safetensors"),
            specs.Select(s => (s.Name, dtype, s.Shape)).ToList(), null,
            (index, stream) =>
                WriteRandomTensor(stream, specs[index].Name, specs[index].Shape, specs[index].Role, target,
                seed, dtype, _ => { }));
        // The draft's config is the target's with one layer (the muP scales must match the target's).
        (target with { NumHiddenLayers = 1, Architectures = ["MiniCPM4EagleDraft"], ModelType = null, Sparse = null })
            .WriteJson(Path.Combine(outputDirectory, "config.json"));
    }

    private static bool IsShardName(string n) =>
        n.Length == 32 && n.StartsWith("model-", StringComparison.Ordinal)
            && n.EndsWith(".safetensors", StringComparison.Ordinal)
        && n.AsSpan(11, 4).SequenceEqual("-of-") && n.AsSpan(6, 5).IndexOfAnyExceptInRange('0', '9') < 0
        && n.AsSpan(15, 5).IndexOfAnyExceptInRange('0', '9') < 0;

    /// <summary>The bytes of the embedded SentencePiece tokenizer model.</summary>
    internal static byte[] GetTokenizerModelBytes()
    {
        using var s = typeof(CheckpointWriter).Assembly.GetManifestResourceStream(TokenizerResourceName)
                      ?? throw new InvalidOperationException($"embedded resource {TokenizerResourceName} is missing");
        var ms = new MemoryStream();
        s.CopyTo(ms);
        return ms.ToArray();
    }

    private static void WriteTokenizerModel(string path) => File.WriteAllBytes(path, GetTokenizerModelBytes());

    private static void WriteTokenizerConfig(string path, int maxLength)
    {
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write);
        using var w =
            new Utf8JsonWriter(fs,
            new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        w.WriteStartObject();
        w.WriteBoolean("add_bos_token", true);
        w.WriteBoolean("add_eos_token", false);
        w.WriteStartObject("added_tokens_decoder");
        foreach (var (id, content) in new[] { (32000, "<|im_start|>"), (32001, "<|im_end|>") })
        {
            w.WriteStartObject(id.ToString(System.Globalization.CultureInfo.InvariantCulture));
            w.WriteString("content", content);
            w.WriteBoolean("lstrip", false);
            w.WriteBoolean("normalized", false);
            w.WriteBoolean("rstrip", false);
            w.WriteBoolean("single_word", false);
            w.WriteBoolean("special", true);
            w.WriteEndObject();
        }
        w.WriteEndObject();
        w.WriteString("bos_token", "<s>");
        w.WriteString("eos_token", "<|im_end|>");
        w.WriteString("unk_token", "<unk>");
        w.WriteString("chat_template", ChatTemplate);
        w.WriteBoolean("clean_up_tokenization_spaces", false);
        w.WriteBoolean("legacy", true);
        w.WriteNumber("model_max_length", maxLength);
        w.WriteString("tokenizer_class", "LlamaTokenizer");
        w.WriteEndObject();
    }

    /// <summary>
    /// Writes one tensor of random values. Each tensor has its own stream derived from the seed and its name, split
    /// into fixed-size chunks with independent generators, so the bytes do not depend on sharding or thread count.
    /// </summary>
    private static void WriteRandomTensor(Stream stream, string name, long[] shape, Checkpoint.TensorRole role,
        MiniCpmConfig config, ulong seed, TensorDType dtype, Action<long> advance)
    {
        long count = 1;
        foreach (long d in shape) count *= d;
        (float lo, float hi) = RandomRange(name, role, shape, config);
        ulong tensorSeed = Mix(seed ^ Mix(Fnv1a(name)));
        int elementSize = dtype.SizeInBytes();
        long chunks = (count + ChunkElements - 1) / ChunkElements;
        int batch = (int)Math.Min(chunks, Math.Clamp(Environment.ProcessorCount, 1, 8));
        if (batch == 0) return;
        var buffers = new byte[batch][];
        var sizes = new int[batch];
        for (long first = 0; first < chunks; first += batch)
        {
            int n = (int)Math.Min(batch, chunks - first);
            void Fill(int b)
            {
                long chunk = first + b;
                int elements = (int)Math.Min(ChunkElements, count - chunk * ChunkElements);
                var buf = buffers[b] ??= new byte[ChunkElements * elementSize];
                FillRandom(buf.AsSpan(0, elements * elementSize), elements, Mix(tensorSeed + (ulong)chunk), lo, hi,
                    dtype);
                sizes[b] = elements * elementSize;
            }
            if (n == 1) Fill(0);
            else Parallel.For(0, n, Fill);
            for (int b = 0; b < n; b++)
            {
                stream.Write(buffers[b], 0, sizes[b]);
                advance(sizes[b]);
            }
        }
    }

    /// <summary>
    /// Uniform ranges chosen so that a random model's generations are neither NaN nor constant. With tied
    /// embeddings the LM head scores each token by its similarity to the final hidden state, and a
    /// residual stream that still carries the last token's own embedding makes greedy decoding repeat
    /// that token. So: input projections get std 1/sqrt(fan_in) and output projections (o_proj,
    /// down_proj) 3/sqrt(fan_in), so the attention and FFN branches dominate the residual stream; the
    /// embedding is small (std 2/(scale_emb·sqrt(hidden)); the layers see it through RMSNorm, so its
    /// scale does not matter to them); and the final norm weight is raised by 6·hidden/dim_model_base
    /// when tied so the logits are O(1) again. Other norms are in [0.8, 1.2]; an untied LM head gets a
    /// std that makes the logits O(1) after the dim_model_base/hidden scale.
    /// </summary>
    private static (float, float) RandomRange(string name, Checkpoint.TensorRole role, long[] shape, MiniCpmConfig c)
    {
        bool outputProjection = name.EndsWith("o_proj.weight", StringComparison.Ordinal) ||
                                name.EndsWith("down_proj.weight", StringComparison.Ordinal);
        if (role == Checkpoint.TensorRole.Norm)
        {
            float k = name == "model.norm.weight" && c.TieWordEmbeddings ? 6f * c.HiddenSize / c.DimModelBase : 1f;
            return (0.8f * k, 1.2f * k);
        }
        double std = role switch
        {
            Checkpoint.TensorRole.Embedding => 2.0 / (c.ScaleEmb * Math.Sqrt(c.HiddenSize)),
            Checkpoint.TensorRole.LmHead => Math.Sqrt(c.HiddenSize) / c.DimModelBase,
            _ => (outputProjection ? 3.0 : 1.0) / Math.Sqrt(shape[1]),
        };
        float a = (float)(std * Math.Sqrt(3.0)); // uniform(-a, a) has std a/sqrt(3)
        return (-a, a);
    }

    private static void FillRandom(Span<byte> dest, int elements, ulong state, float lo, float hi, TensorDType dtype)
    {
        float scale = (hi - lo) * (1f / (1 << 24));
        int i = 0;
        while (i < elements)
        {
            ulong r = Next(ref state);
            float v0 = lo + (uint)(r >> 40) * scale;
            Store(dest, i++, v0, dtype);
            if (i < elements)
            {
                float v1 = lo + (uint)((r >> 8) & 0xFFFFFF) * scale;
                Store(dest, i++, v1, dtype);
            }
        }
    }

    private static void Store(Span<byte> dest, int index, float v, TensorDType dtype)
    {
        switch (dtype)
        {
            case TensorDType.BF16:
                BinaryPrimitives.WriteUInt16LittleEndian(dest[(index * 2)..], FloatToBf16(v));
                break;
            case TensorDType.F16:
                BinaryPrimitives.WriteHalfLittleEndian(dest[(index * 2)..], (Half)v);
                break;
            default:
                BinaryPrimitives.WriteSingleLittleEndian(dest[(index * 4)..], v);
                break;
        }
    }

    /// <summary>float → bfloat16 with round-to-nearest-even (NaN stays a quiet NaN).</summary>
    public static ushort FloatToBf16(float f)
    {
        uint bits = BitConverter.SingleToUInt32Bits(f);
        if ((bits & 0x7FFFFFFF) > 0x7F800000) return (ushort)((bits >> 16) | 0x0040);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>bfloat16 → float (exact).</summary>
    public static float Bf16ToFloat(ushort b) => BitConverter.UInt32BitsToSingle((uint)b << 16);

    private static ulong Next(ref ulong state)
    {
        state += 0x9E3779B97F4A7C15UL;
        return Mix(state);
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static ulong Fnv1a(string s)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (char c in s)
        {
            h ^= c;
            h *= 0x100000001B3UL;
        }
        return h;
    }
}
