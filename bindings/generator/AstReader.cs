using System.Text.Json;

namespace MiniCPM4.BindingsGenerator;

/// <summary>
/// Reads clang's JSON AST of the header and collects the declarations located in it.
/// </summary>
/// <remarks>
/// clang's JSON dumper writes "file" (and "line") only when it differs from the previously written
/// location, so the file of a declaration is known only by replaying every location in document order.
/// "includedFrom" objects do not change that state and are skipped.
/// </remarks>
internal sealed class AstReader
{
    private readonly string _headerFullPath;
    private readonly string _clangWorkingDirectory;
    private readonly HeaderText _header;
    private string? _currentFile;

    public AstReader(string headerFullPath, string clangWorkingDirectory, HeaderText header)
    {
        _headerFullPath = headerFullPath;
        _clangWorkingDirectory = clangWorkingDirectory;
        _header = header;
    }

    public void Read(string astJson, HeaderModel model)
    {
        using JsonDocument doc = JsonDocument.Parse(astJson, new JsonDocumentOptions { MaxDepth = 4096 });
        JsonElement root = doc.RootElement;
        if (root.GetProperty("kind").GetString() != "TranslationUnitDecl" ||
            !root.TryGetProperty("inner", out JsonElement inner))
        {
            throw new GeneratorException("clang's JSON AST has no TranslationUnitDecl with declarations");
        }

        var pending = new List<JsonElement>();
        foreach (JsonElement node in inner.EnumerateArray())
        {
            bool inHeader = false;
            foreach (JsonProperty p in node.EnumerateObject())
            {
                if (p.Value.ValueKind is JsonValueKind.Object or JsonValueKind.Array)
                    Replay(p.Value, p.Name);
                if (p.NameEquals("loc"))
                    inHeader = IsHeader(_currentFile);
            }
            if (inHeader && !(node.TryGetProperty("isImplicit", out JsonElement imp) && imp.GetBoolean()))
                pending.Add(node);
        }

        // Typedefs and records first (functions refer to them), all in header order.
        var seenFunctions = new HashSet<string>(StringComparer.Ordinal);
        foreach (JsonElement node in pending)
        {
            string kind = node.GetProperty("kind").GetString()!;
            switch (kind)
            {
                case "TypedefDecl":
                    ReadTypedef(node, model);
                    break;
                case "RecordDecl":
                    ReadRecord(node, model);
                    break;
                case "FunctionDecl":
                    CFunction f = ReadFunction(node);
                    if (seenFunctions.Add(f.Name))
                        model.Functions.Add(f);
                    break;
                default:
                    throw new GeneratorException(
                        $"unsupported declaration kind {kind} ('{Name(node)}') at offset {Offset(node)} of the " +
                            $"header; " +
                        "teach bindings/generator about it");
            }
        }
    }

    private bool IsHeader(string? file)
    {
        if (file is null)
            return false;
        string full = Path.GetFullPath(Path.Combine(_clangWorkingDirectory, file));
        return string.Equals(full, _headerFullPath, StringComparison.Ordinal);
    }

