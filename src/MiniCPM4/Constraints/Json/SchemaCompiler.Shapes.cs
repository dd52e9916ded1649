using System.Globalization;
using System.Numerics;
using System.Text.Json;
using MiniCPM4.Constraints.Regex;

namespace MiniCPM4.Constraints.Json;

/// <summary>Reading schemas into <see cref="Shape"/>s, and the decisions made on shapes: whether a value surely
/// satisfies one (enum filtering), surely violates one, and whether two are disjoint (oneOf).</summary>
internal sealed partial class SchemaCompiler
{
    /// <summary>Assertion keywords that are not enforced: compile errors (unless trivially true).</summary>
    private static readonly HashSet<string> Unsupported =
    [
        "unevaluatedProperties", "unevaluatedItems", "contains", "$recursiveRef", "$dynamicRef", "extends", "disallow",
        "divisibleBy",
    ];

    private sealed class ParseState(Shape shape)
    {
        public Shape Shape { get; } = shape;
        public HashSet<string> Consumed { get; } = new(StringComparer.Ordinal);
        public HashSet<string> Visited { get; } = new(StringComparer.Ordinal);
    }

    private Shape ShapeOf(Conj conj)
    {
        if (_shapes.TryGetValue(conj.Key, out var cached)) return cached;
        var st = new ParseState(new Shape());
        foreach (var e in conj.Entries)
            if (e.StartsWith('!')) st.Consumed.Add(e[1..]);
        foreach (var e in conj.Entries)
        {
            if (st.Shape.Never) break;
            ApplyEntry(st, e);
        }
        _shapes[conj.Key] = st.Shape;
        return st.Shape;
    }

    private void ApplyEntry(ParseState st, string e)
    {
        var s = st.Shape;
        if (e.Length == 0 || e[0] == '/') ApplyPointer(st, e);
        else if (e[0] == '!') { }
        else if (e[0] == '-') Negate(st, e[1..]);
        else if (e == Conj.NeverEntry) s.Never = true;
        else if (e.StartsWith("#types:", StringComparison.Ordinal)) s.Types &= (JsonTypes)int.Parse(
            e["#types:".Length..], CultureInfo.InvariantCulture);
        else if (e.StartsWith("#require:", StringComparison.Ordinal))
        {
            var name = e["#require:".Length..];
            if (!s.Required.Contains(name)) s.Required.Add(name);
        }
        else if (e.StartsWith("#forbid:", StringComparison.Ordinal)) s.Forbidden.Add(e["#forbid:".Length..]);
        else if (e.StartsWith("#exclude:", StringComparison.Ordinal))
        {
            var ptr = e["#exclude:".Length..];
            var v = _resolver.Get(ptr);
            if (ptr.EndsWith("/enum", StringComparison.Ordinal)) s.Excluded.AddRange(v.EnumerateArray());
            else s.Excluded.Add(v);
        }
        else if (e.StartsWith("#nkw:", StringComparison.Ordinal)) NegateKeyword(st, e["#nkw:".Length..]);
        else if (e.StartsWith("#prop:", StringComparison.Ordinal))
        {
            var rest = e["#prop:".Length..];
            int sep = rest.IndexOf('\u0002');
            var name = rest[..sep];
            if (!s.ExtraProperties.TryGetValue(name, out var list)) s.ExtraProperties[name] = list = [];
            list.Add(rest[(sep + 1)..]);
        }
        else throw new InvalidOperationException("bad conjunction entry " + e);
    }

    private void ApplyPointer(ParseState st, string ptr)
    {
        if (!st.Visited.Add(ptr)) return;
        var el = _resolver.Get(ptr);
        switch (el.ValueKind)
        {
            case JsonValueKind.True: break;
            case JsonValueKind.False: st.Shape.Never = true; break;
            case JsonValueKind.Object: Apply(st, el, ptr); break;
            default: throw new ConstraintCompileException($"a schema is an object or a boolean, not {el.ValueKind}",
                null, ptr);
        }
    }

    private static string Child(string ptr, string keyword) => ptr + "/" + SchemaResolver.Escape(keyword);

    private static void AddGroup(ParseState st, string key, bool one, List<string[]> alternatives, string keyword,
        string at)
    {
        if (st.Consumed.Contains(key)) return;
        st.Shape.Groups.Add(new Group(key, one, alternatives, keyword, at));
    }

