using System.CommandLine;
using MiniCPM4.Checkpoints;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 quantize`: write an int4 (W4A16) copy of a checkpoint, in CPM.cu's Marlin layout or
/// AutoGPTQ's.</summary>
internal static class QuantizeCommand
{
    private static readonly Option<string> OutDir =
        new("--out") { Description = "Output checkpoint directory (must not exist or be empty, unless --force)",
        Required = true };
    private static readonly Option<string> Format =
        new("--format") { Description =
        "marlin (CPM.cu's model_gptq.safetensors, fused qkv_proj / gate_up_proj) or gptq (AutoGPTQ layout)",
        DefaultValueFactory = _ => "marlin" };
    private static readonly Option<bool> Force =
        new("--force") { Description = "Write into a non-empty output directory (its weight files are replaced)" };
    private static readonly Option<bool> ClipSearch =
        new("--clip-search") { Description = "Per group, search the clipping range with the least error (slower)" };

    public static Command Create()
    {
        var command = new Command("quantize",
            "Write an int4 (W4A16) checkpoint: linear layers quantized (or an AutoGPTQ checkpoint repacked to " +
                "Marlin), everything else copied");
        command.Options.Add(Cli.Model);
        command.Options.Add(OutDir);
        command.Options.Add(Format);
        command.Options.Add(ClipSearch);
        command.Options.Add(Force);
        command.Options.Add(Cli.Threads);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => RunAsync(parse, ct)));
        return command;
    }

    private static async Task RunAsync(ParseResult parse, CancellationToken ct)
    {
        string source = Path.TrimEndingDirectorySeparator(Path.GetFullPath(Cli.ModelDirectory(parse)));
        string output = Path.TrimEndingDirectorySeparator(Path.GetFullPath(parse.GetValue(OutDir)!));
        var format = parse.GetValue(Format)!.Trim().ToLowerInvariant() switch
        {
            "marlin" => Int4CheckpointFormat.Marlin,
            "gptq" or "autogptq" => Int4CheckpointFormat.Gptq,
            var other => throw new UsageException($"unknown --format '{other}' (expected marlin or gptq)"),
        };
        int threads = parse.GetValue(Cli.Threads);
        if (threads < 0) throw new UsageException("--threads must be >= 0");
        if (source == output) throw new UsageException(
            $"--out is the source checkpoint ({source}); write the int4 checkpoint somewhere else");
        if (File.Exists(output)) throw new UsageException($"--out {output} is a file");
        if (Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any() && !parse.GetValue(Force))
            throw new UsageException($"--out {output} is not empty; pass --force to overwrite its weights");

        var options =
            new Int4WriteOptions { Format = format, ClipSearch = parse.GetValue(ClipSearch), Threads = threads,
            Overwrite = parse.GetValue(Force) };
        var result = await Progress.RunAsync($"Quantizing {Path.GetFileName(source)}", progress =>
            Task.Run(() => CheckpointWriter.WriteInt4Checkpoint(source, output, options,
                new Progress<double>(f => progress.Report(new LoadProgress("write", (long)(f * 1000), 1000))), ct),
                    ct));

        var o = Console.Out;
        string layout = format == Int4CheckpointFormat.Marlin ? "Marlin, fused qkv_proj / gate_up_proj" : "AutoGPTQ";
        o.WriteLine(
            $"quantized   {result.QuantizedLinears} linear layers to int4 " +
            $"({layout}{(options.ClipSearch ? ", clip search" : "")})" +
                    (result.RepackedLinears > 0 ? $"; {result.RepackedLinears} int4 already, repacked" : ""));
        o.WriteLine($"weights     {InfoCommand.Bytes(result.BytesBefore)} -> {InfoCommand.Bytes(result.BytesAfter)} " +
                    $"({100.0 * result.BytesAfter / Math.Max(1, result.BytesBefore):F1}%)");
        o.WriteLine($"time        {result.Elapsed.TotalSeconds:F1} s");
        o.WriteLine($"wrote       {result.WeightsFile}");
    }
}
