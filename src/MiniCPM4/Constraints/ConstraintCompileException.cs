namespace MiniCPM4.Constraints;

/// <summary>
/// A constraint (JSON Schema, grammar, regular expression) that the engine cannot enforce exactly. Nothing is
/// accepted silently: whatever cannot be enforced fails here, when the constraint is compiled.
/// </summary>
public sealed class ConstraintCompileException : Exception
{
    public ConstraintCompileException(string message, string? keyword = null, string? pointer = null,
        Exception? inner = null)
        : base(Format(message, keyword, pointer), inner)
    {
        Keyword = keyword;
        Pointer = pointer;
    }

    /// <summary>The JSON Schema keyword (or grammar construct) at fault, when there is one.</summary>
    public string? Keyword { get; }
    /// <summary>Its JSON pointer in the schema (or line:column in a grammar), when there is one.</summary>
    public string? Pointer { get; }

    /// <summary>The constraint compiled but accepts no output at all.</summary>
    public bool Unsatisfiable { get; init; }

    private static string Format(string message, string? keyword, string? pointer)
    {
        if (keyword is null && pointer is null) return message;
        var where = keyword is null ? pointer : pointer is null ? $"'{keyword}'"
            : $"'{keyword}' at {(pointer.Length == 0 ? "#" : pointer)}";
        return $"{where}: {message}";
    }
}