    private void Apply(ParseState st, JsonElement el, string ptr)
    {
        var s = st.Shape;
        if (_refOverridesSiblings && el.TryGetProperty("$ref", out var reference))
        {
            if (reference.ValueKind != JsonValueKind.String) throw Bad("must be a string", "$ref", ptr);
            ApplyPointer(st, _resolver.Resolve(reference.GetString()!, ptr));
            return;
        }
        ObjectPart? objectPart = null;
        ArrayPart? arrayPart = null;
        ObjectPart ObjPart()
        {
            if (objectPart is null)
            {
                objectPart = new ObjectPart { At = ptr };
                s.ObjectParts.Add(objectPart); // at the first object keyword: keeps the declaration order
            }
            return objectPart;
        }
        foreach (var prop in el.EnumerateObject())
        {
            string kw = prop.Name;
            var v = prop.Value;
            string at = Child(ptr, kw);
            switch (kw)
            {
                case "$ref":
                    if (v.ValueKind != JsonValueKind.String) throw Bad("must be a string", kw, ptr);
                    ApplyPointer(st, _resolver.Resolve(v.GetString()!, ptr));
                    break;
                case "allOf":
                    for (int i = 0; i < ArrayLength(v, kw, ptr, nonEmpty: true); i++) ApplyPointer(st, at + "/" + i);
                    break;
                case "anyOf":
                case "oneOf":
                {
                    int n = ArrayLength(v, kw, ptr, nonEmpty: true);
                    var alts = Enumerable.Range(0, n).Select(i => new[] { at + "/" + i }).ToList();
                    AddGroup(st, at, kw == "oneOf", alts, kw, ptr);
                    break;
                }
                case "not":
                    Negate(st, at);
                    break;
                case "type":
                    s.Types &= TypeMask(v, ptr);
                    break;
                case "enum":
                    ArrayLength(v, kw, ptr, nonEmpty: false);
                    IntersectEnum(s, v.EnumerateArray().ToList(), ptr);
                    break;
                case "const":
                    IntersectEnum(s, [v], ptr);
                    break;
                case "minimum":
                    s.RaiseLower(Number(v, kw, ptr), MinimumIsExclusive(el, "exclusiveMinimum"));
                    break;
                case "maximum":
                    s.LowerUpper(Number(v, kw, ptr), MinimumIsExclusive(el, "exclusiveMaximum"));
                    break;
                case "exclusiveMinimum":
                    if (v.ValueKind == JsonValueKind.Number) s.RaiseLower(Number(v, kw, ptr), true);
                    else if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Bad(
                        "must be a number", kw, ptr);
                    break;
                case "exclusiveMaximum":
                    if (v.ValueKind == JsonValueKind.Number) s.LowerUpper(Number(v, kw, ptr), true);
                    else if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Bad(
                        "must be a number", kw, ptr);
                    break;
                case "multipleOf":
                {
                    var m = Number(v, kw, ptr);
                    if (m.Negative || m.IsZero) throw Bad("must be positive", kw, ptr);
                    s.MultipleOf.Add((m, ptr));
                    break;
                }
                case "minLength": s.MinLength = Math.Max(s.MinLength, Count(v, kw, ptr)); break;
                case "maxLength": s.MaxLength = Min(s.MaxLength, Count(v, kw, ptr)); break;
                case "pattern":
                    if (v.ValueKind != JsonValueKind.String) throw Bad("must be a string", kw, ptr);
                    s.Patterns.Add((v.GetString()!, ptr));
                    break;
                case "format":
                    if (v.ValueKind == JsonValueKind.String) s.Formats.Add((v.GetString()!, ptr));
                    break;
                case "items":
                case "prefixItems":
                case "additionalItems":
                    if (arrayPart is null)
                    {
                        arrayPart = ReadArrayPart(el, ptr);
                        s.ArrayParts.Add(arrayPart);
                    }
                    break;
                case "minItems": s.MinItems = Math.Max(s.MinItems, Count(v, kw, ptr)); break;
                case "maxItems": s.MaxItems = Min(s.MaxItems, Count(v, kw, ptr)); break;
                case "uniqueItems":
                    if (v.ValueKind == JsonValueKind.True) s.UniqueAt ??= ptr;
                    break;
                case "properties":
                    if (v.ValueKind != JsonValueKind.Object) throw Bad("must be an object", kw, ptr);
                    foreach (var p in v.EnumerateObject()) ObjPart().Properties.Add((p.Name, Child(at, p.Name)));
                    ObjPart();
                    break;
                case "patternProperties":
                    if (v.ValueKind != JsonValueKind.Object) throw Bad("must be an object", kw, ptr);
                    foreach (var p in v.EnumerateObject()) ObjPart().Patterns.Add((p.Name, Child(at, p.Name)));
                    break;
                case "additionalProperties":
                    ObjPart().Additional = at;
                    break;
                case "required":
                    if (v.ValueKind == JsonValueKind.False) break;
                    if (v.ValueKind != JsonValueKind.Array) throw Bad("must be an array of property names", kw, ptr);
                    foreach (var r in v.EnumerateArray())
                    {
                        if (r.ValueKind != JsonValueKind.String) throw Bad("must be an array of property names", kw,
                            ptr);
                        if (!s.Required.Contains(r.GetString()!)) s.Required.Add(r.GetString()!);
                    }
                    break;
                case "minProperties":
                {
                    int n = Count(v, kw, ptr);
                    if (n > s.MinProperties)
                    {
                        s.MinProperties = n;
                        s.MinPropertiesAt = ptr;
                    }
                    break;
                }
                case "maxProperties": s.MaxProperties = Min(s.MaxProperties, Count(v, kw, ptr)); break;
                case "if":
                {
                    bool hasThen = el.TryGetProperty("then", out _), hasElse = el.TryGetProperty("else", out _);
                    if (!hasThen && !hasElse) break;
                    var yes = new List<string> { at };
                    if (hasThen) yes.Add(Child(ptr, "then"));
                    var no = new List<string> { "-" + at };
                    if (hasElse) no.Add(Child(ptr, "else"));
                    AddGroup(st, at, false, [yes.ToArray(), no.ToArray()], kw, ptr);
                    break;
                }
                case "dependencies" or "dependentRequired" or "dependentSchemas":
                    if (v.ValueKind != JsonValueKind.Object) throw Bad("must be an object", kw, ptr);
                    foreach (var dep in v.EnumerateObject())
                    {
                        var key = Child(at, dep.Name);
                        var then = new List<string> { "#require:" + dep.Name };
                        if (dep.Value.ValueKind == JsonValueKind.Array)
                        {
                            if (dep.Value.GetArrayLength() == 0) continue;
                            foreach (var n in dep.Value.EnumerateArray())
                            {
                                if (n.ValueKind != JsonValueKind.String) throw Bad("must list property names", kw, ptr);
                                then.Add("#require:" + n.GetString());
                            }
                        }
                        else if (IsTrivial(dep.Value)) continue;
                        else then.Add(key);
                        AddGroup(st, key, false, [["#forbid:" + dep.Name], then.ToArray()], kw, ptr);
                    }
                    break;
                case "propertyNames":
                    if (!IsTrivial(v)) s.PropertyNames.Add(at);
                    break;
                case "unevaluatedProperties" or "unevaluatedItems":
                    if (IsTrivial(v)) break;
                    throw new ConstraintCompileException($"{kw} is not enforced", kw, ptr);
                default:
                    if (Unsupported.Contains(kw)) throw new ConstraintCompileException($"{kw} is not enforced", kw,
                        ptr);
                    break; // annotations and unknown keywords
            }
        }
        if (objectPart is not null && objectPart.Additional is null && !_options.AllowUndeclaredProperties
            && objectPart.Properties.Count > 0)
            objectPart.Additional = Conj.NeverEntry;
    }

