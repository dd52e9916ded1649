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
/// <para>Objects: declared properties (<c>properties</c>, then required names declared nowhere) come in schema order,
/// optional ones may be left out; properties the schema does not declare (allowed unless
/// <c>additionalProperties</c> says otherwise) come after the declared ones, their keys different from every
/// declared name, and their values valid under the <c>patternProperties</c> they match, else under
/// <c>additionalProperties</c>.</para>
/// <para>Numbers: bounded numbers are accepted in decimal notation only (no exponent), compared exactly with the
/// bounds; unbounded ones in any JSON number syntax. Integers are written without fraction or exponent, and from
/// draft 6 on (not draft 4, whose integers exclude 1.0) also as n.0.</para>
/// <para>Supported: type, enum, const, properties, required, additionalProperties, patternProperties,
/// min/maxProperties (when exact), items (schema or tuple), prefixItems, additionalItems, min/maxItems, uniqueItems
/// (at most one item, or items from a small enum), minimum, maximum, exclusiveMinimum/Maximum (both forms),
/// multipleOf (integers: 1, or divisors of a power of ten), minLength, maxLength, pattern, format (date, time,
/// date-time, email, uuid, ipv4, ipv6, hostname, uri; other standard formats fail; unknown ones are annotations),
/// allOf (merged), anyOf, oneOf (when its alternatives are provably disjoint), $ref (pointers, $id, $anchor,
/// recursion). Other assertions (not, if/then/else, dependencies, contains, propertyNames, unevaluated*, ...)
/// fail. Unknown keywords and annotations are ignored.</para>
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

    /// <summary>Compiles the schema <paramref name="schema"/> (an object or a boolean).</summary>
    public static Grammar Compile(JsonElement schema, JsonSchemaOptions? options = null)
    {
        if (schema.ValueKind is not (JsonValueKind.Object or JsonValueKind.True or JsonValueKind.False))
            throw new ConstraintCompileException($"a schema is an object or a boolean, not {schema.ValueKind}", null, "");
        options ??= new JsonSchemaOptions();
        if (options.MaxWhitespace < 0) throw new ArgumentOutOfRangeException(nameof(options), "MaxWhitespace < 0");
        return new SchemaCompiler(schema, options).Run();
    }
}
