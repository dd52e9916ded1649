using System.Text;
using MiniCPM4.Constraints.Grammars;
using MiniCPM4.Constraints.Json;
using NUnit.Framework;

namespace MiniCPM4.Constraints.Tests.Json;

public class JsonSchemaCompilerTests
{
    private static bool Accepts(Grammar g, string text) => GrammarMatcher.Accepts(g, Encoding.UTF8.GetBytes(text));

    // Pretty-printed output needs more than the default one whitespace byte between lexemes.
    private static readonly JsonSchemaOptions Pretty = new() { MaxWhitespace = 20 };

    private static void AssertLanguage(string schema, string[] accepted, string[] rejected,
        JsonSchemaOptions? options = null)
    {
        var g = JsonSchemaCompiler.Compile(schema, options);
        using (Assert.EnterMultipleScope())
        {
            foreach (var s in accepted) Assert.That(Accepts(g, s), Is.True, $"{schema} should accept {s}");
            foreach (var s in rejected) Assert.That(Accepts(g, s), Is.False, $"{schema} should reject {s}");
        }
    }

    private static void AssertError(string schema, string keyword, string pointer)
    {
        var ex = Assert.Throws<ConstraintCompileException>(() => JsonSchemaCompiler.Compile(schema))!;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(ex.Keyword, Is.EqualTo(keyword), ex.Message);
            Assert.That(ex.Pointer, Is.EqualTo(pointer), ex.Message);
        }
    }

    [Test]
    public void EmptySchemaAcceptsAnyJson() =>
        AssertLanguage("{}",
            ["1", "-2.5e3", "\"x\"", "null", "true", "[]", "{}", "{\"a\": [1, {\"b\": null}]}", "[1,2,3]",
                "{\n  \"a\": 1\n}"],
            ["", "{", "[1,]", "{\"a\" 1}", "01", "nul", "\"\\x\"", "'a'"], Pretty);

    [Test]
    public void TrueAndFalse()
    {
        AssertLanguage("true", ["1", "{}"], ["x"]);
        AssertLanguage("false", [], ["1", "{}", "null"]);
    }

    [Test]
    public void Types() =>
        AssertLanguage("""{"type": ["string", "null", "boolean"]}""",
            ["\"a\"", "null", "true", "false", "\"\\\"\\\\\\n\""],
            ["1", "[]", "{}", "\"\\u000a\"", "\"\\/\""]);

    [Test]
    public void IntegerAcceptsPointZeroFromDraft6Only()
    {
        var floats = new JsonSchemaOptions { IntegralFloats = true };
        AssertLanguage("""{"type": "integer"}""", ["0", "-7", "12", "3.0", "3.00"], ["1.5", "01", "-", "1e2", "\"1\""],
            floats);
        AssertLanguage("""{"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"}""", ["0", "-7"],
            ["3.0"], floats);
        // By default generated integers are plain.
        AssertLanguage("""{"type": "integer"}""", ["0", "-7", "12"], ["3.0", "3.00", "1.5"]);
    }

    [Test]
    public void NumberRanges()
    {
        AssertLanguage("""{"type": "number", "minimum": -1.5, "exclusiveMaximum": 10}""",
            ["-1.5", "-1.50", "-1", "0", "-0", "9.999", "9", "5.25"],
            ["-1.51", "-2", "10", "10.0", "11", "100", "1e0"]);
        AssertLanguage("""{"type": "integer", "exclusiveMinimum": 0, "maximum": 100}""",
            ["1", "50", "100", "99"], ["0", "-0", "101", "1000", "-5"]);
        AssertLanguage("""{"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer", "minimum": 5, "exclusiveMinimum": true}""",
            ["6", "60"], ["5", "4"]);
        AssertLanguage("""{"type": "number"}""", ["1e5", "-2.5E-3", "0.0"], ["1.", ".5", "+1"]);
    }

    [Test]
    public void StringKeywords()
    {
        AssertLanguage("""{"type": "string", "minLength": 2, "maxLength": 3}""",
            ["\"ab\"", "\"abc\"", "\"é😀\"", "\"\\n\\t\""], ["\"a\"", "\"abcd\"", "\"\""]);
        AssertLanguage("""{"type": "string", "pattern": "^[a-z]+\\d$"}""", ["\"ab1\""], ["\"ab\"", "\"1\"", "\"Ab1\""]);
        AssertLanguage("""{"type": "string", "pattern": "\\d"}""", ["\"ab1x\""], ["\"ab\""]);
        AssertLanguage("""{"type": "string", "format": "date"}""", ["\"2024-02-29\""], ["\"2023-02-29\"", "\"x\""]);
        AssertLanguage("""{"type": "string", "format": "my-custom"}""", ["\"anything\""], ["1"]);
    }

    [Test]
    public void EnumAndConst()
    {
        AssertLanguage("""{"enum": ["a", 1, null, [1, "x"], {"k": true}]}""",
            ["\"a\"", "1", "1.0", "null", "[1, \"x\"]", "{\"k\": true}", "{ \"k\" : true }"],
            ["\"b\"", "2", "true", "[1]", "{\"k\": false}"]);
        AssertLanguage("""{"const": 2.5}""", ["2.5", "2.50"], ["2.4", "2"]);
        AssertLanguage("""{"type": "string", "enum": ["a", 1, "bb"], "maxLength": 1}""", ["\"a\""], ["1", "\"bb\""]);
    }

    [Test]
    public void ObjectsInSchemaOrder()
    {
        const string schema = """
            {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
             "required": ["b"], "additionalProperties": false}
            """;
        AssertLanguage(schema,
            ["{\"b\": \"x\"}", "{\"a\": 1, \"b\": \"x\"}", "{\"a\": 1, \"b\": \"x\", \"c\": true}",
                "{\"b\":\"x\",\"c\":false}",
             "{\n  \"a\": 1,\n  \"b\": \"x\"\n}"],
            ["{}", "{\"a\": 1}", "{\"b\": \"x\", \"a\": 1}", "{\"b\": \"x\", \"d\": 1}", "{\"b\": 1}",
                "{\"b\": \"x\",}",
             "{, \"b\": \"x\"}"], Pretty);
    }

    [Test]
    public void AnyOrderForSmallObjects()
    {
        const string schema = """
            {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {}},
             "required": ["a", "b"], "maxProperties": 3}
            """;
        var options = new JsonSchemaOptions { AnyOrderMaxProperties = 4 };
        AssertLanguage(schema,
            ["{\"a\": 1, \"b\": \"x\"}", "{\"b\": \"x\", \"a\": 1}", "{\"c\": null, \"b\": \"x\", \"a\": 1}",
             "{\"b\": \"x\", \"a\": 1, \"z\": 0}"],
            ["{\"a\": 1}", "{\"a\": 1, \"a\": 2, \"b\": \"x\"}", "{\"b\": \"x\", \"a\": 1, \"c\": 0, \"z\": 0}",
             "{\"z\": 0, \"b\": \"x\", \"a\": 1}"], options);
        AssertLanguage(schema, ["{\"a\": 1, \"b\": \"x\"}"], ["{\"b\": \"x\", \"a\": 1}"]);
    }

    [Test]
    public void AdditionalAndPatternProperties()
    {
        AssertLanguage("""{"type": "object", "properties": {"a": {"type": "integer"}}}""",
            ["{}", "{\"a\": 1, \"z\": [1]}", "{\"z\": \"q\", \"y\": null}"],
            ["{\"z\": 1, \"a\": 1}", "{\"a\": \"s\"}"]);
        AssertLanguage("""
            {"type": "object", "properties": {"x_1": {"type": "integer", "minimum": 0}},
             "patternProperties": {"^x_": {"type": "integer"}, "^s": {"type": "string"}},
             "additionalProperties": {"type": "boolean"}}
            """,
            ["{\"x_1\": 3, \"x_2\": -4, \"sa\": \"v\", \"other\": true}"],
            ["{\"x_1\": -3}", "{\"x_2\": \"s\"}", "{\"sa\": 1}", "{\"other\": 1}", "{\"x_1\": 1.5}"]);
        // A key matching two patterns must satisfy both.
        AssertLanguage(
            """{"patternProperties": {"a": {"type": "integer"}, "b": {"minimum": 5}}, "additionalProperties": false}""",
            ["{\"ab\": 7}", "{\"a\": 1}", "{\"b\": \"s\"}"], ["{\"ab\": 1}", "{\"ab\": 7.5}", "{\"c\": 1}"]);
    }

    [Test]
    public void MinAndMaxProperties()
    {
        AssertLanguage("""{"type": "object", "minProperties": 1, "maxProperties": 2, "properties": {"a": {}}}""",
            ["{\"a\": 1}", "{\"b\": 1}", "{\"a\": 1, \"b\": 2}", "{\"b\": 1, \"c\": 2}"],
            ["{}", "{\"a\": 1, \"b\": 2, \"c\": 3}"]);
        AssertError("""{"type": "object", "minProperties": 2}""", "minProperties", "");
    }

    [Test]
    public void Arrays()
    {
        AssertLanguage("""{"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}""",
            ["[1]", "[1, 2, 3]", "[ 1 ,2 ]"], ["[]", "[1, 2, 3, 4]", "[\"a\"]", "[1,]"]);
        AssertLanguage(
            """{"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}""",
            ["[]", "[\"a\"]", "[\"a\", 1]"], ["[1]", "[\"a\", 1, 2]"]);
        AssertLanguage("""{"type": "array", "items": [{"type": "string"}], "additionalItems": {"type": "boolean"}}""",
            ["[\"a\", true, false]"], ["[\"a\", 1]"]);
        AssertLanguage("""{"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": true}""",
            ["[]", "[\"a\", \"c\"]", "[\"c\", \"b\", \"a\"]"], ["[\"a\", \"a\"]", "[\"a\", \"b\", \"a\"]"]);
        AssertError("""{"type": "array", "uniqueItems": true}""", "uniqueItems", "");
    }

    [Test]
    public void RefsAndRecursion()
    {
        const string schema = """
            {"$ref": "#/$defs/node",
             "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                       "required": ["v"], "additionalProperties": false},
                       "a~b/c d": {"type": "string"}}}
            """;
        AssertLanguage(schema,
            ["{\"v\": 1}", "{\"v\": 1, \"kids\": [{\"v\": 2, \"kids\": []}, {\"v\": 3}]}"],
            ["{\"v\": 1, \"kids\": [{}]}", "{}"]);
        AssertLanguage("""{"properties": {"x": {"$ref": "#/definitions/a~0b~1c%20d"}}, "definitions": {"a~b/c d": {"type": "string"}}}""",
            ["{\"x\": \"s\"}"], ["{\"x\": 1}"]);
        AssertLanguage("""
            {"$id": "https://example.com/root.json", "properties": {"x": {"$ref": "item.json"}},
             "$defs": {"i": {"$id": "item.json", "type": "integer"}, "n": {"$anchor": "name", "type": "null"}},
             "additionalProperties": {"$ref": "#name"}}
            """,
            ["{\"x\": 1, \"y\": null}"], ["{\"x\": \"s\"}", "{\"y\": 1}"]);
        AssertError("""{"$ref": "https://elsewhere.example/x.json"}""", "$ref", "");
    }

    [Test]
    public void AllOfMerges() =>
        AssertLanguage("""
            {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                       {"properties": {"a": {"minimum": 3}, "b": {"type": "string"}}, "required": ["b"]}]}
            """,
            ["{\"a\": 3, \"b\": \"x\"}", "{\"a\": 4, \"b\": \"x\", \"c\": 0}"],
            ["{\"a\": 2, \"b\": \"x\"}", "{\"a\": 3}", "{\"b\": \"x\"}"]);

    [Test]
    public void AnyOfAndOneOf()
    {
        AssertLanguage(
            """{"anyOf": [{"type": "integer", "maximum": 5}, {"type": "integer", "minimum": 3}, {"type": "string"}]}""",
            ["1", "4", "100", "\"s\""], ["null", "1.5"]);
        AssertLanguage("""
            {"oneOf": [{"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}}, "required": ["kind"]},
                       {"type": "object", "properties": {"kind": {"const": "b"}}, "required": ["kind"]}]}
            """,
            ["{\"kind\": \"a\", \"x\": 1}", "{\"kind\": \"b\", \"x\": \"s\"}"],
                ["{\"kind\": \"c\"}", "{\"kind\": \"a\", \"x\": \"s\"}"]);
        AssertLanguage("""{"type": "object", "properties": {"v": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}}""",
            ["{\"v\": \"a\"}", "{\"v\": [\"a\"]}"], ["{\"v\": 1}"]);
        // Overlapping alternatives: each gets the negation of the others (exactly one holds).
        AssertLanguage("""{"oneOf": [{"type": "integer"}, {"minimum": 3}]}""",
            ["1", "-5", "3.5", "\"s\"", "null"], ["3", "4", "100", "3.0", "2.5"]);
        AssertLanguage("""{"not": {"type": "integer"}, "minimum": 0}""", ["0.5", "1.25", "\"s\""],
            ["1", "1.0", "0", "-0.5"]);
        AssertLanguage("""{"type": "object", "oneOf": [{"required": ["a"]}, {"required": ["b"]}]}""",
            ["{\"a\": 1}", "{\"b\": 1}", "{\"a\": 2, \"x\": 1}"],
                ["{}", "{\"a\": 1, \"b\": 2}", "{\"b\": 1, \"a\": 2}"]);
        AssertError("""{"oneOf": [{"type": "integer"}, {"multipleOf": 3}]}""", "oneOf", "");
    }

    [Test]
    public void UnsupportedKeywordsFailWithPointer()
    {
        AssertError("""{"properties": {"a": {"not": {"multipleOf": 3}}}}""", "not", "/properties/a/not");
        AssertError("""{"type": "array", "not": {"items": {"type": "string"}}}""", "not", "/not");
        AssertError("""{"type": "object", "unevaluatedProperties": false}""", "unevaluatedProperties", "");
        AssertError("""{"if": {"not": {"multipleOf": 2}}, "then": {"minLength": 1}}""", "not", "/if/not");
        AssertError("""{"type": "array", "contains": {"type": "string"}}""", "contains", "");
        AssertError("""{"type": "integer", "multipleOf": 3}""", "multipleOf", "");
        AssertError("""{"type": "string", "format": "uri-reference"}""", "format", "");
        AssertError("""{"type": "bogus"}""", "type", "");
    }

    [Test]
    public void Not()
    {
        AssertLanguage("""{"not": {"type": "string"}}""", ["1", "null", "[]"], ["\"s\""]);
        AssertLanguage("""{"type": "string", "not": {"enum": ["a", "b"]}}""", ["\"c\"", "\"ab\""], ["\"a\"", "\"b\""]);
        AssertLanguage("""{"type": "integer", "not": {"const": 3}}""", ["2", "4"], ["3", "3.0"]);
        AssertLanguage("""{"not": {"pattern": "^a"}}""", ["\"ba\""], ["\"ab\"", "1"]);
        AssertLanguage("""{"type": "number", "not": {"minimum": 2}}""", ["1.5", "-3"], ["2", "7"]);
        AssertLanguage("""{"not": {"not": {"type": "null"}}}""", ["null"], ["1"]);
        AssertLanguage("""{"type": "object", "properties": {"a": {}}, "not": {"required": ["a"]}}""",
            ["{}", "{\"b\": 1}"], ["{\"a\": 1}"]);
        AssertLanguage("""{"type": "object", "not": {"properties": {"k": {"const": 1}}}}""", ["{\"k\": 2}"],
            ["{}", "{\"k\": 1}"]);
        AssertLanguage("""{"not": {}}""", [], ["1", "null"]);
    }

    [Test]
    public void IfThenElseAndDependencies()
    {
        AssertLanguage("""
            {"type": "object", "properties": {"kind": {"enum": ["a", "b"]}, "x": {}},
             "if": {"properties": {"kind": {"const": "a"}}}, "then": {"required": ["x"]}, "else": {"not": {"required": ["x"]}}}
            """,
            ["{\"kind\": \"a\", \"x\": 1}", "{\"kind\": \"b\"}", "{\"x\": 1}"],
            ["{\"kind\": \"a\"}", "{\"kind\": \"b\", \"x\": 1}", "{}"]);
        AssertLanguage("""{"type": "object", "properties": {"a": {}, "b": {}}, "dependencies": {"a": ["b"]}}""",
            ["{}", "{\"b\": 1}", "{\"a\": 1, \"b\": 2}"], ["{\"a\": 1}"]);
        AssertLanguage("""{"type": "object", "properties": {"a": {}}, "dependentSchemas": {"a": {"properties": {"b": {"type": "string"}}, "required": ["b"]}}}""",
            ["{}", "{\"a\": 1, \"b\": \"s\"}"], ["{\"a\": 1}", "{\"a\": 1, \"b\": 2}"]);
    }

    [Test]
    public void PropertyNames() =>
        AssertLanguage("""{"type": "object", "properties": {"Ab": {}}, "propertyNames": {"pattern": "^[a-z]+$", "maxLength": 3}}""",
            ["{}", "{\"abc\": 1}"], ["{\"Ab\": 1}", "{\"abcd\": 1}", "{\"a1\": 1}"]);

    [Test]
    public void RefSiblingsIgnoredUpToDraft7()
    {
        AssertLanguage("""
            {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"o": {"type": "object"}},
             "properties": {"a": {"type": "string", "$ref": "#/definitions/o"}}}
            """, ["{\"a\": {}}"], ["{\"a\": \"s\"}"]);
        AssertLanguage("""
            {"$defs": {"o": {"type": "object"}}, "properties": {"a": {"maxProperties": 0, "$ref": "#/$defs/o"}}}
            """, ["{\"a\": {}}"], ["{\"a\": {\"x\": 1}}", "{\"a\": 1}"]);
    }

    [Test]
    public void BadSchemas()
    {
        Assert.Throws<ConstraintCompileException>(() => JsonSchemaCompiler.Compile("{"));
        Assert.Throws<ConstraintCompileException>(() => JsonSchemaCompiler.Compile("[1]"));
        Assert.Throws<ConstraintCompileException>(() => JsonSchemaCompiler.Compile("{\"properties\": {\"a\": 3}}"));
    }

    [Test]
    public void MultipleOf() =>
        AssertLanguage("""{"type": "number", "multipleOf": 5}""", ["0", "5", "-10", "125"], ["3", "2.5", "5.0"]);

    [Test]
    public void WhitespaceLimit()
    {
        AssertLanguage("""{"type": "array", "items": {"type": "integer"}}""", ["[1,2]"], ["[1, 2]"],
            new JsonSchemaOptions { MaxWhitespace = 0 });
        AssertLanguage("""{"type": "array"}""", ["[ 1]"], ["[  1]"], new JsonSchemaOptions { MaxWhitespace = 1 });
    }
}
