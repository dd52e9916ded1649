using System.Text.Json;
using MiniCPM4.Constraints.Grammars;
using MiniCPM4.Constraints.Regex;

namespace MiniCPM4.Constraints.Json;

/// <summary>
/// Compiles a JSON Schema into a <see cref="Grammar"/> whose language is a subset of the JSON texts the schema
/// accepts: whatever the grammar lets a model write is valid, and whatever cannot be enforced exactly fails here with
/// a <see cref="ConstraintCompileException"/> naming the keyword and its JSON pointer.
/// </summary>
/// <remarks>
/// <para>The accepted text is what Python's <c>json.dumps(value, ensure_ascii=False)</c> writes, with JSON
/// whitespace (up to <see cref="JsonSchemaOptions.MaxWhitespace"/> bytes) allowed before every lexeme, so compact
/// and pretty-printed output are accepted too. Strings use the one canonical escaping of
/// <see cref="CharEncoding.JsonStringContent"/>.</para>
/// <para>Objects: declared properties (<c>properties</c>, then required names declared nowhere) come in schema order
/// (or in any order for objects of at most <see cref="JsonSchemaOptions.AnyOrderMaxProperties"/> declared
/// properties), optional ones may be left out; properties the schema does not declare (allowed unless
/// <c>additionalProperties</c> says otherwise; absent means any value, as the specification says) come after the
/// declared ones, their keys different from every declared name, and their values valid under every
/// <c>patternProperties</c> they match, else under <c>additionalProperties</c>.</para>
/// <para>Numbers: bounded numbers are accepted in decimal notation only (no exponent), compared exactly (as decimals)
/// with the bounds; unbounded ones in any JSON number syntax. Integers are written without fraction or exponent, and
/// from draft 6 on (not draft 4, whose integers exclude 1.0) also as n.0.</para>
/// <para>Supported: type, enum, const, properties, required, additionalProperties, patternProperties,
/// min/maxProperties (when exact: at most one undeclared property needed), items (schema or tuple), prefixItems,
/// additionalItems, min/maxItems, uniqueItems (at most one item, or items from an enum of at most 10 values), minimum,
/// maximum, exclusiveMinimum/Maximum (both forms), multipleOf (positive integers dividing a power of ten: 1, 2, 5,
/// 10, 25, ...), minLength, maxLength, pattern, format (date, time, date-time, email, uuid, ipv4, ipv6, hostname, uri;
/// the other standard formats fail; unknown ones are annotations, as in Python's jsonschema), allOf (merged), anyOf
/// (distributed over the rest of the schema), oneOf (each alternative gets the negation of the others it is not
/// provably disjoint from), not (negated keyword by keyword: type, enum, const, required, properties, bounds,
/// lengths, pattern, counts, $ref, allOf, anyOf, not), if/then/else, dependencies / dependentRequired /
/// dependentSchemas, propertyNames (string schemas), $ref (JSON pointers with ~0 ~1 and %-escapes, $id, $anchor,
/// recursion; siblings ignored up to draft 7 as the drafts say). Other assertions (contains, unevaluated*,
/// non-trivial multipleOf, negated items/additionalProperties/patternProperties/oneOf, ...) fail. Unknown keywords
/// and annotations are ignored.</para>
/// </remarks>
public static class JsonSchemaCompiler
{
    /// <summary>Compiles the schema text <paramref name="schemaJson"/>.</summary>
    public static Grammar Compile(string schemaJson, JsonSchemaOptions? options = null)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(schemaJson, new JsonDocumentOptions { MaxDepth = 2048 });
        }
        catch (JsonException e)
        {
            throw new ConstraintCompileException("the schema is not JSON: " + e.Message, null, "", e);
        }
        using (doc) return Compile(doc.RootElement, options);
    }

    /// <summary>
    /// One call of any of <paramref name="functions"/>, each with its parameters schema as keyword arguments
    /// (<see cref="JsonSchemaOptions.PythonCall"/>): the grammar of a required tool call.
    /// </summary>
    public static Grammar CompilePythonCalls(IReadOnlyList<(string Name, JsonElement Parameters)> functions,
        JsonSchemaOptions? options = null)
    {
        if (functions.Count == 0) throw new ConstraintCompileException("no function to call");
        options ??= new JsonSchemaOptions();
        var g = new GrammarBuilder(new RegexBuilder());
        var calls = new List<Symbol>();
        foreach (var (name, parameters) in functions)
        {
            if (parameters.ValueKind is not (JsonValueKind.Object or JsonValueKind.True))
                throw new ConstraintCompileException($"the parameters of '{name}' are not a schema object", null, "");
            calls.Add(new SchemaCompiler(parameters, options with { PythonCall = name }, g).Emit());
        }
        return g.Build(g.Choice("call", calls.ToArray()));
    }

    /// <summary>Compiles the schema <paramref name="schema"/> (an object or a boolean).</summary>
    public static Grammar Compile(JsonElement schema, JsonSchemaOptions? options = null)
    {
        if (schema.ValueKind is not (JsonValueKind.Object or JsonValueKind.True or JsonValueKind.False))
            throw new ConstraintCompileException($"a schema is an object or a boolean, not {schema.ValueKind}", null,
                "");
        options ??= new JsonSchemaOptions();
        if (options.MaxWhitespace < 0) throw new ArgumentOutOfRangeException(nameof(options), "MaxWhitespace < 0");
        return new SchemaCompiler(schema, options).Run();
    }
}