    /// <summary>Whether minimum (maximum) is exclusive: draft 4's boolean exclusiveMinimum (exclusiveMaximum); in a
    /// draft-4 schema a non-zero number there counts as true too (Python's jsonschema tests its truth).</summary>
    private bool MinimumIsExclusive(JsonElement el, string exclusiveKeyword) =>
        el.TryGetProperty(exclusiveKeyword, out var ex)
        && (ex.ValueKind == JsonValueKind.True
            || (!_integralFloats && ex.ValueKind == JsonValueKind.Number && !IsZeroNumber(ex)));

    // ---------------------------------------------------------------------------------------------------------
    // Negation: "not" (and the "else" side of if/then/else, and oneOf alternatives that may overlap).

    /// <summary>Applies the negation of the schema at <paramref name="ptr"/>: ¬(k1 ∧ k2 ∧ ...) is the anyOf of the
    /// negations of its keywords, each a few synthetic entries. Keywords whose negation is not expressible
    /// fail.</summary>
    private void Negate(ParseState st, string ptr)
    {
        if (!st.Visited.Add("-" + ptr)) return;
        var alternatives = NegationAlternatives(ptr);
        if (alternatives.Count == 0) st.Shape.Never = true;
        else if (alternatives.Count == 1)
            foreach (var e in alternatives[0]) ApplyEntry(st, e);
        else AddGroup(st, "-" + ptr, false, alternatives, "not", ptr);
    }

