using System.CommandLine;
using MiniCPM4.Checkpoints;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 create-model`: write a Hugging Face-format checkpoint with random weights.</summary>
internal static class CreateModelCommand
{
    internal static readonly Option<string> Preset =
        new("--preset") { Description = "tiny, minicpm4-0.5b or minicpm4-8b", Required = true };
    private static readonly Option<string> OutDir = new("--out") { Description = "Output directory", Required = true };
    private static readonly Option<ulong> SeedOption = new("--seed") { Description = "RNG seed for the weights" };
    private static readonly Option<string> DType =
        new("--dtype") { Description = "bf16, fp16 or fp32", DefaultValueFactory = _ => "bf16" };
    private static readonly Option<string?> DraftOut =
        new("--draft-out") { Description =
        "Also write a random EAGLE-2 draft for the model here (for trying --draft)" };

    public static Command Create()
    {
        var command = new Command("create-model", "Write a MiniCPM4 checkpoint with random, well-conditioned weights");
        command.Options.Add(Preset);
        command.Options.Add(OutDir);
        command.Options.Add(SeedOption);
        command.Options.Add(DType);
        command.Options.Add(DraftOut);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => RunAsync(parse)));
        return command;
    }

    internal static ModelPreset ParsePreset(string text) => text.ToLowerInvariant() switch
    {
        "tiny" => ModelPreset.Tiny,
        "minicpm4-0.5b" => ModelPreset.MiniCpm4_0_5B,
        "minicpm4-8b" => ModelPreset.MiniCpm4_8B,
        _ => throw new UsageException($"unknown preset '{text}' (expected tiny, minicpm4-0.5b or minicpm4-8b)"),
    };

    internal static TensorDType ParseDType(string text) => text.ToLowerInvariant() switch
    {
        "bf16" => TensorDType.BF16,
        "fp16" or "f16" => TensorDType.F16,
        "fp32" or "f32" => TensorDType.F32,
        _ => throw new UsageException($"unknown dtype '{text}' (expected bf16, fp16 or fp32)"),
    };

    private static async Task RunAsync(ParseResult parse)
    {
        var preset = ParsePreset(parse.GetValue(Preset)!);
        var dtype = ParseDType(parse.GetValue(DType)!);
        var outDir = parse.GetValue(OutDir)!;
        await Progress.RunAsync($"Writing {parse.GetValue(Preset)}", progress =>
            Task.Run(() =>
            {
                CheckpointWriter.CreateRandomModel(outDir, preset, parse.GetValue(SeedOption), dtype,
                    new Progress<double>(f => progress.Report(new LoadProgress("write", (long)(f * 1000), 1000))));
                return true;
            }));
        Console.Out.WriteLine(Path.GetFullPath(outDir));
        if (parse.GetValue(DraftOut) is { } draftDir)
        {
            CheckpointWriter.CreateRandomDraft(draftDir, CheckpointWriter.GetPresetConfig(preset, dtype),
                parse.GetValue(SeedOption) + 1, dtype);
            Console.Out.WriteLine(Path.GetFullPath(draftDir));
        }
    }
}
