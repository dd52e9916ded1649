namespace MiniCPM4.Constraints.Json;

/// <summary>How <see cref="JsonSchemaCompiler"/> shapes the accepted JSON text.</summary>
public sealed record JsonSchemaOptions
{
    /// <summary>The most JSON whitespace bytes (space, tab, newline, carriage return) allowed before each lexeme
    /// (punctuation, string, number, literal); 0 = compact output only. The default, 1, accepts what
    /// <c>json.dumps</c> writes (", " and ": ") and keeps a model from padding its output with whitespace; raise it
    /// for pretty-printed JSON.</summary>
    public int MaxWhitespace { get; init; } = 1;

    /// <summary>
    /// Whether integers may also be written with a zero fraction (<c>5.0</c>), which JSON Schema counts as integers
    /// from
    /// draft 6 on. Off by default: generated integers are then plain (<c>5</c>), which every deserializer reads as an
    /// integer. Draft 4 schemas never accept them.
    /// </summary>
    public bool IntegralFloats { get; init; }

    /// <summary>
    /// Whether an object schema without <c>additionalProperties</c> allows properties it does not declare (the JSON
    /// Schema meaning, the default). False treats such schemas as closed (<c>additionalProperties: false</c>), which
    /// is stricter and keeps the model to the declared properties.
    /// </summary>
    public bool AllowUndeclaredProperties { get; init; } = true;

    /// <summary>
    /// Objects with at most this many declared properties accept them in any order (each at most once; a grammar
    /// state per set of properties written, so keep it small). Larger objects, and all objects at the default 0, take
    /// their declared properties in schema order. Undeclared properties always come after the declared ones.
    /// </summary>
    public int AnyOrderMaxProperties { get; init; }

    /// <summary>The most alternatives one schema may expand into (<c>anyOf</c> / <c>oneOf</c> distributed over the
    /// rest of the schema, pattern-property key regions) before compilation fails.</summary>
    public int MaxAlternatives { get; init; } = 256;

    /// <summary>The most branches all anyOf / oneOf / not / if / dependencies may expand into, together, before
    /// compilation fails (each branch is the rest of its schema with one alternative chosen).</summary>
    public int MaxBranches { get; init; } = 2_000;

    /// <summary>
    /// Instead of JSON, a Python call of this function with the root object's properties as keyword arguments, as
    /// MiniCPM4 writes tool calls: <c>name(city="Paris", days=3)</c>. Values are Python literals: JSON syntax, with
    /// <c>True</c>, <c>False</c> and <c>None</c> for true, false and null. The root schema must be an object schema
    /// whose property names are Python identifiers; undeclared properties are not written. null (default): JSON.
    /// </summary>
    public string? PythonCall { get; init; }

    /// <summary>The most nonterminals the grammar may have before compilation fails.</summary>
    public int MaxNonterminals { get; init; } = 100_000;
}
