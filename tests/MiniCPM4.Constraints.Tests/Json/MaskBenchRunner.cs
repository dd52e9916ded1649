using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MiniCPM4.Constraints.Grammars;
using MiniCPM4.Constraints.Json;
using NUnit.Framework;

namespace MiniCPM4.Constraints.Tests.Json;

/// <summary>
/// Runs the JSON Schema compiler over MaskBench-style cases (not part of the repository): one JSON object a line,
/// <c>{"id", "schema", "instances": [JSON text...], "valid": [bool...]}</c>, from the file named by MASKBENCH_CASES.
/// A case passes when its schema compiles, every valid instance is accepted and every invalid one rejected.
/// Optional: MASKBENCH_FILTER (id substring), MASKBENCH_LIMIT (first n cases), MASKBENCH_REPORT (a file for the
/// per-case lines), MASKBENCH_TIMEOUT_S (per case, default 20), MASKBENCH_ANY_ORDER (JsonSchemaOptions.AnyOrderMaxProperties).
/// </summary>
[TestFixture, Explicit("needs MASKBENCH_CASES (the MaskBench data is not in the repository)")]
public class MaskBenchRunner
{
    [Test]
    public void Run()
    {
        var path = Environment.GetEnvironmentVariable("MASKBENCH_CASES");
        if (string.IsNullOrEmpty(path) || !File.Exists(path)) Assert.Ignore("MASKBENCH_CASES is not set");
        var filter = Environment.GetEnvironmentVariable("MASKBENCH_FILTER");
        int limit = int.TryParse(Environment.GetEnvironmentVariable("MASKBENCH_LIMIT"), out var l) ? l : int.MaxValue;
        int timeout = int.TryParse(Environment.GetEnvironmentVariable("MASKBENCH_TIMEOUT_S"), out var t) ? t : 20;
        var reportPath = Environment.GetEnvironmentVariable("MASKBENCH_REPORT");
        var options = new JsonSchemaOptions
        {
            AnyOrderMaxProperties = int.TryParse(Environment.GetEnvironmentVariable("MASKBENCH_ANY_ORDER"), out var a) ? a : 0,
        };
        var report = new StringBuilder();
        int cases = 0, compiled = 0, passing = 0, invalidAccepted = 0, validRejected = 0, instances = 0;
        var compileErrors = new Dictionary<string, int>();
        var failures = new Dictionary<string, int>();
        var total = Stopwatch.StartNew();
        foreach (var line in File.ReadLines(path))
        {
            if (cases >= limit) break;
            if (string.IsNullOrWhiteSpace(line)) continue;
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            var id = root.GetProperty("id").GetString()!;
            if (filter is not null && !id.Contains(filter)) continue;
            cases++;
            var schemaText = root.GetProperty("schema").GetRawText();
            var texts = root.GetProperty("instances").EnumerateArray().Select(e => e.GetString()!).ToArray();
            var valid = root.GetProperty("valid").EnumerateArray().Select(e => e.GetBoolean()).ToArray();
            instances += texts.Length;
            var sw = Stopwatch.StartNew();
            var work = Task.Run(() =>
            {
                Grammar g;
                try
                {
                    g = JsonSchemaCompiler.Compile(schemaText, options);
                }
                catch (ConstraintCompileException e)
                {
                    return ("compile-error", e.Keyword ?? "(none)", e.Message, (bool[]?)null);
                }
                var accepted = texts.Select(x => GrammarMatcher.Accepts(g, Encoding.UTF8.GetBytes(x))).ToArray();
                return ("compiled", "", "", accepted);
            });
            (string Status, string Keyword, string Message, bool[]? Accepted) r;
            try
            {
                if (!work.Wait(TimeSpan.FromSeconds(timeout))) r = ("timeout", "", "", null);
                else r = work.Result;
            }
            catch (AggregateException e)
            {
                var inner = e.InnerException!;
                r = ("crash", inner.GetType().Name, inner.Message.Split('\n')[0], null);
            }
            string outcome;
            if (r.Status == "compile-error")
            {
                Bump(compileErrors, r.Keyword);
                outcome = $"ERROR {r.Keyword}: {r.Message}";
            }
            else if (r.Accepted is null)
            {
                Bump(failures, r.Status + (r.Keyword.Length > 0 ? " " + r.Keyword : ""));
                outcome = $"{r.Status.ToUpperInvariant()} {r.Keyword} {r.Message}";
            }
            else
            {
                compiled++;
                int bad = 0, rejected = 0;
                for (int i = 0; i < texts.Length; i++)
                {
                    if (r.Accepted[i] && !valid[i]) bad++;
                    if (!r.Accepted[i] && valid[i]) rejected++;
                }
                invalidAccepted += bad;
                validRejected += rejected;
                if (bad == 0 && rejected == 0)
                {
                    passing++;
                    outcome = "PASS";
                }
                else
                {
                    if (bad > 0) Bump(failures, "invalid accepted");
                    if (rejected > 0) Bump(failures, "valid rejected");
                    var which = Enumerable.Range(0, texts.Length).Where(i => r.Accepted[i] != valid[i])
                        .Select(i => (valid[i] ? "REJECTED-VALID " : "ACCEPTED-INVALID ") + Trim(texts[i]));
                    outcome = "FAIL " + string.Join(" | ", which);
                }
            }
            report.AppendLine($"{id}\t{sw.ElapsedMilliseconds}ms\t{outcome}");
        }
        var summary = new StringBuilder();
        summary.AppendLine($"cases {cases}, instances {instances}, compiled {compiled}, passing {passing}, " +
                           $"invalid accepted {invalidAccepted}, valid rejected {validRejected}, {total.Elapsed.TotalSeconds:F0} s");
        summary.AppendLine("compile errors by keyword: " +
                           string.Join(", ", compileErrors.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value}")));
        summary.AppendLine("failures: " + string.Join(", ", failures.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value}")));
        if (reportPath is not null) File.WriteAllText(reportPath, summary + report.ToString());
        TestContext.Out.WriteLine(summary.ToString());
        Console.WriteLine(summary.ToString());
        Assert.That(invalidAccepted, Is.Zero, summary.ToString());
    }

    private static string Trim(string s) => s.Length > 300 ? s[..300] + "..." : s;

    private static void Bump(Dictionary<string, int> d, string key) => d[key] = d.GetValueOrDefault(key) + 1;
}