    private List<string[]> NegationAlternatives(string ptr)
    {
        var el = _resolver.Get(ptr);
        if (el.ValueKind == JsonValueKind.True) return [];
        if (el.ValueKind == JsonValueKind.False) return [[]];
        if (el.ValueKind != JsonValueKind.Object) throw new ConstraintCompileException(
            "a schema is an object or a boolean", "not", ptr);
        var alts = new List<string[]>();
        string obj = ((int)JsonTypes.Object).ToString(CultureInfo.InvariantCulture);
        // With $ref, negate only the reference: drafts 4-7 ignore its siblings, later drafts apply them too, and
        // ¬ref is within ¬(ref ∧ siblings) either way.
        if (el.TryGetProperty("$ref", out var reference) && reference.ValueKind == JsonValueKind.String)
            return [["-" + _resolver.Resolve(reference.GetString()!, ptr)]];
        foreach (var prop in el.EnumerateObject())
        {
            string kw = prop.Name;
            var v = prop.Value;
            string at = Child(ptr, kw);
            switch (kw)
            {
                case "$ref":
                    alts.Add(["-" + _resolver.Resolve(v.GetString() ?? "", ptr)]);
                    break;
                case "not":
                    alts.Add([at]);
                    break;
                case "allOf":
                    for (int i = 0; i < ArrayLength(v, kw, ptr, nonEmpty: true); i++) alts.Add(["-" + at + "/" + i]);
                    break;
                case "anyOf":
                    alts.Add(
                        Enumerable.Range(0, ArrayLength(v, kw, ptr, nonEmpty: true)).Select(i => "-" + at + "/" + i)
                        .ToArray());
                    break;
                case "type":
                    alts.Add(["#types:" + (int)(JsonTypes.All & ~TypeMask(v, ptr))]);
                    break;
                case "enum":
                case "const":
                    alts.Add(["#exclude:" + at]);
                    break;
                case "required":
                    if (v.ValueKind != JsonValueKind.Array) throw Bad("must be an array of property names", kw, ptr);
                    foreach (var r in v.EnumerateArray()) alts.Add(["#types:" + obj, "#forbid:" + r.GetString()]);
                    break;
                case "properties":
                    if (v.ValueKind != JsonValueKind.Object) throw Bad("must be an object", kw, ptr);
                    foreach (var p in v.EnumerateObject())
                        alts.Add(
                            ["#types:" + obj, "#require:" + p.Name, "#prop:" + p.Name + "\u0002-" + Child(at, p.Name)]);
                    break;
                case "minimum" or "maximum" or "minLength" or "maxLength" or "pattern" or "minItems" or "maxItems"
                    or "minProperties" or "maxProperties":
                    alts.Add(["#nkw:" + at]);
                    break;
                case "exclusiveMinimum" or "exclusiveMaximum":
                    // Draft 4: a modifier of minimum/maximum (handled there), not a bound of its own.
                    if (v.ValueKind == JsonValueKind.Number && _integralFloats) alts.Add(["#nkw:" + at]);
                    break;
                case "format":
                    if (v.ValueKind == JsonValueKind.String
                        && (SupportedFormats.Contains(v.GetString()!) || UnsupportedFormats.Contains(v.GetString()!)))
                        throw new ConstraintCompileException("a negated format is not enforced", "not", ptr);
                    break;
                case "uniqueItems":
                    if (v.ValueKind == JsonValueKind.True) throw new ConstraintCompileException(
                        "a negated uniqueItems is not enforced", "not", ptr);
                    break;
                case "if":
                    if (el.TryGetProperty("then", out _) || el.TryGetProperty("else", out _))
                        throw new ConstraintCompileException("a negated if/then/else is not enforced", "not", ptr);
                    break;
                case "oneOf" or "items" or "prefixItems" or "additionalItems" or "patternProperties"
                    or "additionalProperties"
                    or "multipleOf" or "dependencies" or "dependentRequired" or "dependentSchemas" or "propertyNames"
                    or "contains" or "unevaluatedProperties" or "unevaluatedItems" or "$recursiveRef" or "$dynamicRef":
                    throw new ConstraintCompileException($"a negated {kw} is not enforced", "not", ptr);
                default:
                    break; // annotations
            }
        }
        return alts;
    }