    /// <summary>Walks a JSON value in document order and updates the current file from location objects.</summary>
    private void Replay(JsonElement e, string propertyName)
    {
        if (propertyName == "includedFrom")
            return;
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (JsonProperty p in e.EnumerateObject())
                {
                    if (p.NameEquals("file") && p.Value.ValueKind == JsonValueKind.String)
                        _currentFile = p.Value.GetString();
                    else if (p.Value.ValueKind is JsonValueKind.Object or JsonValueKind.Array)
                        Replay(p.Value, p.Name);
                }
                break;
            case JsonValueKind.Array:
                foreach (JsonElement item in e.EnumerateArray())
                    Replay(item, propertyName);
                break;
        }
    }

    private static string Name(JsonElement node) =>
        node.TryGetProperty("name", out JsonElement n) ? n.GetString() ?? "" : "";

    private static string QualType(JsonElement node, string what)
    {
        if (node.TryGetProperty("type", out JsonElement t) && t.TryGetProperty("qualType", out JsonElement q))
            return q.GetString()!;
        throw new GeneratorException($"{what} has no type in clang's AST");
    }

    /// <summary>Byte offset of a location object in the header (the expansion point for macro locations).</summary>
    private static int LocOffset(JsonElement loc)
    {
        if (loc.TryGetProperty("expansionLoc", out JsonElement exp))
            return LocOffset(exp);
        return loc.TryGetProperty("offset", out JsonElement o) ? o.GetInt32() : -1;
    }

    private static int Offset(JsonElement node) =>
        node.TryGetProperty("loc", out JsonElement loc) ? LocOffset(loc) : -1;

    private static int BeginOffset(JsonElement node) =>
        node.TryGetProperty("range", out JsonElement r) && r.TryGetProperty("begin", out JsonElement b)
            ? LocOffset(b)
            : Offset(node);

    private static void Reject(JsonElement node, string property, string what)
    {
        if (node.TryGetProperty(property, out JsonElement v) && v.ValueKind == JsonValueKind.True)
            throw new GeneratorException($"{what} is {property}, which bindings/generator does not support");
    }

    private static void ReadTypedef(JsonElement node, HeaderModel model)
    {
        string name = Name(node);
        string what = $"typedef {name}";
        string spelling = QualType(node, what);
        if (spelling.Contains("(*)", StringComparison.Ordinal))
        {
            model.FunctionPointers[name] = ReadFunctionPointer(node, name, spelling);
            return;
        }
        CType aliased = CTypeParser.Parse(spelling, what);
        model.Typedefs[name] = aliased;
    }

    /// <summary>
    /// <c>typedef R (*name)(P1, P2)</c>: clang spells it "R (*)(P1, P2)", and its AST is PointerType →
    /// ParenType → FunctionProtoType, which says the calling convention and whether it is variadic.
    /// </summary>
    private static CFunctionPointer ReadFunctionPointer(JsonElement node, string name, string spelling)
    {
        string what = $"typedef {name}";
        JsonElement? proto = FindFunctionProto(node);
        if (proto is not JsonElement fn)
            throw new GeneratorException($"{what}: '{spelling}' is not a pointer to a function prototype");
        Reject(fn, "variadic", what);
        string cc = fn.TryGetProperty("cc", out JsonElement c) ? c.GetString() ?? "" : "";
        if (cc != "cdecl")
            throw new GeneratorException(
                $"{what}: calling convention '{cc}' is not supported (only the platform's C convention)");

        int star = spelling.IndexOf("(*)", StringComparison.Ordinal);
        string rest = spelling[(star + 3)..].Trim();
        if (!rest.StartsWith('(') || !rest.EndsWith(')') || rest.IndexOf('(', 1) >= 0)
            throw new GeneratorException($"{what}: unsupported function pointer type '{spelling}'");
        CType ret = CTypeParser.Parse(spelling[..star].Trim(), $"return type of {what}");
        string list = rest[1..^1].Trim();
        var parameters = new List<CType>();
        if (list != "void")
        {
            foreach (string p in list.Split(','))
                parameters.Add(CTypeParser.Parse(p.Trim(), $"parameter {parameters.Count} of {what}"));
        }
        return new CFunctionPointer(name, ret, parameters);
    }

    private static JsonElement? FindFunctionProto(JsonElement node)
    {
        for (JsonElement e = node; e.TryGetProperty("inner", out JsonElement inner) && inner.GetArrayLength() > 0;)
        {
            e = inner[0];
            string kind = e.GetProperty("kind").GetString()!;
            if (kind == "FunctionProtoType")
                return e;
            if (kind is not ("PointerType" or "ParenType"))
                return null;
        }
        return null;
    }

    private void ReadRecord(JsonElement node, HeaderModel model)
    {
        string name = Name(node);
        string tag = node.TryGetProperty("tagUsed", out JsonElement t) ? t.GetString()! : "?";
        if (tag != "struct")
            throw new GeneratorException($"'{tag} {name}': only structs are supported");
        if (name.Length == 0)
            throw new GeneratorException($"anonymous struct at offset {Offset(node)}: give it a tag");

        bool complete = node.TryGetProperty("completeDefinition", out JsonElement c) && c.GetBoolean();
        if (!complete)
        {
            if (!model.Structs.Exists(s => s.Name == name))
                model.OpaqueRecords.Add(name);
            return;
        }
        if (model.Structs.Exists(s => s.Name == name))
            throw new GeneratorException($"struct {name} is defined twice");
        model.OpaqueRecords.Remove(name);

        var fields = new List<CField>();
        if (node.TryGetProperty("inner", out JsonElement inner))
        {
            foreach (JsonElement child in inner.EnumerateArray())
            {
                string kind = child.GetProperty("kind").GetString()!;
                if (kind != "FieldDecl")
                    throw new GeneratorException($"struct {name} contains a {kind}; only plain fields are supported");
                string fieldName = Name(child);
                string what = $"field {name}.{fieldName}";
                if (fieldName.Length == 0)
                    throw new GeneratorException($"struct {name} has an unnamed field");
                Reject(child, "isBitfield", what);
                CType type = CTypeParser.ParseField(QualType(child, what), what);
                fields.Add(new CField(fieldName, type, _header.TrailingComment(Offset(child))));
            }
        }
        if (fields.Count == 0)
            throw new GeneratorException($"struct {name} has no fields");
        model.Structs.Add(
            new CStruct(name, fields, _header.PrecedingComment(BeginOffset(node), skipTypedefKeyword: true)));
    }

    private CFunction ReadFunction(JsonElement node)
    {
        string name = Name(node);
        string what = $"function {name}";
        Reject(node, "variadic", what);
        Reject(node, "inline", what);
        if (node.TryGetProperty("storageClass", out JsonElement sc) && sc.GetString() is string s && s != "extern")
            throw new GeneratorException($"{what} has storage class '{s}'; only exported functions can be bound");

        var parameters = new List<CParameter>();
        if (node.TryGetProperty("inner", out JsonElement inner))
        {
            foreach (JsonElement child in inner.EnumerateArray())
            {
                string kind = child.GetProperty("kind").GetString()!;
                if (kind != "ParmVarDecl")
                    continue; // attributes such as VisibilityAttr
                string pname = Name(child);
                if (pname.Length == 0)
                    pname = "arg" + parameters.Count;
                string pwhat = $"parameter '{pname}' of {name}";
                parameters.Add(new CParameter(pname, CTypeParser.Parse(QualType(child, pwhat), pwhat)));
            }
        }

        // The return type is the part of "R (P1, P2)" before the parameter list; the reassembled
        // spelling must match clang's (up to blanks), which rules out anything unusual (e.g. returning a
        // function pointer).
        string fnType = QualType(node, what);
        int paren = fnType.IndexOf('(');
        string retSpelling = paren > 0 ? fnType[..paren].Trim() : "";
        string expected = retSpelling + " (" +
            (parameters.Count == 0 ? "void" : string.Join(", ", parameters.Select(p => p.Type.Spelling))) + ")";
        if (paren <= 0 || expected.Replace(" ", "") != fnType.Replace(" ", ""))
            throw new GeneratorException($"{what} has an unsupported type '{fnType}'");
        CType ret = CTypeParser.Parse(retSpelling, $"return type of {name}");

        return new CFunction(name, ret, parameters,
            _header.PrecedingComment(BeginOffset(node), skipTypedefKeyword: false));
    }
}

