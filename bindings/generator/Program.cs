using System.Text;
using MiniCPM4.BindingsGenerator;

// minicpm4-bindgen: regenerates bindings/Generated/NativeMethods.g.cs from native/include/minicpm4.h.
//
//   dotnet run --project bindings/generator -- [--repo ROOT] [--check]
//
// --check regenerates in memory and exits 1 (printing a diff) if the committed file differs.
// Exit codes: 0 success / up to date, 1 stale file or any generator error, 2 bad usage.

string? repo = null;
bool check = false;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--check":
            check = true;
            break;
        case "--repo" when i + 1 < args.Length:
            repo = args[++i];
            break;
        case "-h":
        case "--help":
            Console.WriteLine("usage: minicpm4-bindgen [--repo ROOT] [--check]");
            Console.WriteLine(
                "  --repo ROOT  repository root (default: the nearest parent of the current directory with " +
                "native/include/minicpm4.h)");
            Console.WriteLine(
                "  --check      do not write; exit 1 with a diff if bindings/Generated/NativeMethods.g.cs is not up " +
                "to date");
            Console.WriteLine("environment: CLANG  clang executable to use (default: clang-14, then clang)");
            return 0;
        default:
            Console.Error.WriteLine($"minicpm4-bindgen: unknown argument '{args[i]}' (see --help)");
            return 2;
    }
}

try
{
    string root = Generator.FindRepoRoot(repo);
    string output = Path.Combine(root, Generator.OutputPath);
    string generated = Generator.Generate(root);

    if (check)
    {
        if (!File.Exists(output))
        {
            Console.Error.WriteLine(
                $"minicpm4-bindgen: {Generator.OutputPath} does not exist; run `dotnet run --project " +
                $"bindings/generator` to create it");
            return 1;
        }
        string committed = Encoding.UTF8.GetString(File.ReadAllBytes(output));
        if (committed == generated)
        {
            Console.WriteLine($"minicpm4-bindgen: {Generator.OutputPath} is up to date");
            return 0;
        }
        Console.Error.WriteLine($"minicpm4-bindgen: {Generator.OutputPath} is out of date with {Emitter.HeaderPath}:");
        Console.Error.Write(
            LineDiff.Unified(committed, generated, Generator.OutputPath + " (committed)", Generator.OutputPath
            + " (regenerated)"));
        Console.Error.WriteLine("run `dotnet run --project bindings/generator` and commit the result");
        return 1;
    }

    byte[] bytes = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(generated);
    if (File.Exists(output) && File.ReadAllBytes(output).AsSpan().SequenceEqual(bytes))
    {
        Console.WriteLine($"minicpm4-bindgen: {Generator.OutputPath} unchanged");
        return 0;
    }
    Directory.CreateDirectory(Path.GetDirectoryName(output)!);
    File.WriteAllBytes(output, bytes);
    Console.WriteLine($"minicpm4-bindgen: wrote {Generator.OutputPath}");
    return 0;
}
catch (GeneratorException e)
{
    Console.Error.WriteLine($"minicpm4-bindgen: error: {e.Message}");
    return 1;
}