    /// <summary>The negation of one keyword (by its pointer).</summary>
    private void NegateKeyword(ParseState st, string kwPtr)
    {
        var s = st.Shape;
        int slash = kwPtr.LastIndexOf('/');
        var parentPtr = kwPtr[..slash];
        var kw = kwPtr[(slash + 1)..].Replace("~1", "/").Replace("~0", "~");
        var el = _resolver.Get(parentPtr);
        var v = el.GetProperty(kw);
        switch (kw)
        {
            case "minimum":
                s.Types &= JsonTypes.Number;
                s.LowerUpper(Number(v, kw, parentPtr), !MinimumIsExclusive(el, "exclusiveMinimum"));
                break;
            case "maximum":
                s.Types &= JsonTypes.Number;
                s.RaiseLower(Number(v, kw, parentPtr), !MinimumIsExclusive(el, "exclusiveMaximum"));
                break;
            case "exclusiveMinimum":
                s.Types &= JsonTypes.Number;
                s.LowerUpper(Number(v, kw, parentPtr), false);
                break;
            case "exclusiveMaximum":
                s.Types &= JsonTypes.Number;
                s.RaiseLower(Number(v, kw, parentPtr), false);
                break;
            case "minLength":
            {
                int n = Count(v, kw, parentPtr);
                s.Types &= JsonTypes.String;
                if (n == 0) s.Never = true;
                else s.MaxLength = Min(s.MaxLength, n - 1);
                break;
            }
            case "maxLength":
                s.Types &= JsonTypes.String;
                s.MinLength = Math.Max(s.MinLength, Count(v, kw, parentPtr) + 1);
                break;
            case "pattern":
                s.Types &= JsonTypes.String;
                s.StringRegexes.Add(
                    _rb.And(_values.AnyStringContent, _rb.Not(PatternRegex(v.GetString()!, parentPtr))));
                break;
            case "minItems":
            {
                int n = Count(v, kw, parentPtr);
                s.Types &= JsonTypes.Array;
                if (n == 0) s.Never = true;
                else s.MaxItems = Min(s.MaxItems, n - 1);
                break;
            }
            case "maxItems":
                s.Types &= JsonTypes.Array;
                s.MinItems = Math.Max(s.MinItems, Count(v, kw, parentPtr) + 1);
                break;
            case "minProperties":
            {
                int n = Count(v, kw, parentPtr);
                s.Types &= JsonTypes.Object;
                if (n == 0) s.Never = true;
                else s.MaxProperties = Min(s.MaxProperties, n - 1);
                break;
            }
            case "maxProperties":
            {
                int n = Count(v, kw, parentPtr) + 1;
                s.Types &= JsonTypes.Object;
                if (n > s.MinProperties)
                {
                    s.MinProperties = n;
                    s.MinPropertiesAt = parentPtr;
                }
                break;
            }
            default: throw new InvalidOperationException("cannot negate " + kw);
        }
    }

    private static bool IsTrivial(JsonElement v) =>
        v.ValueKind == JsonValueKind.True || (v.ValueKind == JsonValueKind.Object && !v.EnumerateObject().Any());

    private static bool IsZeroNumber(JsonElement v) => Dec.Parse(v.GetRawText()) is { IsZero: true };

