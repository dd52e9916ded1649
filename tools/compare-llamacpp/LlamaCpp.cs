using System.Runtime.InteropServices;
using LLama;
using LLama.Common;
using LLama.Native;

namespace MiniCPM4.CompareLlamaCpp;

/// <summary>llama.cpp through LLamaSharp: its quantizer, its system info, and a model with one context.</summary>
public sealed class LlamaCppEngine : IDisposable
{
    private static int s_configured;

    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly LLamaBatch _batch = new();

    /// <summary>
    /// Loads a GGUF on the CPU. <paramref name="exact"/> selects the settings of the logit cross-check: an f32 KV cache
    /// and flash attention off (llama.cpp's defaults round K and V to f16).
    /// </summary>
    public LlamaCppEngine(string ggufPath, int threads, int contextLength, int batchSize, bool exact)
    {
        ConfigureNative();
        var parameters = new ModelParams(ggufPath)
        {
            ContextSize = (uint)contextLength,
            GpuLayerCount = 0,
            Threads = threads,
            BatchThreads = threads,
            BatchSize = (uint)batchSize,
            UBatchSize = (uint)batchSize,
            FlashAttention = exact ? false : null,
        };
        if (exact)
        {
            parameters.TypeK = GGMLType.GGML_TYPE_F32;
            parameters.TypeV = GGMLType.GGML_TYPE_F32;
        }
        _weights = LLamaWeights.LoadFromFile(parameters);
        _context = _weights.CreateContext(parameters);
        VocabSize = _context.Vocab.Count;
    }

    public int VocabSize { get; }

    /// <summary>llama.cpp's tokenization of <paramref name="text"/>, special tokens parsed, no BOS added.</summary>
    public int[] Tokenize(string text) =>
        _weights.Tokenize(text, false, true, System.Text.Encoding.UTF8).Select(t => (int)t).ToArray();

    /// <summary>llama.cpp's tokenization of <paramref name="text"/> from a GGUF's vocabulary alone (no weights
    /// loaded).</summary>
    public static int[] TokenizeWithVocabulary(string ggufPath, string text)
    {
        ConfigureNative();
        using var weights =
            LLamaWeights.LoadFromFile(new ModelParams(ggufPath) { VocabOnly = true, GpuLayerCount = 0 });
        return weights.Tokenize(text, false, true, System.Text.Encoding.UTF8).Select(t => (int)t).ToArray();
    }

    /// <summary>Evaluates <paramref name="tokens"/> at positions from <paramref name="start"/>, returning the logits of
    /// every position ([n × vocab]) or of the last one only.</summary>
    public float[] Evaluate(ReadOnlySpan<int> tokens, int start, bool allPositions)
    {
        _batch.Clear();
        for (int i = 0; i < tokens.Length; i++)
            _batch.Add((LLamaToken)tokens[i], (LLamaPos)(start + i), (LLamaSeqId)0, allPositions
                || i == tokens.Length - 1);
        var result = _context.NativeHandle.Decode(_batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {result}");
        int rows = allPositions ? tokens.Length : 1;
        var logits = new float[checked(rows * VocabSize)];
        for (int r = 0; r < rows; r++)
            _context.NativeHandle.GetLogitsIth(allPositions ? r : tokens.Length - 1).CopyTo(
                logits.AsSpan(r * VocabSize, VocabSize));
        return logits;
    }

    /// <summary>Evaluates one token and returns a view of its logits (valid until the next call).</summary>
    public ReadOnlySpan<float> DecodeOne(int token, int position)
    {
        _batch.Clear();
        _batch.Add((LLamaToken)token, (LLamaPos)position, (LLamaSeqId)0, true);
        var result = _context.NativeHandle.Decode(_batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {result}");
        return _context.NativeHandle.GetLogitsIth(0);
    }

    /// <summary>Forgets the KV cache so that the next evaluation starts at position 0.</summary>
    public void Clear() => _context.NativeHandle.MemoryClear(true);

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }

    /// <summary>llama.cpp's system info: the CPU features its kernels were built for and use.</summary>
    public static string SystemInfo()
    {
        ConfigureNative();
        return (Marshal.PtrToStringUTF8(NativeApi.llama_print_system_info()) ?? "").Trim();
    }

    /// <summary>
    /// Quantizes a GGUF with llama.cpp's own quantizer (llama_model_quantize) to Q4_0 or Q8_0, keeping token_embd — the
    /// tied LM head — in BF16 as our int4 path keeps the embedding and LM head bf16.
    /// </summary>
    public static void Quantize(string input, string output, GgmlType type, int threads)
    {
        ConfigureNative();
        var parameters = LLamaModelQuantizeParams.Default();
        parameters.ftype = type switch
        {
            GgmlType.Q4_0 => LLamaFtype.MOSTLY_Q4_0,
            GgmlType.Q8_0 => LLamaFtype.MOSTLY_Q8_0,
            _ => throw new ArgumentException($"llama.cpp quantization to {type} is not offered (Q4_0 or Q8_0)"),
        };
        parameters.nthread = threads;
        // GGMLType has no BF16 member. A tied model's token_embd is also its output tensor, which llama.cpp's
        // quantizer types by output_tensor_type, so both are set.
        parameters.token_embedding_type = (GGMLType)(uint)GgmlType.BF16;
        parameters.output_tensor_type = (GGMLType)(uint)GgmlType.BF16;
        uint status = NativeApi.llama_model_quantize(input, output, ref parameters);
        if (status != 0 || !File.Exists(output)) throw new InvalidOperationException(
            $"llama_model_quantize({input} -> {type}) failed with status {status}");
    }

    /// <summary>Routes llama.cpp's log to stderr only when MCPM_COMPARE_VERBOSE is set (it is chatty); once per
    /// process.</summary>
    private static void ConfigureNative()
    {
        if (Interlocked.Exchange(ref s_configured, 1) != 0) return;
        bool verbose = Environment.GetEnvironmentVariable("MCPM_COMPARE_VERBOSE") is { Length: > 0 };
        NativeLibraryConfig.All.WithLogCallback((level, message) =>
        {
            if (verbose || level == LLamaLogLevel.Error) Console.Error.Write(message);
        });
        // NativeApi's static constructor loads the library and installs LLamaSharp's resolver; the quantizer's
        // parameter struct calls into it from another class, so load it first.
        NativeApi.llama_max_devices();
    }
}
