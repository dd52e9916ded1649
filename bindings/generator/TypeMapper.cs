namespace MiniCPM4.BindingsGenerator;

/// <summary>The C → C# type rules. Anything not covered here is an error, never a guess.</summary>
internal sealed class TypeMapper
{
    /// <summary>Fixed-size C types and their blittable C# equivalents.</summary>
    private static readonly Dictionary<string, string> Primitives = new(StringComparer.Ordinal)
    {
        ["int8_t"] = "sbyte",
        ["uint8_t"] = "byte",
        ["int16_t"] = "short",
        ["uint16_t"] = "ushort",
        ["int32_t"] = "int",
        ["uint32_t"] = "uint",
        ["int64_t"] = "long",
        ["uint64_t"] = "ulong",
        ["size_t"] = "nuint",
        ["intptr_t"] = "nint",
        ["uintptr_t"] = "nuint",
        ["float"] = "float",
        ["double"] = "double",
    };

    /// <summary>
    /// Opaque handle types and the SafeHandle classes (bindings/Interop/SafeHandles.cs) that stand for them.
    /// `T*` and `const T*` parameters become the SafeHandle, `T**` becomes `out` SafeHandle; the *_free
    /// functions take the raw handle as nint because SafeHandle.ReleaseHandle calls them.
    /// </summary>
    private static readonly Dictionary<string, string> HandleTypes = new(StringComparer.Ordinal)
    {
        ["mcpm_model"] = "ModelHandle",
        ["mcpm_session"] = "SessionHandle",
        ["mcpm_draft"] = "DraftHandle",
        ["mcpm_batcher"] = "BatcherHandle",
    };

    private readonly HeaderModel _model;

    public TypeMapper(HeaderModel model) => _model = model;

    public static bool IsFreeFunction(CFunction f) => f.Name.EndsWith("_free", StringComparison.Ordinal);

    private enum Kind { Void, Char, Primitive, Struct, Opaque, FunctionPointer }

    private (Kind Kind, string Name) ResolveBase(string baseName, string what, int depth = 0)
    {
        if (depth > 16)
            throw new GeneratorException($"{what}: typedef cycle at '{baseName}'");
        if (baseName.StartsWith("struct ", StringComparison.Ordinal))
            return ResolveRecord(baseName["struct ".Length..], what);
        if (baseName.StartsWith("union ", StringComparison.Ordinal)
            || baseName.StartsWith("enum ", StringComparison.Ordinal))
            throw new GeneratorException(
                $"{what}: '{baseName}' is not supported (only structs and fixed-size integers)");
        if (baseName == "void")
            return (Kind.Void, "void");
        if (baseName == "char")
            return (Kind.Char, "byte");
        if (Primitives.TryGetValue(baseName, out string? cs))
            return (Kind.Primitive, cs);
        if (_model.FunctionPointers.TryGetValue(baseName, out CFunctionPointer? fp))
            return (Kind.FunctionPointer, MapFunctionPointer(fp));
        if (_model.Typedefs.TryGetValue(baseName, out CType? alias))
        {
            if (alias.PointerDepth != 0)
                throw new GeneratorException(
                    $"{what}: pointer typedef '{baseName}' ({alias.Spelling}) is not supported");
            return ResolveBase(alias.BaseName, what, depth + 1);
        }
        throw new GeneratorException(
            $"{what}: unknown C type '{baseName}'. Platform-dependent types (int, long, char, bool) are not " +
            "allowed in the ABI; known types are " + string.Join(", ", Primitives.Keys.Order(StringComparer.Ordinal)) +
            ", the header's typedefs and structs");
    }

    private (Kind, string) ResolveRecord(string tag, string what)
    {
        if (_model.Structs.Exists(s => s.Name == tag))
            return (Kind.Struct, tag);
        if (_model.OpaqueRecords.Contains(tag))
            return (Kind.Opaque, tag);
        throw new GeneratorException($"{what}: struct '{tag}' is not declared in the header");
    }

    private static string Stars(int n) => new('*', n);