    private static ArrayPart ReadArrayPart(JsonElement el, string ptr)
    {
        var part = new ArrayPart();
        bool hasItems = el.TryGetProperty("items", out var items);
        if (el.TryGetProperty("prefixItems", out var prefix))
        {
            int n = ArrayLength(prefix, "prefixItems", ptr, nonEmpty: false);
            for (int i = 0; i < n; i++) part.Prefix.Add(Child(ptr, "prefixItems") + "/" + i);
            if (hasItems)
            {
                if (items.ValueKind == JsonValueKind.Array) throw Bad("an array 'items' beside 'prefixItems'", "items",
                    ptr);
                part.Rest = Child(ptr, "items");
            }
        }
        else if (hasItems && items.ValueKind == JsonValueKind.Array)
        {
            for (int i = 0; i < items.GetArrayLength(); i++) part.Prefix.Add(Child(ptr, "items") + "/" + i);
            if (el.TryGetProperty("additionalItems", out _)) part.Rest = Child(ptr, "additionalItems");
        }
        else if (hasItems) part.Rest = Child(ptr, "items");
        return part;
    }

    private static ConstraintCompileException Bad(string message, string keyword, string ptr) =>
        new($"invalid schema: {keyword} {message}", keyword, ptr);

    private static int ArrayLength(JsonElement v, string kw, string ptr, bool nonEmpty)
    {
        if (v.ValueKind != JsonValueKind.Array || (nonEmpty && v.GetArrayLength() == 0))
            throw Bad(nonEmpty ? "must be a non-empty array" : "must be an array", kw, ptr);
        return v.GetArrayLength();
    }

    private static Dec Number(JsonElement v, string kw, string ptr)
    {
        if (v.ValueKind != JsonValueKind.Number) throw Bad("must be a number", kw, ptr);
        return Dec.Parse(v.GetRawText()) ?? throw Bad("is out of range", kw, ptr);
    }

    private static int Count(JsonElement v, string kw, string ptr)
    {
        var d = Number(v, kw, ptr);
        if (d.Negative || !d.IsInteger) throw Bad("must be a non-negative integer", kw, ptr);
        return d.Int.Length > 9 ? int.MaxValue : int.Parse(d.Int, CultureInfo.InvariantCulture);
    }

    private static int Min(int current, int value) => current < 0 ? value : Math.Min(current, value);

    private static JsonTypes TypeMask(JsonElement v, string ptr)
    {
        static JsonTypes One(string name, string ptr) => name switch
        {
            "null" => JsonTypes.Null,
            "boolean" => JsonTypes.Boolean,
            "integer" => JsonTypes.Integer,
            "number" => JsonTypes.Number,
            "string" => JsonTypes.String,
            "array" => JsonTypes.Array,
            "object" => JsonTypes.Object,
            "any" => JsonTypes.All,
            _ => throw Bad($"names an unknown type '{name}'", "type", ptr),
        };
        if (v.ValueKind == JsonValueKind.String) return One(v.GetString()!, ptr);
        if (v.ValueKind != JsonValueKind.Array) throw Bad("must be a string or an array of strings", "type", ptr);
        var mask = JsonTypes.None;
        foreach (var t in v.EnumerateArray())
        {
            if (t.ValueKind != JsonValueKind.String) throw Bad("must be a string or an array of strings", "type", ptr);
            mask |= One(t.GetString()!, ptr);
        }
        return mask;
    }

    private static void IntersectEnum(Shape s, List<JsonElement> values, string ptr)
    {
        if (s.Enum is null)
        {
            s.Enum = values;
            s.EnumAt = ptr;
        }
        else s.Enum = s.Enum.Where(a => values.Any(b => JsonValueGrammar.JsonEquals(a, b))).ToList();
    }

    // ---------------------------------------------------------------------------------------------------------
    // Decisions on values.

    /// <summary>Whether the value surely satisfies the conjunction, its anyOf/oneOf groups included.</summary>
    private bool SatisfiesConj(Conj conj, JsonElement v, int depth)
    {
        var s = ShapeOf(conj);
        if (s.Groups.Count == 0 || s.IsEmpty) return Satisfies(s, v, depth);
        if (depth > 32) return false;
        var g = s.Groups[0];
        var consumed = "!" + g.Key;
        var branches = g.Alternatives.Select(a => conj.With(a).With(consumed)).ToList();
        if (!g.One) return branches.Any(b => SatisfiesConj(b, v, depth + 1));
        for (int i = 0; i < branches.Count; i++)
            if (SatisfiesConj(branches[i], v, depth + 1)
                && Enumerable.Range(0, branches.Count).All(j => j == i || Rejects(ShapeOf(branches[j]), v, depth + 1)))
                return true;
        return false;
    }