/// <summary>Parses clang's spelling of a non-function, non-array C type ("const mcpm_model_config *").</summary>
internal static class CTypeParser
{
    /// <summary>
    /// A struct field's type: what <see cref="Parse"/> accepts, or a one-dimensional array of a non-pointer
    /// element with a decimal length ("char[256]"), bound as a C# fixed buffer.
    /// </summary>
    public static CType ParseField(string spelling, string what)
    {
        int open = spelling.IndexOf('[');
        if (open < 0)
            return Parse(spelling, what);
        string length = spelling[(open + 1)..].TrimEnd();
        if (!length.EndsWith(']') || !int.TryParse(length[..^1], System.Globalization.NumberStyles.None,
                System.Globalization.CultureInfo.InvariantCulture, out int n) || n <= 0)
            throw new GeneratorException(
                $"{what}: unsupported array type '{spelling}' (only T name[N] with a decimal N > 0)");
        CType element = Parse(spelling[..open].TrimEnd(), what);
        if (element.PointerDepth != 0)
            throw new GeneratorException($"{what}: arrays of pointers ('{spelling}') are not supported");
        return element with { Spelling = spelling, ArrayLength = n };
    }

    public static CType Parse(string spelling, string what)
    {
        if (spelling.IndexOfAny(['(', '[', '<', '&']) >= 0)
            throw new GeneratorException(
                $"{what}: unsupported type '{spelling}' (function pointers and arrays are not supported)");

        bool baseConst = false;
        int depth = 0;
        var baseParts = new List<string>();
        foreach (string token in spelling.Replace("*", " * ").Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            switch (token)
            {
                case "*":
                    depth++;
                    break;
                case "const":
                    if (depth == 0)
                        baseConst = true; // const applying to a pointer itself does not change the binding
                    break;
                case "restrict":
                case "__restrict":
                    break;
                case "volatile":
                case "_Atomic":
                    throw new GeneratorException($"{what}: unsupported qualifier in '{spelling}'");
                default:
                    if (depth > 0)
                        throw new GeneratorException($"{what}: cannot parse type '{spelling}'");
                    baseParts.Add(token);
                    break;
            }
        }
        if (baseParts.Count == 0)
            throw new GeneratorException($"{what}: cannot parse type '{spelling}'");
        return new CType(string.Join(' ', baseParts), baseConst, depth, spelling);
    }
}
