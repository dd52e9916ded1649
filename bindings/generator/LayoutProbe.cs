using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MiniCPM4.BindingsGenerator;

/// <summary>
/// Asks clang for sizeof and offsetof of every struct: a tiny translation unit turns them into enum
/// constants, and the JSON AST carries their evaluated values. Nothing is compiled or run.
/// </summary>
internal static class LayoutProbe
{
    private const string Prefix = "mcpm_bindgen_layout_";

    public static void Read(Clang clang, string includeDirectory, string headerFileName, HeaderModel model)
    {
        if (model.Structs.Count == 0)
            return;
        var source = new StringBuilder();
        source.Append("#include \"").Append(headerFileName).Append("\"\n");
        source.Append("enum {\n");
        for (int s = 0; s < model.Structs.Count; s++)
        {
            CStruct st = model.Structs[s];
            source.Append(CultureInfo.InvariantCulture, $"  {Prefix}{s}_size = (int)sizeof(struct {st.Name}),\n");
            for (int f = 0; f < st.Fields.Count; f++)
                source.Append(CultureInfo.InvariantCulture,
                    $"  {Prefix}{s}_{f} = (int)__builtin_offsetof(struct {st.Name}, {st.Fields[f].Name}),\n");
        }
        source.Append("};\n");

        string json = clang.Run(
            ["-Xclang", "-ast-dump=json", "-fsyntax-only", "-x", "c", "-I", includeDirectory, "-"], source.ToString());

        var values = new Dictionary<string, int>(StringComparer.Ordinal);
        using (JsonDocument doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 4096 }))
        {
            foreach (JsonElement node in doc.RootElement.GetProperty("inner").EnumerateArray())
            {
                if (node.GetProperty("kind").GetString() != "EnumDecl"
                    || !node.TryGetProperty("inner", out JsonElement consts))
                    continue;
                foreach (JsonElement c in consts.EnumerateArray())
                {
                    string? name = c.TryGetProperty("name", out JsonElement n) ? n.GetString() : null;
                    if (name is null || !name.StartsWith(Prefix, StringComparison.Ordinal))
                        continue;
                    values[name] = FindValue(c) ?? throw new GeneratorException($"clang did not evaluate {name}");
                }
            }
        }

        for (int s = 0; s < model.Structs.Count; s++)
        {
            CStruct st = model.Structs[s];
            var offsets = new List<(string, int)>();
            for (int f = 0; f < st.Fields.Count; f++)
                offsets.Add((st.Fields[f].Name, Get(values, $"{Prefix}{s}_{f}")));
            model.Layouts.Add(new StructLayoutInfo(st.Name, Get(values, $"{Prefix}{s}_size"), offsets));
        }
    }

    private static int Get(Dictionary<string, int> values, string key) =>
        values.TryGetValue(key, out int v) ? v : throw new GeneratorException($"clang's layout probe lacks {key}");

    private static int? FindValue(JsonElement e)
    {
        if (e.TryGetProperty("kind", out JsonElement k) && k.GetString() == "ConstantExpr" &&
            e.TryGetProperty("value", out JsonElement v))
        {
            return int.Parse(v.GetString()!, CultureInfo.InvariantCulture);
        }
        if (e.TryGetProperty("inner", out JsonElement inner))
        {
            foreach (JsonElement child in inner.EnumerateArray())
            {
                if (FindValue(child) is int found)
                    return found;
            }
        }
        return null;
    }
}