    /// <summary>Whether the value surely satisfies the shape (false: it does not, or it is not known).</summary>
    private bool Satisfies(Shape s, JsonElement v, int depth)
    {
        if (s.IsEmpty || s.Groups.Count > 0 || depth > 32) return false;
        if (s.Enum is not null && !s.Enum.Any(e => JsonValueGrammar.JsonEquals(e, v))) return false;
        if (s.Excluded.Any(e => JsonValueGrammar.JsonEquals(e, v))) return false;
        var types = EffectiveTypes(s);
        switch (v.ValueKind)
        {
            case JsonValueKind.Null: return (types & JsonTypes.Null) != 0;
            case JsonValueKind.True:
            case JsonValueKind.False: return (types & JsonTypes.Boolean) != 0;
            case JsonValueKind.Number:
            {
                if (Dec.Parse(v.GetRawText()) is not Dec d) return false;
                if ((types & (d.IsInteger ? JsonTypes.Integer : JsonTypes.Fraction)) == 0) return false;
                if (!WithinBounds(s, d)) return false;
                foreach (var (m, _) in s.MultipleOf)
                    if (!d.IsInteger || !m.IsInteger
                        || BigInteger.Parse(d.Int, CultureInfo.InvariantCulture) % BigInteger.Parse(m.Int,
                        CultureInfo.InvariantCulture) != 0) return false;
                return true;
            }
            case JsonValueKind.String:
                return (types & JsonTypes.String) != 0
                    && !_rb.IsDead(_rb.And(StringContent(s), _rb.Text(v.GetString()!, CharEncoding.JsonStringContent)));
            case JsonValueKind.Array:
            {
                if ((types & JsonTypes.Array) == 0) return false;
                int n = v.GetArrayLength();
                if (n < s.MinItems || (s.MaxItems >= 0 && n > s.MaxItems)) return false;
                var items = v.EnumerateArray().ToList();
                for (int i = 0; i < n; i++)
                {
                    if (!SatisfiesConj(ItemConj(s, i), items[i], depth + 1)) return false;
                    if (s.UniqueAt is not null)
                        for (int j = 0; j < i; j++)
                            if (JsonValueGrammar.JsonEquals(items[i], items[j])) return false;
                }
                return true;
            }
            case JsonValueKind.Object:
            {
                if ((types & JsonTypes.Object) == 0 || s.PropertyNames.Count > 0) return false;
                var props = JsonValueGrammar.DistinctProperties(v);
                if (props.Count < s.MinProperties
                    || (s.MaxProperties >= 0 && props.Count > s.MaxProperties)) return false;
                if (s.Required.Any(r => !props.Any(p => p.Name == r))) return false;
                foreach (var (name, value) in props)
                    if (!SatisfiesConj(PropertyConj(s, name), value, depth + 1)) return false;
                return true;
            }
            default: return false;
        }
    }

    private static bool WithinBounds(Shape s, Dec d)
    {
        if (s.Lo is Dec lo)
        {
            int c = d.CompareTo(lo);
            if (c < 0 || (c == 0 && s.LoExclusive)) return false;
        }
        if (s.Hi is Dec hi)
        {
            int c = d.CompareTo(hi);
            if (c > 0 || (c == 0 && s.HiExclusive)) return false;
        }
        return true;
    }

    /// <summary>The types a shape admits, without failing on what EmitTyped would reject.</summary>
    private static JsonTypes LooseTypes(Shape s)
    {
        var types = s.Types;
        if (s.MultipleOf.Count > 0) types &= ~JsonTypes.Fraction;
        return types;
    }

