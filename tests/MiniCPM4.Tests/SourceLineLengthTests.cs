using System.Diagnostics;
using NUnit.Framework;

namespace MiniCPM4.Tests;

/// <summary>The style gate's line length: no tracked C# line is longer than 120 columns (.editorconfig's
/// max_line_length).</summary>
public class SourceLineLengthTests
{
    private const int MaxLineLength = 120;

    // Generated files, rewritten by their generators: tokenizer reference data and the interop bindings.
    private static readonly string[] ExemptFiles = ["tests/MiniCPM4.Tests/Tokenization/SentencePieceReferenceData.cs"];
    private static readonly string[] ExemptDirectories = ["bindings/Generated/"];

    [Test]
    public void NoTrackedCSharpLineIsLongerThan120Columns()
    {
        string root = RepositoryRoot();
        var files = GitLsFiles(root);
        if (files is null)
            Assert.Ignore("not a git checkout (or git is missing): nothing to scan");
        Assert.That(files, Is.Not.Empty);
        var tooLong = new List<string>();
        foreach (var file in files!)
        {
            if (ExemptFiles.Contains(file) || ExemptDirectories.Any(d => file.StartsWith(d, StringComparison.Ordinal)))
                continue;
            string path = Path.Combine(root, file);
            if (!File.Exists(path)) continue;   // deleted in the work tree, not yet in the index
            tooLong.AddRange(LongLines(File.ReadAllLines(path)).Select(n => $"{file}:{n}"));
        }
        Assert.That(tooLong, Is.Empty, $"{tooLong.Count} line(s) longer than {MaxLineLength} columns");
    }

    [Test]
    public void RawStringLiteralsAreExempt()
    {
        string longText = new('x', 130);
        string[] lines =
        [
            "var a = 1;",
            "var json = \"\"\"",
            longText,
            "    \"\"\";",
            "var inline = \"\"\"" + longText + "\"\"\";",
            "var b = \"" + longText + "\";",
        ];
        Assert.That(LongLines(lines), Is.EqualTo(new[] { 6 }));
    }

    /// <summary>1-based numbers of the lines longer than the limit, except the lines of raw string literals
    /// (test data whose text a line break would change).</summary>
    private static IEnumerable<int> LongLines(IReadOnlyList<string> lines)
    {
        bool insideRaw = false;
        for (int i = 0; i < lines.Count; i++)
        {
            int quotes = CountRawQuotes(lines[i]);
            bool exempt = insideRaw || quotes > 0;
            if (quotes % 2 == 1) insideRaw = !insideRaw;
            // Columns are code points: a character outside the BMP (an emoji in test data) is one column.
            if (!exempt && lines[i].EnumerateRunes().Count() > MaxLineLength) yield return i + 1;
        }
    }

    private static int CountRawQuotes(string line)
    {
        int count = 0;
        for (int at = line.IndexOf("\"\"\"", StringComparison.Ordinal); at >= 0;
             at = line.IndexOf("\"\"\"", at + 3, StringComparison.Ordinal))
            count++;
        return count;
    }

    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MiniCPM4.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("MiniCPM4.sln not found above the test directory");
    }

    private static List<string>? GitLsFiles(string root)
    {
        try
        {
            var start = new ProcessStartInfo("git", ["ls-files", "*.cs"])
            {
                WorkingDirectory = root,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var git = Process.Start(start)!;
            string output = git.StandardOutput.ReadToEnd();
            git.WaitForExit();
            return git.ExitCode == 0
                ? output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList()
                : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }
}
