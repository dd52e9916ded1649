using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using System.Xml.Linq;
using NUnit.Framework;

namespace MiniCPM4.Packaging.Tests;

/// <summary>
/// End-to-end check of the NuGet packages: packs MiniCPM4 and MiniCPM4.Runtime.linux-x64 from the repository
/// (with the native library ./build.sh built), checks their contents, then restores them into a fresh console
/// app with its own NuGet cache, builds and runs it. Set MINICPM4_PACKAGES_DIR to test already-packed packages
/// (e.g. artifacts/packages from ./build.sh pack; relative to the repository root) instead of packing.
/// </summary>
[TestFixture, Category("Packaging"), NonParallelizable]
public sealed class PackageTests
{
    private const string ManagedId = "MiniCPM4";
    private const string RuntimeId = "MiniCPM4.Runtime.linux-x64";

    private string _repo = null!;
    private string _temp = null!;
    private string _packages = null!;
    private string _version = null!;

    [OneTimeSetUp]
    public void PackBoth()
    {
        _repo = FindRepoRoot();
        _version = ReadVersion(_repo);
        _temp = Directory.CreateTempSubdirectory("minicpm4-packaging-").FullName;

        string? given = Environment.GetEnvironmentVariable("MINICPM4_PACKAGES_DIR");
        if (!string.IsNullOrEmpty(given))
        {
            _packages = Path.GetFullPath(given, _repo);   // a relative path is relative to the repository root
            TestContext.Progress.WriteLine($"using the packages in {_packages}");
            return;
        }

        string native = Path.Combine(_repo, "build", "native", "libminicpm4.so");
        if (!File.Exists(native))
            Assert.Fail($"{native} does not exist: build the native engine first (./build.sh).");
        _packages = Path.Combine(_temp, "packages");
        // --artifacts-path keeps the pack's bin/obj (and its restore) out of the source tree.
        string isolated = Path.Combine(_temp, "pack-build");
        foreach (var project in new[]
                 {
                     "packaging/MiniCPM4.Runtime.linux-x64/MiniCPM4.Runtime.linux-x64.csproj",
                     "src/MiniCPM4/MiniCPM4.csproj",
                     "src/MiniCPM4.AI/MiniCPM4.AI.csproj",
                 })
        {
            Dotnet(_repo, null, "pack", Path.Combine(_repo, project), "-c", "Release", "-o", _packages,
                "--artifacts-path", isolated, "-nologo", "-v", "q", "-clp:ErrorsOnly",
                $"-p:MiniCpmNativeLibrary={native}");
        }
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        if (_temp is not null && Environment.GetEnvironmentVariable("MINICPM4_KEEP_TEMP") != "1")
        {
            try { Directory.Delete(_temp, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    [Test]
    public void ManagedPackage_HasAssemblyDocsReadmeAndDependsOnRuntime()
    {
        using var zip = ZipFile.OpenRead(PackagePath(ManagedId));
        var names = zip.Entries.Select(e => e.FullName).ToHashSet();
        Assert.That(names, Does.Contain("lib/net10.0/MiniCPM4.Core.dll"));
        Assert.That(names, Does.Contain("lib/net10.0/MiniCPM4.Core.xml"));
        Assert.That(names, Does.Contain("README.md"));
        Assert.That(names.Where(n => n.EndsWith(".so", StringComparison.Ordinal)), Is.Empty,
            "the native library belongs to the runtime package");

        var meta = Nuspec(zip);
        Assert.That(Field(meta, "id"), Is.EqualTo(ManagedId));
        Assert.That(Field(meta, "version"), Is.EqualTo(_version));
        Assert.That(Field(meta, "readme"), Is.EqualTo("README.md"));
        Assert.That(Field(meta, "license"), Is.EqualTo("Apache-2.0"));
        var deps = meta.Descendants().Where(e => e.Name.LocalName == "dependency")
            .ToDictionary(e => (string)e.Attribute("id")!, e => (string)e.Attribute("version")!);
        Assert.That(deps, Does.ContainKey(RuntimeId), "MiniCPM4 must depend on the native runtime package");
        Assert.That(deps[RuntimeId], Is.EqualTo(_version));
        Assert.That(deps, Does.ContainKey("Microsoft.ML.Tokenizers"));

        var docs = ReadEntry(zip, "lib/net10.0/MiniCPM4.Core.xml");
        Assert.That(docs, Does.Contain("M:MiniCPM4.MiniCpmModel.Load"), "XML docs cover the public API");
    }

    [Test]
    public void RuntimePackage_HasNativeLibraryAndReadme()
    {
        using var zip = ZipFile.OpenRead(PackagePath(RuntimeId));
        var names = zip.Entries.Select(e => e.FullName).ToHashSet();
        Assert.That(names, Does.Contain("runtimes/linux-x64/native/libminicpm4.so"));
        Assert.That(names, Does.Contain("README.md"));
        Assert.That(names.Where(n => n.StartsWith("lib/", StringComparison.Ordinal)), Is.Empty, "no managed code");
        var so = zip.GetEntry("runtimes/linux-x64/native/libminicpm4.so")!;
        Assert.That(so.Length, Is.GreaterThan(10_000));
        using (var s = so.Open())
        {
            var magic = new byte[4];
            s.ReadExactly(magic);
            Assert.That(magic, Is.EqualTo(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F' }));
        }

        var meta = Nuspec(zip);
        Assert.That(Field(meta, "id"), Is.EqualTo(RuntimeId));
        Assert.That(Field(meta, "version"), Is.EqualTo(_version), "both packages carry the same version");
        Assert.That(Field(meta, "readme"), Is.EqualTo("README.md"));
        Assert.That(meta.Descendants().Where(e => e.Name.LocalName == "dependency"), Is.Empty);
    }

    [Test]
    public void FreshConsoleApp_RestoresBuildsAndGenerates()
    {
        var (app, env) =
            CreateConsumer("consumer", $"""<PackageReference Include="{ManagedId}" Version="{_version}" />""",
            [_packages]);
        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using System.Text;
            using MiniCPM4;

            // The repository's demo model, copied next to the app (checkpoint writing is not in the package).
            string dir = Path.Combine(args[0], "tiny-model");
            using var model = MiniCpmModel.Load(dir);
            using var session = model.CreateSession();
            // Greedy, exactly 8 tokens (no stop tokens).
            var options = new GenerationOptions { MaxTokens = 8, Temperature = 0f, StopTokenIds = [] };
            var ids = new List<int>();
            var text = new StringBuilder();
            await foreach (var token in session.GenerateAsync("Once upon a time", options))
            {
                if (token.Id >= 0) ids.Add(token.Id);
                text.Append(token.Text);
            }
            Console.WriteLine($"native: {MiniCpmNative.LoadedLibraryPath}");
            Console.WriteLine($"tokens: {string.Join(',', ids)}");
            Console.WriteLine($"text: {text}");
            """);

        Dotnet(app, env, "restore", "-nologo", "-v", "q");
        Dotnet(app, env, "build", "--no-restore", "-c", "Release", "-nologo", "-v", "q", "-clp:ErrorsOnly");

        string bin = Path.Combine(app, "bin", "Release", "net10.0");
        string packagedLib = Path.Combine(bin, "runtimes", "linux-x64", "native", "libminicpm4.so");
        Assert.That(File.Exists(packagedLib), Is.True, $"the runtime package's library was copied to {packagedLib}");

        string modelDir = Path.Combine(Path.GetDirectoryName(app)!, "tiny-model");
        Directory.CreateDirectory(modelDir);
        foreach (var file in Directory.GetFiles(Path.Combine(_repo, "models", "demo")))
            File.Copy(file, Path.Combine(modelDir, Path.GetFileName(file)), overwrite: true);
        var (code, output) = Run(app, env, Path.Combine(bin, "App"), Path.GetDirectoryName(app)!);
        TestContext.Out.WriteLine(output);
        Assert.That(code, Is.EqualTo(0), output);
        var lines = output.Split('\n', StringSplitOptions.TrimEntries);
        string tokens = lines.Single(l => l.StartsWith("tokens: ", StringComparison.Ordinal))["tokens: ".Length..];
        Assert.That(tokens.Split(',', StringSplitOptions.RemoveEmptyEntries), Has.Length.EqualTo(8));
        string text = lines.Single(l => l.StartsWith("text: ", StringComparison.Ordinal))["text: ".Length..];
        Assert.That(text.Trim(), Is.Not.Empty, "the program printed generated text");
        string native = lines.Single(l => l.StartsWith("native: ", StringComparison.Ordinal))["native: ".Length..];
        Assert.That(Path.GetFullPath(native), Is.EqualTo(Path.GetFullPath(packagedLib)),
            "the engine was loaded from the runtime package's file, not from the repository build");
    }

    /// <summary>
    /// Packaging mechanics of the CUDA variant only (no CUDA build exists): packs MiniCPM4.Runtime.linux-x64.Cuda
    /// with the CPU library standing in, and checks that the documented consumer setup (ExcludeAssets="native" on
    /// the CPU runtime) leaves exactly the Cuda package's library in the app.
    /// </summary>
    [Test]
    public void CudaVariant_PacksUnderItsOwnIdAndReplacesTheCpuLibrary()
    {
        string native = Path.Combine(_repo, "build", "native", "libminicpm4.so");
        if (!File.Exists(native))
            Assert.Ignore($"{native} does not exist");
        string cudaPackages = Path.Combine(_temp, "cuda-packages");
        Dotnet(_repo, null, "pack",
            Path.Combine(_repo, "packaging/MiniCPM4.Runtime.linux-x64/MiniCPM4.Runtime.linux-x64.csproj"),
            "-c", "Release", "-o", cudaPackages, "--artifacts-path", Path.Combine(_temp, "pack-build-cuda"),
            "-nologo", "-v", "q", "-clp:ErrorsOnly", "-p:MiniCpmRuntimeVariant=Cuda",
                $"-p:MiniCpmCudaNativeLibrary={native}");
        string cudaId = RuntimeId + ".Cuda";
        string nupkg = Path.Combine(cudaPackages, $"{cudaId}.{_version}.nupkg");
        using (var zip = ZipFile.OpenRead(nupkg))
        {
            Assert.That(zip.GetEntry("runtimes/linux-x64/native/libminicpm4.so"), Is.Not.Null);
            Assert.That(Field(Nuspec(zip), "id"), Is.EqualTo(cudaId));
        }

        var (app, env) = CreateConsumer("consumer-cuda", $"""
            <PackageReference Include="{ManagedId}" Version="{_version}" />
                <PackageReference Include="{RuntimeId}" Version="{_version}" ExcludeAssets="native" />
                <PackageReference Include="{cudaId}" Version="{_version}" />
            """, [_packages, cudaPackages]);
        Dotnet(app, env, "restore", "-nologo", "-v", "q");
        Dotnet(app, env, "build", "--no-restore", "-c", "Release", "-nologo", "-v", "q", "-clp:ErrorsOnly");
        string deps = File.ReadAllText(Path.Combine(app, "bin", "Release", "net10.0", "App.deps.json"));
        var owners =
            System.Text.Json.JsonDocument.Parse(deps).RootElement.GetProperty("targets").EnumerateObject().First().Value
            .EnumerateObject()
            .Where(lib => lib.Value.TryGetProperty("runtimeTargets", out var rt) &&
                          rt.EnumerateObject().Any(a => a.Name.EndsWith("libminicpm4.so", StringComparison.Ordinal)))
            .Select(lib => lib.Name).ToList();
        Assert.That(owners, Is.EqualTo(new[] { $"{cudaId}/{_version}" }),
            "only the Cuda package supplies libminicpm4.so");
    }

    /// <summary>The documents whose C# blocks a new user copies: the repository README and the package
    /// READMEs.</summary>
    private static readonly string[] DocumentsWithCode =
    [
        "README.md", "packaging/README.nuget.md", "src/MiniCPM4.AI/README.md",
            "packaging/MiniCPM4.Runtime.linux-x64/README.md",
    ];

    /// <summary>
    /// Every ```csharp block of the READMEs builds, as written, against the packages in a fresh app (each block is one
    /// file: its using directives and type declarations stay at file level, its statements become a method that gets
    /// the program's args); the README's "API in a dozen lines" then runs on the demo model.
    /// </summary>
    [Test]
    public void ReadmeCodeBlocks_BuildAgainstThePackages_AndTheApiSnippetRunsOnTheDemoModel()
    {
        var blocks = DocumentsWithCode.SelectMany(doc => CSharpBlocks(File.ReadAllText(Path.Combine(_repo, doc)))
            .Select((code, i) => (Name: $"{doc} block {i + 1}", Code: code))).ToList();
        Assert.That(blocks, Has.Count.GreaterThanOrEqualTo(5), "the READMEs' C# blocks were found");
        int api = blocks.FindIndex(b => b.Name.StartsWith("README.md", StringComparison.Ordinal) &&
                                        b.Code.Contains("new MiniCpmChat(session", StringComparison.Ordinal));
        Assert.That(api, Is.GreaterThanOrEqualTo(0), "README.md has the API snippet");

        var (app, env) = CreateConsumer("consumer-docs", $"""
            <PackageReference Include="{ManagedId}" Version="{_version}" />
                <PackageReference Include="{ManagedId}.AI" Version="{_version}" />
                <PackageReference Include="Microsoft.Extensions.AI" Version="10.11.0" />
                <PackageReference Include="OpenAI" Version="2.15.0" />
            """, [_packages]);
        var dispatch = new StringBuilder("switch (args[0])\n{\n");
        for (int i = 0; i < blocks.Count; i++)
        {
            File.WriteAllText(Path.Combine(app, $"Block{i}.cs"), AsMethod(blocks[i].Code, $"Block{i}", blocks[i].Name));
            dispatch.Append($"    case \"{i}\": await Block{i}.RunAsync(args[1..]); break;\n");
        }
        dispatch.Append("}\n");
        File.WriteAllText(Path.Combine(app, "Program.cs"), dispatch.ToString());
        Dotnet(app, env, "restore", "-nologo", "-v", "q");
        Dotnet(app, env, "build", "--no-restore", "-c", "Release", "-nologo", "-v", "q", "-clp:ErrorsOnly");

        string demo = Path.Combine(_repo, "models", "demo");
        var (code, output) = Run(app, env, Path.Combine(app, "bin", "Release", "net10.0", "App"), api.ToString(), demo);
        TestContext.Out.WriteLine(output);
        Assert.That(code, Is.EqualTo(0), output);
        var rate =
            output.Split('\n', StringSplitOptions.TrimEntries).Last(l =>
            l.EndsWith(" tok/s", StringComparison.Ordinal));
        Assert.That(double.Parse(rate[..^" tok/s".Length], System.Globalization.CultureInfo.InvariantCulture),
            Is.GreaterThan(0),
            "the snippet printed a nonzero decode speed");
    }

    /// <summary>The bodies of the ```csharp fences of a Markdown document (indented fences included).</summary>
    internal static IEnumerable<string> CSharpBlocks(string markdown)
    {
        var lines = markdown.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].Trim() != "```csharp") continue;
            int indent = lines[i].Length - lines[i].TrimStart().Length;
            var body = new List<string>();
            for (i++; i < lines.Length && lines[i].Trim() != "```"; i++)
                body.Add(lines[i].Length >= indent ? lines[i][indent..] : lines[i].TrimStart());
            yield return string.Join('\n', body);
        }
    }

    /// <summary>A top-level-statements block as one file: usings first, statements as RunAsync(args), types
    /// after.</summary>
    internal static string AsMethod(string block, string className, string origin)
    {
        var usings = new StringBuilder();
        var statements = new StringBuilder();
        var types = new StringBuilder();
        foreach (var line in block.Split('\n'))
        {
            if (line.StartsWith("using ", StringComparison.Ordinal)
                && !line.StartsWith("using var ", StringComparison.Ordinal) &&
                line.TrimEnd().EndsWith(';'))
                usings.AppendLine(line);
            else if (line.StartsWith("record ", StringComparison.Ordinal)
                || line.StartsWith("class ", StringComparison.Ordinal))
                types.AppendLine(line);
            else
                statements.Append("        ").AppendLine(line);
        }
        return $"// {origin}\n{usings}\ninternal static class {className}\n{{\n" +
               $"    public static async Task RunAsync(string[] args)\n    {{\n{statements}        await " +
                   $"Task.CompletedTask;\n    }}\n}}\n\n{types}";
    }

    // ---- helpers

    private string PackagePath(string id)
    {
        string path = Path.Combine(_packages, $"{id}.{_version}.nupkg");
        Assert.That(File.Exists(path), Is.True, $"{path} was not produced");
        return path;
    }

    private static XElement Nuspec(ZipArchive zip)
    {
        var entry =
            zip.Entries.Single(e => !e.FullName.Contains('/')
            && e.FullName.EndsWith(".nuspec", StringComparison.Ordinal));
        using var s = entry.Open();
        return XDocument.Load(s).Root!.Elements().Single(e => e.Name.LocalName == "metadata");
    }

    private static string? Field(XElement metadata, string name) =>
        metadata.Elements().FirstOrDefault(e => e.Name.LocalName == name)?.Value;

    private static string ReadEntry(ZipArchive zip, string name)
    {
        using var reader = new StreamReader(zip.GetEntry(name)!.Open());
        return reader.ReadToEnd();
    }

    /// <summary>A console app in a fresh folder under the temp directory, with its own nuget.config and NuGet
    /// cache.</summary>
    private (string App, Dictionary<string, string?> Env) CreateConsumer(string name, string packageReferences,
        string[] localSources)
    {
        string root = Path.Combine(_temp, name);
        string app = Path.Combine(root, "App");
        Directory.CreateDirectory(root);
        // Stop MSBuild's upward search for Directory.Build.* / Directory.Packages.props outside the temp folder.
        File.WriteAllText(Path.Combine(root, "Directory.Build.props"), "<Project />\n");
        File.WriteAllText(Path.Combine(root, "Directory.Build.targets"), "<Project />\n");
        File.WriteAllText(Path.Combine(root, "Directory.Packages.props"),
            "<Project><PropertyGroup><ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>" +
            "</PropertyGroup></Project>\n");
        File.WriteAllText(Path.Combine(root, "nuget.config"), NuGetConfig(localSources));

        var env = ConsumerEnvironment(root);
        Dotnet(root, env, "new", "console", "-o", app, "-n", "App", "--no-restore", "--force");
        File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                {packageReferences}
              </ItemGroup>
            </Project>
            """);
        return (app, env);
    }

    /// <summary>The temp package folder serves only MiniCPM4*; everything else comes from the machine's package
    /// cache (read as a folder feed, for speed and offline use) and the NuGet sources this machine is configured
    /// with (MINICPM4_TEST_NUGET_SOURCE overrides them).</summary>
    private static string NuGetConfig(string[] localSources)
    {
        string[] feeds = Environment.GetEnvironmentVariable("MINICPM4_TEST_NUGET_SOURCE") is { Length: > 0 } f
            ? [f] : ConfiguredSources();
        string machineCache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        bool useCache = Directory.Exists(machineCache);
        var sb = new StringBuilder();
        sb.AppendLine("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
        sb.AppendLine("<configuration>");
        sb.AppendLine("  <packageSources>");
        sb.AppendLine("    <clear />");
        for (int i = 0; i < localSources.Length; i++)
            sb.AppendLine($"    <add key=\"minicpm4-under-test-{i}\" value=\"{localSources[i]}\" />");
        if (useCache) sb.AppendLine($"    <add key=\"machine-cache\" value=\"{machineCache}\" />");
        for (int i = 0; i < feeds.Length; i++) sb.AppendLine($"    <add key=\"feed-{i}\" value=\"{feeds[i]}\" />");
        sb.AppendLine("  </packageSources>");
        sb.AppendLine("  <packageSourceMapping>");
        for (int i = 0; i < localSources.Length; i++)
            sb.AppendLine(
                $"    <packageSource key=\"minicpm4-under-test-{i}\"><package pattern=\"MiniCPM4\" /><package " +
                $"pattern=\"MiniCPM4.*\" /></packageSource>");
        if (useCache) sb.AppendLine(
            "    <packageSource key=\"machine-cache\"><package pattern=\"*\" /></packageSource>");
        for (int i = 0; i < feeds.Length; i++)
            sb.AppendLine($"    <packageSource key=\"feed-{i}\"><package pattern=\"*\" /></packageSource>");
        sb.AppendLine("  </packageSourceMapping>");
        sb.AppendLine("</configuration>");
        return sb.ToString();
    }

    /// <summary>The enabled NuGet sources of this machine's configuration (`dotnet nuget list source`).</summary>
    private static string[] ConfiguredSources()
    {
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet", "nuget list source --format Short")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = System.Diagnostics.Process.Start(psi)!;
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return output.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Where(line => line.StartsWith("E ", StringComparison.Ordinal))
            .Select(line => line[2..].Trim())
            .ToArray();
    }

    /// <summary>A fresh NuGet cache so no previously cached MiniCPM4 version can stand in for the packages under
    /// test, and no native-library override.</summary>
    private static Dictionary<string, string?> ConsumerEnvironment(string root) => new()
    {
        ["NUGET_PACKAGES"] = Path.Combine(root, "nuget-cache"),
        ["NUGET_HTTP_CACHE_PATH"] = Path.Combine(root, "nuget-http-cache"),
        ["MINICPM4_NATIVE_LIBRARY"] = null,
        ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
        ["DOTNET_NOLOGO"] = "1",
        ["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1",
    };

    private static void Dotnet(string workingDirectory, IDictionary<string, string?>? env, params string[] args)
    {
        var sw = Stopwatch.StartNew();
        // -nodeReuse:false: leave no MSBuild server behind.
        string[] full = args[0] is "new" ? args : [.. args, "-nodeReuse:false"];
        var (code, output) = Run(workingDirectory, env, "dotnet", full);
        TestContext.Progress.WriteLine(
            $"dotnet {args[0]} {Path.GetFileName(args.Length > 1 ? args[1] : "")}: exit {code}, " +
            $"{sw.Elapsed.TotalSeconds:F1} s");
        Assert.That(code, Is.EqualTo(0), $"dotnet {string.Join(' ', full)} failed in {workingDirectory}:\n{output}");
    }

    private static (int Code, string Output) Run(string workingDirectory, IDictionary<string, string?>? env,
        string fileName, params string[] args)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_UI_LANGUAGE"] = "en";
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        if (env is not null)
        {
            foreach (var (k, v) in env)
            {
                if (v is null) psi.Environment.Remove(k);
                else psi.Environment[k] = v;
            }
        }
        var output = new StringBuilder();
        using var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            return (-1, output + "\n(timed out after 5 minutes)");
        }
        p.WaitForExit();
        lock (output) return (p.ExitCode, output.ToString());
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "MiniCPM4.sln")))
                return dir.FullName;
        }
        Assert.Fail($"MiniCPM4.sln not found above {TestContext.CurrentContext.TestDirectory}");
        return null!;
    }

    private static string ReadVersion(string repo)
    {
        var props = XDocument.Load(Path.Combine(repo, "Directory.Build.props"));
        string? version = props.Descendants().FirstOrDefault(e => e.Name.LocalName == "Version")?.Value;
        Assert.That(version, Is.Not.Null.And.Not.Empty, "Directory.Build.props defines <Version>");
        return version!.Trim();
    }
}