    /// <summary>Whether the value (written the way <see cref="JsonValueGrammar.Literal"/> writes it) surely violates
    /// the shape (its pending anyOf/oneOf ignored: they only restrict it further).</summary>
    private bool Rejects(Shape s, JsonElement v, int depth)
    {
        if (s.IsEmpty) return true;
        if (depth > 16) return false;
        if (s.Enum is not null && !s.Enum.Any(e => JsonValueGrammar.JsonEquals(e, v))) return true;
        var types = LooseTypes(s);
        switch (v.ValueKind)
        {
            case JsonValueKind.Null: return (types & JsonTypes.Null) == 0;
            case JsonValueKind.True:
            case JsonValueKind.False: return (types & JsonTypes.Boolean) == 0;
            case JsonValueKind.Number:
            {
                if (Dec.Parse(v.GetRawText()) is not Dec d) return false;
                if ((types & (d.IsInteger ? JsonTypes.Number : JsonTypes.Fraction)) == 0) return true;
                return !WithinBounds(s, d);
            }
            case JsonValueKind.String:
                return (types & JsonTypes.String) == 0
                    || _rb.IsDead(_rb.And(StringContent(s), _rb.Text(v.GetString()!, CharEncoding.JsonStringContent)));
            case JsonValueKind.Array:
            {
                if ((types & JsonTypes.Array) == 0) return true;
                int n = v.GetArrayLength();
                return n < s.MinItems || (s.MaxItems >= 0 && n > s.MaxItems);
            }
            case JsonValueKind.Object:
            {
                if ((types & JsonTypes.Object) == 0) return true;
                var props = JsonValueGrammar.DistinctProperties(v);
                if (s.Required.Any(r => !props.Any(p => p.Name == r))) return true;
                foreach (var (name, value) in props)
                    if (Rejects(ShapeOf(PropertyConj(s, name)), value, depth + 1)) return true;
                return false;
            }
            default: return false;
        }
    }

    /// <summary>Whether no JSON text the grammar accepts for <paramref name="a"/> is accepted for <paramref name="b"/>
    /// (false: not proven). Pending anyOf/oneOf are ignored: they only shrink the languages.</summary>
    private bool Disjoint(Conj a, Conj b, int depth)
    {
        if (depth > 8) return false;
        var sa = ShapeOf(a);
        var sb = ShapeOf(b);
        if (sa.IsEmpty || sb.IsEmpty) return true;
        if (sa.Enum is not null && sa.Enum.All(v => Rejects(sb, v, depth))) return true;
        if (sb.Enum is not null && sb.Enum.All(v => Rejects(sa, v, depth))) return true;
        var common = LooseTypes(sa) & LooseTypes(sb);
        if ((common & (JsonTypes.Null | JsonTypes.Boolean)) != 0) return false;
        if ((common & JsonTypes.Number) != 0 && !RangesDisjoint(sa, sb)) return false;
        if ((common & JsonTypes.String) != 0
            && !_rb.IsDead(_rb.And(StringContent(sa), StringContent(sb)))) return false;
        if ((common & JsonTypes.Array) != 0
            && !CountsDisjoint(sa.MinItems, sa.MaxItems, sb.MinItems, sb.MaxItems)) return false;
        if ((common & JsonTypes.Object) != 0 && !ObjectsDisjoint(sa, sb, depth)) return false;
        return true;
    }

    private static bool CountsDisjoint(int minA, int maxA, int minB, int maxB) =>
        (maxA >= 0 && maxA < minB) || (maxB >= 0 && maxB < minA);

    private static bool RangesDisjoint(Shape a, Shape b)
    {
        static bool Below(Shape x, Shape y) // every x < every y
        {
            if (x.Hi is not Dec hi || y.Lo is not Dec lo) return false;
            int c = hi.CompareTo(lo);
            return c < 0 || (c == 0 && (x.HiExclusive || y.LoExclusive));
        }
        return Below(a, b) || Below(b, a);
    }

    private bool ObjectsDisjoint(Shape a, Shape b, int depth)
    {
        if (CountsDisjoint(a.MinProperties, a.MaxProperties, b.MinProperties, b.MaxProperties)) return true;
        foreach (var k in a.Required)
        {
            var cb = PropertyConj(b, k);
            if (ShapeOf(cb).IsEmpty) return true;
            if (b.Required.Contains(k) && Disjoint(PropertyConj(a, k), cb, depth + 1)) return true;
        }
        foreach (var k in b.Required)
            if (ShapeOf(PropertyConj(a, k)).IsEmpty) return true;
        return false;
    }
}
