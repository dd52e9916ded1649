namespace MiniCPM4.BindingsGenerator;

/// <summary>
/// A C type as spelled in the header: a base name, whether the base is const, a pointer depth, and for a
/// fixed-size array field (<c>char name[256]</c>) its element count.
/// </summary>
internal sealed record CType(string BaseName, bool BaseIsConst, int PointerDepth, string Spelling,
    int? ArrayLength = null)
{
    public override string ToString() => Spelling;
}

/// <summary>A typedef of a pointer to a (cdecl, non-variadic) C function: <c>typedef R (*name)(P1, P2);</c></summary>
internal sealed record CFunctionPointer(string Name, CType ReturnType, IReadOnlyList<CType> Parameters);

internal sealed record CField(string Name, CType Type, string? Doc);

internal sealed record CStruct(string Name, IReadOnlyList<CField> Fields, string? Doc);

internal sealed record CParameter(string Name, CType Type);

internal sealed record CFunction(string Name, CType ReturnType, IReadOnlyList<CParameter> Parameters, string? Doc);

/// <summary>An integer #define: its C# type keyword ("int", "uint", "long", "ulong") and literal.</summary>
internal sealed record CMacro(string Name, string CSharpType, string Literal, string? Doc);

/// <summary>Size of a struct and offsets of its fields as computed by clang for the host target.</summary>
internal sealed record StructLayoutInfo(string Name, int Size, IReadOnlyList<(string Field, int Offset)> Offsets);

/// <summary>Everything the emitter needs, in header order.</summary>
internal sealed class HeaderModel
{
    /// <summary>typedef name -> the C type it aliases (only typedefs declared in the header).</summary>
    public Dictionary<string, CType> Typedefs { get; } = new(StringComparer.Ordinal);

    /// <summary>Function-pointer typedef name -> its signature (callbacks the host passes to the library).</summary>
    public Dictionary<string, CFunctionPointer> FunctionPointers { get; } = new(StringComparer.Ordinal);

    /// <summary>Struct tags/typedef names that are declared without a definition (opaque handles).</summary>
    public HashSet<string> OpaqueRecords { get; } = new(StringComparer.Ordinal);

    public List<CStruct> Structs { get; } = new();
    public List<CFunction> Functions { get; } = new();
    public List<CMacro> Macros { get; } = new();
    public List<StructLayoutInfo> Layouts { get; } = new();
}

/// <summary>Thrown for anything the generator does not understand; Program turns it into exit code 1.</summary>
internal sealed class GeneratorException(string message) : Exception(message);
