using System.ComponentModel;
using System.Diagnostics;
using System.Text;

namespace MiniCPM4.BindingsGenerator;

/// <summary>Finds and runs clang: $CLANG if set, else clang-14, else clang.</summary>
internal sealed class Clang
{
    private readonly string _executable;
    private readonly string _workingDirectory;

    private Clang(string executable, string workingDirectory)
    {
        _executable = executable;
        _workingDirectory = workingDirectory;
    }

    public string Executable => _executable;

    public static Clang Locate(string workingDirectory)
    {
        var candidates = new List<string>();
        string? fromEnv = Environment.GetEnvironmentVariable("CLANG");
        if (!string.IsNullOrWhiteSpace(fromEnv))
            candidates.Add(fromEnv);
        candidates.Add("clang-14");
        candidates.Add("clang");

        var tried = new List<string>();
        foreach (string candidate in candidates)
        {
            try
            {
                (int rc, string stdout, string stderr) = RunProcess(candidate, ["--version"], workingDirectory, null);
                if (rc == 0)
                    return new Clang(candidate, workingDirectory);
                tried.Add($"{candidate}: exited with {rc}: {FirstLine(stderr + stdout)}");
            }
            catch (Win32Exception e)
            {
                tried.Add($"{candidate}: {e.Message}");
            }
        }

        throw new GeneratorException(
            "clang was not found; install clang-14 or set CLANG to a clang executable. Tried:\n  " +
            string.Join("\n  ", tried));
    }

    /// <summary>Runs clang with the arguments (and optional stdin) and returns stdout; fails loudly on
    /// errors.</summary>
    public string Run(IReadOnlyList<string> arguments, string? stdin = null)
    {
        (int rc, string stdout, string stderr) = RunProcess(_executable, arguments, _workingDirectory, stdin);
        if (rc != 0)
        {
            throw new GeneratorException(
                $"{_executable} {string.Join(' ', arguments)} failed with exit code {rc}:\n{stderr.TrimEnd()}");
        }
        return stdout;
    }

    private static (int ExitCode, string Stdout, string Stderr) RunProcess(
        string fileName, IReadOnlyList<string> arguments, string workingDirectory, string? stdin)
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
        // Deterministic diagnostics and no colour codes in messages.
        psi.Environment["LC_ALL"] = "C";

        using var process = Process.Start(psi) ?? throw new GeneratorException($"could not start {fileName}");
        Task<string> stdoutTask = process.StandardOutput.ReadToEndAsync();
        Task<string> stderrTask = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            process.StandardInput.Write(stdin);
            process.StandardInput.Close();
        }
        process.WaitForExit();
        return (process.ExitCode, stdoutTask.GetAwaiter().GetResult(), stderrTask.GetAwaiter().GetResult());
    }

    private static string FirstLine(string s)
    {
        s = s.Trim();
        int nl = s.IndexOf('\n');
        return nl < 0 ? s : s[..nl];
    }
}