    /// <summary>
    /// A C function pointer as an unmanaged C# function pointer: <c>delegate* unmanaged[Cdecl]&lt;P1, P2, R&gt;</c>,
    /// the parameters mapped as struct fields are (pointers stay pointers, handles are nint).
    /// </summary>
    private string MapFunctionPointer(CFunctionPointer fp)
    {
        var types = new List<string>();
        for (int i = 0; i < fp.Parameters.Count; i++)
        {
            CType p = fp.Parameters[i];
            string what = $"parameter {i} of {fp.Name}";
            if (p.PointerDepth == 0 && _model.FunctionPointers.ContainsKey(p.BaseName))
                throw new GeneratorException($"{what}: a function pointer taking a function pointer is not supported");
            types.Add(MapField(p, what));
        }
        types.Add(MapReturn(fp.ReturnType, $"return type of {fp.Name}"));
        return "delegate* unmanaged[Cdecl]<" + string.Join(", ", types) + ">";
    }

    /// <summary>The C# declaration of a struct field without its name: a type, or "fixed T" for an array (the
    /// emitter appends "[N]" after the name).</summary>
    public string MapField(CType t, string what)
    {
        (Kind kind, string name) = ResolveBase(t.BaseName, what);
        if (t.ArrayLength is not null)
        {
            // C# fixed buffers hold primitive elements only; char arrays are UTF-8 text (byte).
            if (kind is Kind.Primitive or Kind.Char && name is not ("nint" or "nuint"))
                return "fixed " + name;
            throw new GeneratorException(
                $"{what}: an array of '{t.BaseName}' is not supported (only fixed-size integer, float and char " +
                $"arrays)");
        }
        switch (kind)
        {
            case Kind.Primitive when t.PointerDepth == 0:
            case Kind.Struct when t.PointerDepth == 0:
            case Kind.FunctionPointer when t.PointerDepth == 0:
                return name;
            case Kind.Primitive:
            case Kind.Struct:
            case Kind.Char:
            case Kind.Void:
                if (t.PointerDepth == 0)
                    break;
                return name + Stars(t.PointerDepth);
            // A handle stored in a struct is the raw pointer; the managed layer keeps its SafeHandle
            // alive (DangerousAddRef) for as long as the struct is in use.
            case Kind.Opaque when t.PointerDepth == 1:
                return "nint";
        }
        throw new GeneratorException($"{what}: type '{t.Spelling}' is not supported in a struct field");
    }

    public string MapReturn(CType t, string what)
    {
        (Kind kind, string name) = ResolveBase(t.BaseName, what);
        if (kind == Kind.Opaque)
            throw new GeneratorException(
                $"{what}: returning handle type '{t.Spelling}' is not supported (use an out-parameter)");
        if (kind == Kind.Void && t.PointerDepth == 0)
            return "void";
        if (kind == Kind.Char && t.PointerDepth == 0)
            throw new GeneratorException($"{what}: 'char' by value is not supported");
        if (kind == Kind.Struct && t.PointerDepth == 0)
            throw new GeneratorException($"{what}: returning a struct by value is not supported");
        if (kind == Kind.FunctionPointer)
            throw new GeneratorException($"{what}: returning a function pointer is not supported");
        // const char* results are owned by the library: byte*, never a marshalled (and freed) string.
        return name + Stars(t.PointerDepth);
    }

    public string MapParameter(CType t, CFunction function, string what)
    {
        (Kind kind, string name) = ResolveBase(t.BaseName, what);
        switch (kind)
        {
            case Kind.Opaque:
            {
                if (!HandleTypes.TryGetValue(name, out string? handle))
                    throw new GeneratorException(
                        $"{what}: opaque type '{name}' has no SafeHandle in TypeMapper.HandleTypes");
                if (IsFreeFunction(function) && t.PointerDepth == 1)
                    return "nint";
                if (t.PointerDepth == 1)
                    return handle;
                if (t.PointerDepth == 2 && !t.BaseIsConst && !IsFreeFunction(function))
                    return "out " + handle;
                throw new GeneratorException($"{what}: handle type '{t.Spelling}' is not supported");
            }
            case Kind.Char when t.PointerDepth == 1 && t.BaseIsConst:
                return "string";
            case Kind.FunctionPointer when t.PointerDepth == 0:
                return name;
            case Kind.FunctionPointer:
            case Kind.Void when t.PointerDepth == 0:
            case Kind.Char when t.PointerDepth == 0:
                throw new GeneratorException($"{what}: type '{t.Spelling}' is not supported as a parameter");
            default:
                return name + Stars(t.PointerDepth);
        }
    }
}
