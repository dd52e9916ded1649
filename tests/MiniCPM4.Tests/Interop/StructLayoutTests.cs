using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using MiniCPM4.Interop;
using NUnit.Framework;
using static MiniCPM4.Tests.Interop.InteropTestSupport;

namespace MiniCPM4.Tests.Interop;

/// <summary>The managed structs must have exactly the C layout: same size and same field offsets.</summary>
[TestFixture]
public unsafe class StructLayoutTests
{
    private static Type[] GeneratedStructs() =>
        typeof(NativeMethods).Assembly.GetTypes()
            .Where(t => t.IsValueType && t.Namespace == "MiniCPM4.Interop"
                && t.Name.StartsWith("mcpm_", StringComparison.Ordinal))
            .OrderBy(t => t.Name, StringComparer.Ordinal)
            .ToArray();

    private static int LayoutConstant(string name)
    {
        FieldInfo? f =
            typeof(NativeLayout).GetField(name, BindingFlags.NonPublic | BindingFlags.Public | BindingFlags.Static);
        Assert.That(f, Is.Not.Null, $"NativeLayout.{name} is missing");
        return (int)f!.GetRawConstantValue()!;
    }

    [Test]
    public void SizeofOfEachStructMatchesTheClangSize()
    {
        Assert.Multiple(() =>
        {
            Assert.That(sizeof(mcpm_build_info), Is.EqualTo(NativeLayout.mcpm_build_info_Size));
            Assert.That(sizeof(mcpm_model_config), Is.EqualTo(NativeLayout.mcpm_model_config_Size));
            Assert.That(sizeof(mcpm_model_options), Is.EqualTo(NativeLayout.mcpm_model_options_Size));
            Assert.That(sizeof(mcpm_session_params), Is.EqualTo(NativeLayout.mcpm_session_params_Size));
            Assert.That(sizeof(mcpm_sampling_params), Is.EqualTo(NativeLayout.mcpm_sampling_params_Size));
            Assert.That(sizeof(mcpm_session_stats), Is.EqualTo(NativeLayout.mcpm_session_stats_Size));
            Assert.That(sizeof(mcpm_draft_config), Is.EqualTo(NativeLayout.mcpm_draft_config_Size));
            Assert.That(sizeof(mcpm_int4_quantize_params), Is.EqualTo(NativeLayout.mcpm_int4_quantize_params_Size));
            Assert.That(sizeof(mcpm_cuda_device_info), Is.EqualTo(NativeLayout.mcpm_cuda_device_info_Size));
        });
    }

    [Test]
    public void EveryStructHasLayoutConstantsAndMatchingOffsets()
    {
        Type[] structs = GeneratedStructs();
        Assert.That(structs, Has.Length.EqualTo(11));
        Assert.Multiple(() =>
        {
            foreach (Type t in structs)
            {
                Assert.That(t.IsLayoutSequential, t.Name);
                Assert.That(Marshal.SizeOf(t), Is.EqualTo(LayoutConstant(t.Name + "_Size")), $"sizeof({t.Name})");
                foreach (FieldInfo field in t.GetFields(BindingFlags.Public | BindingFlags.Instance))
                {
                    Assert.That((int)Marshal.OffsetOf(t, field.Name),
                        Is.EqualTo(LayoutConstant($"{t.Name}_{field.Name}_Offset")),
                        $"offsetof({t.Name}, {field.Name})");
                }
            }
        });
    }

    /// <summary>Independent of the generator: ask clang directly for the sizes and offsets.</summary>
    [Test]
    public void LayoutMatchesWhatClangComputesNow()
    {
        string clang = FindClang();
        Type[] structs = GeneratedStructs();
        var expected = new Dictionary<string, (Type Type, string? Field)>();
        var source = new StringBuilder("#include \"minicpm4.h\"\nenum {\n");
        foreach (Type t in structs)
        {
            string key = $"probe_{expected.Count}";
            expected[key] = (t, null);
            source.Append(CultureInfo.InvariantCulture, $"  {key} = (int)sizeof(struct {t.Name}),\n");
            foreach (FieldInfo field in t.GetFields(BindingFlags.Public | BindingFlags.Instance))
            {
                key = $"probe_{expected.Count}";
                expected[key] = (t, field.Name);
                source.Append(CultureInfo.InvariantCulture,
                    $"  {key} = (int)__builtin_offsetof(struct {t.Name}, {field.Name}),\n");
            }
        }
        source.Append("};\n");

        ProcessResult r = Run(clang,
            ["-Xclang", "-ast-dump=json", "-fsyntax-only", "-x", "c", "-I", Path.GetDirectoryName(HeaderPath)!, "-"],
            RepoRoot, source.ToString());
        Assert.That(r.ExitCode, Is.Zero, r.Stderr);

        var actual = new Dictionary<string, int>();
        using (JsonDocument doc = JsonDocument.Parse(r.Stdout, new JsonDocumentOptions { MaxDepth = 4096 }))
        {
            foreach (JsonElement node in doc.RootElement.GetProperty("inner").EnumerateArray())
            {
                if (node.GetProperty("kind").GetString() != "EnumDecl"
                    || !node.TryGetProperty("inner", out JsonElement consts))
                    continue;
                foreach (JsonElement c in consts.EnumerateArray())
                {
                    string name = c.GetProperty("name").GetString()!;
                    JsonElement constant = c.GetProperty("inner")[0];
                    Assert.That(constant.GetProperty("kind").GetString(), Is.EqualTo("ConstantExpr"));
                    actual[name] = int.Parse(constant.GetProperty("value").GetString()!, CultureInfo.InvariantCulture);
                }
            }
        }

        Assert.That(actual.Keys, Is.EquivalentTo(expected.Keys));
        Assert.Multiple(() =>
        {
            foreach ((string key, (Type type, string? field)) in expected)
            {
                if (field is null)
                    Assert.That(Marshal.SizeOf(type), Is.EqualTo(actual[key]), $"sizeof({type.Name})");
                else
                    Assert.That((int)Marshal.OffsetOf(type, field), Is.EqualTo(actual[key]),
                        $"offsetof({type.Name}, {field})");
            }
        });
    }
}
