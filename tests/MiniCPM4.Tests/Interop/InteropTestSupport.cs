using System.Diagnostics;
using System.Text;
using NUnit.Framework;

namespace MiniCPM4.Tests.Interop;

/// <summary>Repository paths and child-process helpers shared by the interop tests.</summary>
internal static class InteropTestSupport
{
    /// <summary>The folder holding MiniCPM4.sln, found by walking up from the test output directory.</summary>
    public static string RepoRoot
    {
        get
        {
            for (string? dir = TestContext.CurrentContext.TestDirectory; dir is not null; dir =
                Path.GetDirectoryName(dir))
            {
                if (File.Exists(Path.Combine(dir, "MiniCPM4.sln")))
                    return dir;
            }
            Assert.Fail($"MiniCPM4.sln not found above {TestContext.CurrentContext.TestDirectory}");
            return null!;
        }
    }

    public static string HeaderPath => Path.Combine(RepoRoot, "native", "include", "minicpm4.h");

    public sealed record ProcessResult(int ExitCode, string Stdout, string Stderr)
    {
        public string Output => Stdout + Stderr;
    }

    /// <summary>Runs a process to completion; a missing executable is a test failure, never a skip.</summary>
    public static ProcessResult Run(string fileName, IEnumerable<string> arguments, string workingDirectory,
        string? stdin = null, TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (string a in arguments)
            psi.ArgumentList.Add(a);
        // Child builds must not leave MSBuild nodes or compiler servers behind.
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        psi.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";

        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new InvalidOperationException("Process.Start returned null");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Assert.Fail($"could not run '{fileName}': {e.Message}");
            throw;
        }
        using (process)
        {
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            if (stdin is not null)
            {
                process.StandardInput.Write(stdin);
                process.StandardInput.Close();
            }
            if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(5)))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail($"'{fileName} {string.Join(' ', arguments)}' timed out");
            }
            process.WaitForExit();
            return new ProcessResult(process.ExitCode, stdout.GetAwaiter().GetResult(),
                stderr.GetAwaiter().GetResult());
        }
    }

    /// <summary>$CLANG, clang-14 or clang — the same choice as bindings/generator; fails the test if none
    /// runs.</summary>
    public static string FindClang()
    {
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("CLANG") is { Length: > 0 } fromEnv)
            candidates.Add(fromEnv);
        candidates.Add("clang-14");
        candidates.Add("clang");
        var errors = new List<string>();
        foreach (string candidate in candidates)
        {
            try
            {
                using var p = Process.Start(new ProcessStartInfo(candidate, "--version")
                {
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false,
                });
                if (p is null)
                    continue;
                p.StandardOutput.ReadToEnd();
                p.StandardError.ReadToEnd();
                p.WaitForExit();
                if (p.ExitCode == 0)
                    return candidate;
                errors.Add($"{candidate}: exit code {p.ExitCode}");
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                errors.Add($"{candidate}: {e.Message}");
            }
        }
        Assert.Fail("clang is required to verify the bindings (install clang-14 or set CLANG): "
            + string.Join("; ", errors));
        return null!;
    }
}
