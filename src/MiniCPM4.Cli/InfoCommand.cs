using System.CommandLine;
using MiniCPM4.Checkpoints;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 info`: the checkpoint's configuration, size and memory needs, and what the
/// native library offers.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var command =
            new Command("info",
            "Show a checkpoint's config, parameter count, memory needs, and the available backends");
        command.Options.Add(Cli.Model);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => Run(parse)));
        return command;
    }

    private static Task Run(ParseResult parse)
    {
        var directory = Cli.ModelDirectory(parse);
        using var checkpoint =
            Checkpoint.Open(directory, parse.GetValue(Cli.Verbose) ? l => Console.Error.WriteLine($"minicpm4: {l}")
            : null);
        var c = checkpoint.Config;
        var o = Console.Out;
        o.WriteLine($"checkpoint    {Path.GetFullPath(directory)}");
        o.WriteLine($"architecture  {string.Join(", ", c.Architectures ?? [])} (model_type {c.ModelType})");
        o.WriteLine($"vocab         {c.VocabSize}");
        o.WriteLine(
            $"hidden        {c.HiddenSize}, layers {c.NumHiddenLayers}, heads {c.NumAttentionHeads} " +
            $"({c.NumKeyValueHeads} KV), head_dim {c.HeadDim}, FFN {c.IntermediateSize}");
        string ropeScaling = c.RopeScaling is null
            ? "none"
            : $"{c.RopeScaling.Type} (original {c.RopeScaling.OriginalMaxPositionEmbeddings})";
        o.WriteLine($"positions     {c.MaxPositionEmbeddings}, rope theta {c.RopeTheta}, rope scaling {ropeScaling}");
        o.WriteLine(
            $"muP           scale_emb {c.ScaleEmb}, scale_depth {c.ScaleDepth}, dim_model_base {c.DimModelBase}, " +
            $"tied embeddings {c.TieWordEmbeddings}");
        if (c.Sparse is { } sp)
            o.WriteLine(
                $"sparse        InfLLM v2 from {(sp.DenseLen < 0 ? "the first token" : $"{sp.DenseLen} tokens")}: " +
                $"kernel {sp.KernelSize}/{sp.KernelStride}, block {sp.BlockSize}, " +
                        $"init {sp.InitBlocks}, window {sp.WindowSize}, top-k {sp.TopK}" +
                        (sp.UseNope ? " (use_nope is not supported: attention runs dense)"
                            : " (CPU backend; --dense turns it off)"));
        // Counted from the config: an int4 checkpoint's packed tensors do not have one element per parameter.
        long parameters = CheckpointInspection.ParameterCount(c);
        o.WriteLine($"parameters    {parameters:N0} ({parameters / 1e9:F2} B)");
        o.WriteLine(
            $"weights       {Bytes(checkpoint.TotalBytes)} " +
            $"({string.Join(", ", checkpoint.Tensors.GroupBy(t => t.DType).Select(g => $"{g.Count()} {g.Key}"))})");
        o.WriteLine($"quantization  {Quantization(checkpoint)}");
        long kvPerToken = 2L * c.NumHiddenLayers * c.NumKeyValueHeads * c.HeadDim * sizeof(float);
        // The default session context is min(positions, 4096): its row only when it differs from the full context.
        string defaultContext = c.MaxPositionEmbeddings > 4096 ? $"4k context {Bytes(kvPerToken * 4096)}, " : "";
        o.WriteLine($"KV cache      {Bytes(kvPerToken)} per token on the CPU backend (fp32): {defaultContext}" +
                    $"full {c.MaxPositionEmbeddings} {Bytes(kvPerToken * c.MaxPositionEmbeddings)}");
        foreach (string line in ContextFit(checkpoint)) o.WriteLine(line);
        try
        {
            var build = MiniCpmNative.GetBuildInfo();
            o.WriteLine(
                $"engine        {build.Version} (ABI {build.AbiVersion}) from {MiniCpmNative.LoadedLibraryPath}");
            o.WriteLine($"backends      {string.Join(", ", build.Backends)}; CPU kernels: {build.CpuFeatures}");
            string cudaBuild = build.CudaVersion > 0
                ? $"; CUDA {build.CudaVersion / 1000}.{build.CudaVersion % 1000 / 10} for sm {build.CudaArchitectures}"
                : "; CUDA not compiled in";
            o.WriteLine($"devices       cpu ({Environment.ProcessorCount} cores){cudaBuild}");
            var cuda = MiniCpmNative.GetCudaDevices();
            if (cuda.UnavailableReason is { } why)
                o.WriteLine($"cuda          {why}");
            foreach (var d in cuda.Devices)
                o.WriteLine(
                    $"cuda:{d.Index,-8} {d.Name}, sm_{d.ComputeCapability}, {d.Multiprocessors} SMs, " +
                    $"{Bytes(d.TotalMemoryBytes)} " +
                            $"({Bytes(d.FreeMemoryBytes)} free){(d.Usable ? "" : $": not usable, {d.Problem}")}");
        }
        catch (MiniCpmNativeLibraryException e)
        {
            o.WriteLine($"engine        not loadable: {e.Message.ReplaceLineEndings(" ")}");
        }
        return Task.CompletedTask;
    }

    /// <summary>The longest context that fits 8 GB, 24 GB and 64 GB devices (bf16 KV cache, as on the CUDA backend),
    /// with the
    /// weights as stored and, for a dense checkpoint that can be quantized, with --quantize int4.</summary>
    private static IEnumerable<string> ContextFit(Checkpoint checkpoint)
    {
        var c = checkpoint.Config;
        var weights = new List<(string Label, long Bytes)> { ("weights as stored", checkpoint.TotalBytes) };
        if (checkpoint.Quantization is null && Int4Bytes(checkpoint) is long int4) weights.Add(
            ("--quantize int4", int4));
        var budgets =
            new[] { ("8 GB (Jetson Orin NX)", 8_000_000_000L), ("24 GB (RTX 4090)", 24_000_000_000L),
            ("64 GB (Jetson AGX Orin)", 64_000_000_000L) };
        bool first = true;
        foreach (var (label, bytes) in weights)
        {
            var fits = budgets.Select(b => (b.Item1, Tokens: ContextBudget.LongestContext(c, bytes, b.Item2)));
            yield return (first ? "context fit   " : "              ") + $"{label}: " +
                         string.Join(", ", fits.Select(f => f.Tokens >= c.MaxPositionEmbeddings
                             ? $"{f.Item1} all {c.MaxPositionEmbeddings:N0} positions"
                             : $"{f.Item1} {f.Tokens:N0} tokens"));
            first = false;
        }
        int trained = LongContext.TrainedContext(c);
        yield return $"              (bf16 KV {Bytes(ContextBudget.KvBytesPerToken(c, 2))}/token, " +
            $"{Bytes(ContextBudget.ReserveBytes)} reserve; " +
                     $"positions are limited to {c.MaxPositionEmbeddings:N0}" +
                     (c.HeadDim == 2 * LongContext.MiniCpm4Factors.Count
                         ? $", --long-context N extends them beyond the trained {trained:N0})" : ")");
    }

    /// <summary>Bytes of a dense checkpoint after --quantize int4, or null when a layer cannot be quantized.</summary>
    private static long? Int4Bytes(Checkpoint checkpoint)
    {
        if (CheckpointInspection.Int4QuantizationProblem(checkpoint) is not null) return null;
        return CheckpointInspection.Int4Bytes(checkpoint);
    }

    /// <summary>The checkpoint's int4 layers, or what --quantize int4 would make of a dense one.</summary>
    private static string Quantization(Checkpoint checkpoint)
    {
        int projections = 7 * checkpoint.Config.NumHiddenLayers;
        if (checkpoint.Quantization is { } q)
        {
            bool fused = checkpoint.Linears.Any(l => l.IsInt4 && l.IsFused);
            string layout = checkpoint.Int4Format == LinearWeightFormat.Gptq
                ? "AutoGPTQ layout (repacked to Marlin at load)"
                : "Marlin layout" + (fused ? " (CPM.cu, fused qkv_proj / gate_up_proj)" : "");
            return $"{q.Describe()}: {checkpoint.Int4ProjectionCount} of {projections} linear layers, {layout}; " +
                $"embedding, norms and LM head " +
                   string.Join("/", CheckpointInspection.OtherTensorDTypes(checkpoint));
        }
        if (CheckpointInspection.Int4QuantizationProblem(checkpoint) is { } problem)
            return $"none (--quantize int4 is not possible: {problem})";
        return $"none (dense); with --quantize int4 the weights take {Bytes(Int4Bytes(checkpoint)!.Value)}";
    }

    internal static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };
}
