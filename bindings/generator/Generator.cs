using System.Text;

namespace MiniCPM4.BindingsGenerator;

internal static class Generator
{
    public const string OutputPath = "bindings/Generated/NativeMethods.g.cs";

    /// <summary>--repo if given, else the nearest ancestor of the current directory holding the header.</summary>
    public static string FindRepoRoot(string? explicitRoot)
    {
        if (explicitRoot is not null)
        {
            string full = Path.GetFullPath(explicitRoot);
            if (!File.Exists(Path.Combine(full, Emitter.HeaderPath)))
                throw new GeneratorException($"--repo {explicitRoot}: {Emitter.HeaderPath} not found under {full}");
            return full;
        }
        for (string? dir = Directory.GetCurrentDirectory(); dir is not null; dir = Path.GetDirectoryName(dir))
        {
            if (File.Exists(Path.Combine(dir, Emitter.HeaderPath)))
                return dir;
        }
        throw new GeneratorException(
            $"cannot find {Emitter.HeaderPath} above {Directory.GetCurrentDirectory()}; pass --repo ROOT");
    }

    /// <summary>Runs clang on the header and returns the full text of NativeMethods.g.cs.</summary>
    public static string Generate(string root)
    {
        string headerFull = Path.GetFullPath(Path.Combine(root, Emitter.HeaderPath));
        var header = new HeaderText(File.ReadAllBytes(headerFull));
        Clang clang = Clang.Locate(root);
        var model = new HeaderModel();

        string ast = clang.Run(["-Xclang", "-ast-dump=json", "-fsyntax-only", "-x", "c", Emitter.HeaderPath]);
        new AstReader(headerFull, root, header).Read(ast, model);
        if (model.Functions.Count == 0)
            throw new GeneratorException($"no functions found in {Emitter.HeaderPath}; is the AST filter broken?");

        string macros = clang.Run(["-dM", "-E", "-x", "c", Emitter.HeaderPath]);
        MacroReader.Read(macros, header, model);

        LayoutProbe.Read(clang, Path.GetDirectoryName(Emitter.HeaderPath)!, Path.GetFileName(Emitter.HeaderPath),
            model);

        string text = Emitter.Emit(model);
        if (text.Contains('\r'))
            throw new GeneratorException("internal error: generated text contains a carriage return");
        return text;
    }
}
