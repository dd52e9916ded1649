using System.Buffers.Binary;
using System.Runtime.InteropServices;
using MiniCPM4.Checkpoints;
using MiniCPM4.Tokenization;

namespace MiniCPM4.CompareLlamaCpp;

/// <summary>
/// Converts a dense Hugging Face MiniCPM4 checkpoint (config.json, safetensors, tokenizer.model) into a GGUF for
/// llama.cpp's <c>minicpm</c> architecture, writing F32, F16 or BF16 tensors directly. Norms and LongRoPE factors
/// stay F32 (as llama.cpp's converter writes them).
/// </summary>
public static class CheckpointToGguf
{
    /// <summary>llama.cpp's general.file_type for each directly written type (llama_ftype).</summary>
    private static uint FileType(GgmlType type) => type switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.BF16 => 32,
        _ => throw new ArgumentException(
            $"{type} is not written directly (quantized types go through llama.cpp's quantizer)"),
    };

    /// <summary>
    /// Writes <paramref name="outputPath"/>. <paramref name="permuteQK"/> = false leaves Q and K in Hugging Face's
    /// rotate-half row order; only the tests use it, to show that the logit cross-check detects a wrong layout.
    /// </summary>
    public static void Convert(string checkpointDirectory, string outputPath, GgmlType type, bool permuteQK = true)
    {
        using var checkpoint = Checkpoint.Open(checkpointDirectory);
        var c = checkpoint.Config;
        if (checkpoint.Quantization is not null || checkpoint.Linears.Any(l => l.IsInt4))
            throw new ArgumentException(
                $"{checkpointDirectory} is an int4 checkpoint; convert its dense (bf16/fp32) original");
        if (c.Sparse is not null)
            Console.Error.WriteLine(
                "note: the checkpoint's InfLLM v2 sparse attention is not represented in GGUF; llama.cpp runs dense " +
                "attention");
        var gguf = new GgufWriter();
        AddHyperparameters(gguf, c, checkpointDirectory, type);
        AddVocabulary(gguf, checkpointDirectory, c.VocabSize);

        GgmlType matrixType = type;
        AddMatrix(gguf, checkpoint, "model.embed_tokens.weight", "token_embd.weight", matrixType, null);
        if (c.RopeScaling is { } rope)
        {
            int half = c.HeadDim / 2;
            if (rope.LongFactor.Length != half || rope.ShortFactor.Length != half)
                throw new ArgumentException(
                    $"rope_scaling factors have {rope.LongFactor.Length}/{rope.ShortFactor.Length} entries; head_dim " +
                    $"/ 2 = {half} expected");
            AddFloats(gguf, "rope_factors_long.weight", rope.LongFactor);
            AddFloats(gguf, "rope_factors_short.weight", rope.ShortFactor);
        }
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = $"model.layers.{i}.", b = $"blk.{i}.";
            AddVector(gguf, checkpoint, p + "input_layernorm.weight", b + "attn_norm.weight");
            AddMatrix(gguf, checkpoint, p + "self_attn.q_proj.weight", b + "attn_q.weight", matrixType, permuteQK
                ? c.NumAttentionHeads : null);
            AddMatrix(gguf, checkpoint, p + "self_attn.k_proj.weight", b + "attn_k.weight", matrixType, permuteQK
                ? c.NumKeyValueHeads : null);
            AddMatrix(gguf, checkpoint, p + "self_attn.v_proj.weight", b + "attn_v.weight", matrixType, null);
            AddMatrix(gguf, checkpoint, p + "self_attn.o_proj.weight", b + "attn_output.weight", matrixType, null);
            AddVector(gguf, checkpoint, p + "post_attention_layernorm.weight", b + "ffn_norm.weight");
            AddMatrix(gguf, checkpoint, p + "mlp.gate_proj.weight", b + "ffn_gate.weight", matrixType, null);
            AddMatrix(gguf, checkpoint, p + "mlp.up_proj.weight", b + "ffn_up.weight", matrixType, null);
            AddMatrix(gguf, checkpoint, p + "mlp.down_proj.weight", b + "ffn_down.weight", matrixType, null);
        }
        AddVector(gguf, checkpoint, "model.norm.weight", "output_norm.weight");
        // A tied model has no lm_head: llama.cpp then uses token_embd as the output matrix.
        if (!c.TieWordEmbeddings) AddMatrix(gguf, checkpoint, "lm_head.weight", "output.weight", matrixType, null);
        gguf.Write(outputPath);
    }

    private static void AddHyperparameters(GgufWriter gguf, MiniCpmConfig c, string directory, GgmlType type)
    {
        const string a = "minicpm.";
        gguf.Add("general.architecture", "minicpm");
        gguf.Add("general.name", Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory))));
        gguf.Add("general.file_type", FileType(type));
        gguf.Add(a + "vocab_size", (uint)c.VocabSize);
        gguf.Add(a + "context_length", (uint)c.MaxPositionEmbeddings);
        gguf.Add(a + "embedding_length", (uint)c.HiddenSize);
        gguf.Add(a + "block_count", (uint)c.NumHiddenLayers);
        gguf.Add(a + "feed_forward_length", (uint)c.IntermediateSize);
        gguf.Add(a + "attention.head_count", (uint)c.NumAttentionHeads);
        gguf.Add(a + "attention.head_count_kv", (uint)c.NumKeyValueHeads);
        gguf.Add(a + "attention.key_length", (uint)c.HeadDim);
        gguf.Add(a + "attention.value_length", (uint)c.HeadDim);
        gguf.Add(a + "attention.layer_norm_rms_epsilon", c.RmsNormEps);
        gguf.Add(a + "rope.dimension_count", (uint)c.HeadDim);
        gguf.Add(a + "rope.freq_base", c.RopeTheta);
        // muP scales: embeddings × scale_emb; each residual branch × scale_depth / sqrt(layers); logits ÷ (hidden /
        // dim_model_base).
        float dimModelBase = c.DimModelBase > 0 ? c.DimModelBase : c.HiddenSize;
        gguf.Add(a + "embedding_scale", c.ScaleEmb);
        gguf.Add(a + "residual_scale", (float)(c.ScaleDepth / Math.Sqrt(c.NumHiddenLayers)));
        gguf.Add(a + "logit_scale", (float)(c.HiddenSize / (double)dimModelBase));
        if (c.RopeScaling is { } rope)
        {
            // llama.cpp uses rope_factors_long once a context exceeds original_context_length, else the short ones.
            gguf.Add(a + "rope.scaling.type", "longrope");
            gguf.Add(a + "rope.scaling.original_context_length", (uint)rope.OriginalMaxPositionEmbeddings);
            double ratio = (double)c.MaxPositionEmbeddings / rope.OriginalMaxPositionEmbeddings;
            if (ratio > 1)
                Console.Error.WriteLine(
                    $"note: LongRoPE extends {rope.OriginalMaxPositionEmbeddings} to {c.MaxPositionEmbeddings} " +
                    $"positions; its attention " +
                                        "scale (sqrt(1 + ln(ratio) / ln(original))) is not written, so logits may " +
                                            "differ from ours");
        }
    }

    private static void AddVocabulary(GgufWriter gguf, string directory, int vocabSize)
    {
        var tokenizer = MiniCpmTokenizer.Load(directory);
        var model = SentencePieceVocabulary.Load(directory);
        if (model.Pieces.Length > vocabSize)
            throw new ArgumentException(
                $"tokenizer.model has {model.Pieces.Length} pieces but vocab_size is {vocabSize}");
        var tokens = new string[vocabSize];
        var scores = new float[vocabSize];
        var types = new int[vocabSize];
        for (int i = 0; i < model.Pieces.Length; i++)
        {
            tokens[i] = model.Pieces[i];
            scores[i] = model.Scores[i];
            types[i] = model.Types[i];  // SentencePiece's piece types are llama.cpp's token types (1..6)
        }
        foreach (var (content, id) in tokenizer.AddedTokens)
        {
            if (id < model.Pieces.Length) continue;  // an added token that names an existing piece keeps the piece
            if (id >= vocabSize) throw new ArgumentException(
                $"added token {content} has id {id} >= vocab_size {vocabSize}");
            tokens[id] = content;
            types[id] = 3;  // control: recognised in text only when special tokens are parsed, as our tokenizer does
        }
        for (int i = 0; i < vocabSize; i++)
        {
            if (tokens[i] is not null) continue;
            tokens[i] = $"<unused{i}>";  // the embedding has rows the tokenizer never produces
            types[i] = 5;
        }
        gguf.Add("tokenizer.ggml.model", "llama");
        gguf.Add("tokenizer.ggml.tokens", tokens);
        gguf.Add("tokenizer.ggml.scores", scores);
        gguf.Add("tokenizer.ggml.token_type", types);
        gguf.Add("tokenizer.ggml.bos_token_id", (uint)tokenizer.BosId);
        gguf.Add("tokenizer.ggml.eos_token_id", (uint)tokenizer.EosId);
        gguf.Add("tokenizer.ggml.unknown_token_id", (uint)tokenizer.UnkId);
        gguf.Add("tokenizer.ggml.add_bos_token", tokenizer.AddBosByDefault);
        gguf.Add("tokenizer.ggml.add_eos_token", false);
        gguf.Add("tokenizer.ggml.add_space_prefix", model.AddDummyPrefix);
    }

    /// <summary>
    /// The source row of output row <paramref name="row"/> when Hugging Face's rotate-half Q/K rows are permuted into
    /// llama.cpp's adjacent rotation pairs: per head, W.reshape(heads, 2, d/2, cols).swapaxes(1, 2), so row 2j + h of
    /// a head comes from row h·d/2 + j.
    /// </summary>
    public static long PermutedSourceRow(long row, long rows, int heads)
    {
        long headDim = rows / heads, half = headDim / 2;
        long head = row / headDim, within = row % headDim;
        return head * headDim + (within % 2) * half + within / 2;
    }

    private static void AddMatrix(GgufWriter gguf, Checkpoint checkpoint, string hfName, string ggufName, GgmlType type,
        int? permuteHeads)
    {
        var tensor = Require(checkpoint, hfName);
        if (tensor.Shape.Length != 2) throw new ArgumentException(
            $"{hfName}: expected a matrix, found shape [{string.Join(", ", tensor.Shape)}]");
        long rows = tensor.Shape[0], cols = tensor.Shape[1];
        if (permuteHeads is int heads && (rows % heads != 0 || rows / heads % 2 != 0))
            throw new ArgumentException($"{hfName}: {rows} rows do not split into {heads} heads of even size");
        gguf.AddTensor(ggufName, [cols, rows], type, stream =>
        {
            var source = tensor.GetBytes();
            int sourceRowBytes = checked((int)(cols * tensor.DType.SizeInBytes()));
            var values = new float[cols];
            var output = new byte[GgmlTypes.RowBytes((uint)type, cols)!.Value];
            for (long r = 0; r < rows; r++)
            {
                long sourceRow = permuteHeads is int h ? PermutedSourceRow(r, rows, h) : r;
                var row = source.Slice(checked((int)(sourceRow * sourceRowBytes)), sourceRowBytes);
                if (tensor.DType == TensorDType.BF16 && type == GgmlType.BF16 || tensor.DType == TensorDType.F16
                    && type == GgmlType.F16 ||
                    tensor.DType == TensorDType.F32 && type == GgmlType.F32)
                {
                    stream.Write(row);  // same type: the exact bits
                    continue;
                }
                ToFloats(row, tensor.DType, values, hfName);
                FromFloats(values, type, output);
                stream.Write(output);
            }
        });
    }

    private static void AddVector(GgufWriter gguf, Checkpoint checkpoint, string hfName, string ggufName)
    {
        var tensor = Require(checkpoint, hfName);
        if (tensor.Shape.Length != 1) throw new ArgumentException(
            $"{hfName}: expected a vector, found shape [{string.Join(", ", tensor.Shape)}]");
        var values = new float[tensor.Shape[0]];
        ToFloats(tensor.GetBytes(), tensor.DType, values, hfName);
        AddFloats(gguf, ggufName, values);
    }

    private static void AddFloats(GgufWriter gguf, string name, float[] values) =>
        gguf.AddTensor(name, [values.Length], GgmlType.F32, stream =>
            stream.Write(MemoryMarshal.AsBytes(values.AsSpan())));

    private static CheckpointTensor Require(Checkpoint checkpoint, string name) =>
        checkpoint.TryGetTensor(name, out var t) ? t
            : throw new ArgumentException($"{checkpoint.Directory}: tensor {name} is missing");

    private static void ToFloats(ReadOnlySpan<byte> source, TensorDType dtype, Span<float> values, string name)
    {
        int size = dtype.SizeInBytes();
        if (source.Length != values.Length * size) throw new ArgumentException(
            $"{name}: {source.Length} bytes for {values.Length} {dtype} values");
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = dtype switch
            {
                TensorDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(source[(i * 4)..]),
                TensorDType.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(source[(i * 2)..]),
                TensorDType.BF16 =>
                    BitConverter.UInt32BitsToSingle(
                    (uint)BinaryPrimitives.ReadUInt16LittleEndian(source[(i * 2)..]) << 16),
                _ => throw new ArgumentException(
                    $"{name}: {dtype} weights cannot be converted (F32, F16 or BF16 expected)"),
            };
        }
    }

    private static void FromFloats(ReadOnlySpan<float> values, GgmlType type, Span<byte> output)
    {
        for (int i = 0; i < values.Length; i++)
        {
            switch (type)
            {
                case GgmlType.F32: BinaryPrimitives.WriteSingleLittleEndian(output[(i * 4)..], values[i]); break;
                case GgmlType.F16: BinaryPrimitives.WriteHalfLittleEndian(output[(i * 2)..], (Half)values[i]); break;
                case GgmlType.BF16: BinaryPrimitives.WriteUInt16LittleEndian(output[(i * 2)..],
                    CheckpointWriter.FloatToBf16(values[i])); break;
                default: throw new ArgumentException($"{type} is not written directly");
            }
        }
    }
}
