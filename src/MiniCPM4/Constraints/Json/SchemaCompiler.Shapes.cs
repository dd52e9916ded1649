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
        "not", "dependencies", "dependentRequired", "dependentSchemas", "propertyNames", "unevaluatedProperties",
        "unevaluatedItems", "contains", "$recursiveRef", "$dynamicRef", "extends", "disallow", "divisibleBy",
    ];

    private Shape ShapeOf(Conj conj)
    {
        if (_shapes.TryGetValue(conj.Key, out var cached)) return cached;
        var s = new Shape();
        var consumed = new HashSet<string>(StringComparer.Ordinal);
        var queue = new Queue<string>();
        foreach (var e in conj.Entries)
        {
            if (e == Conj.NeverEntry) s.Never = true;
            else if (e.StartsWith('!')) consumed.Add(e[1..]);
            else queue.Enqueue(e);
        }
        var visited = new HashSet<string>(StringComparer.Ordinal);
        while (queue.Count > 0 && !s.Never)
        {
            var ptr = queue.Dequeue();
            if (!visited.Add(ptr)) continue;
            var el = _resolver.Get(ptr);
            switch (el.ValueKind)
            {
                case JsonValueKind.True: break;
                case JsonValueKind.False: s.Never = true; break;
                case JsonValueKind.Object: Apply(s, el, ptr, queue, consumed); break;
                default: throw new ConstraintCompileException($"a schema is an object or a boolean, not {el.ValueKind}", null, ptr);
            }
        }
        _shapes[conj.Key] = s;
        return s;
    }

    private static string Child(string ptr, string keyword) => ptr + "/" + SchemaResolver.Escape(keyword);

    private void Apply(Shape s, JsonElement el, string ptr, Queue<string> queue, HashSet<string> consumed)
    {
        ObjectPart? objectPart = null;
        ArrayPart? arrayPart = null;
        ObjectPart ObjPart() => objectPart ??= new ObjectPart { At = ptr };
        foreach (var prop in el.EnumerateObject())
        {
            string kw = prop.Name;
            var v = prop.Value;
            string at = Child(ptr, kw);
            switch (kw)
            {
                case "$ref":
                    if (v.ValueKind != JsonValueKind.String) throw Bad("must be a string", kw, ptr);
                    queue.Enqueue(_resolver.Resolve(v.GetString()!, ptr));
                    break;
                case "allOf":
                    for (int i = 0; i < ArrayLength(v, kw, ptr, nonEmpty: true); i++) queue.Enqueue(at + "/" + i);
                    break;
                case "anyOf":
                case "oneOf":
                {
                    int n = ArrayLength(v, kw, ptr, nonEmpty: true);
                    if (!consumed.Contains(at)) s.Groups.Add(new Group(at, kw == "oneOf", n));
                    break;
                }
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
                {
                    bool exclusive = el.TryGetProperty("exclusiveMinimum", out var ex) && ex.ValueKind == JsonValueKind.True
                        || !_integralFloats && ex.ValueKind == JsonValueKind.Number && !IsZeroNumber(ex);
                    s.RaiseLower(Number(v, kw, ptr), exclusive);
                    break;
                }
                case "maximum":
                {
                    bool exclusive = el.TryGetProperty("exclusiveMaximum", out var ex) && ex.ValueKind == JsonValueKind.True
                        || !_integralFloats && ex.ValueKind == JsonValueKind.Number && !IsZeroNumber(ex);
                    s.LowerUpper(Number(v, kw, ptr), exclusive);
                    break;
                }
                case "exclusiveMinimum":
                    if (v.ValueKind == JsonValueKind.Number) s.RaiseLower(Number(v, kw, ptr), true);
                    else if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Bad("must be a number", kw, ptr);
                    break;
                case "exclusiveMaximum":
                    if (v.ValueKind == JsonValueKind.Number) s.LowerUpper(Number(v, kw, ptr), true);
                    else if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Bad("must be a number", kw, ptr);
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
                    arrayPart ??= ReadArrayPart(el, ptr);
                    break;
                case "minItems": s.MinItems = Math.Max(s.MinItems, Count(v, kw, ptr)); break;
                case "maxItems": s.MaxItems = Min(s.MaxItems, Count(v, kw, ptr)); break;
                case "uniqueItems":
                    if (v.ValueKind == JsonValueKind.True) s.UniqueAt ??= ptr;
                    break;
                case "properties":
                    if (v.ValueKind != JsonValueKind.Object) throw Bad("must be an object", kw, ptr);
                    foreach (var p in v.EnumerateObject()) ObjPart().Properties.Add((p.Name, Child(at, p.Name)));
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
                        if (r.ValueKind != JsonValueKind.String) throw Bad("must be an array of property names", kw, ptr);
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
                    if (el.TryGetProperty("then", out _) || el.TryGetProperty("else", out _))
                        throw new ConstraintCompileException("if/then/else is not enforced", kw, ptr);
                    break;
                case "dependencies" or "dependentRequired" or "dependentSchemas":
                    if (v.ValueKind == JsonValueKind.Object && !v.EnumerateObject().Any()) break;
                    throw new ConstraintCompileException($"{kw} is not enforced", kw, ptr);
                case "propertyNames" or "unevaluatedProperties" or "unevaluatedItems":
                    if (IsTrivial(v)) break;
                    throw new ConstraintCompileException($"{kw} is not enforced", kw, ptr);
                default:
                    if (Unsupported.Contains(kw)) throw new ConstraintCompileException($"{kw} is not enforced", kw, ptr);
                    break; // annotations and unknown keywords
            }
        }
        if (objectPart is not null)
        {
            if (objectPart.Additional is null && !_options.AllowUndeclaredProperties && objectPart.Properties.Count > 0)
                objectPart.Additional = Conj.NeverEntry;
            s.ObjectParts.Add(objectPart);
        }
        if (arrayPart is not null) s.ArrayParts.Add(arrayPart);
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
                if (items.ValueKind == JsonValueKind.Array) throw Bad("an array 'items' beside 'prefixItems'", "items", ptr);
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
        return d.Int.Length > 9 ? int.MaxValue : int.Parse(d.Int);
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

    /// <summary>Whether the value surely satisfies the shape (false: it does not, or it is not known).</summary>
    private bool Satisfies(Shape s, JsonElement v, int depth)
    {
        if (s.IsEmpty || s.Groups.Count > 0 || depth > 32) return false;
        if (s.Enum is not null && !s.Enum.Any(e => JsonValueGrammar.JsonEquals(e, v))) return false;
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
                    if (!d.IsInteger || !m.IsInteger || BigInteger.Parse(d.Int) % BigInteger.Parse(m.Int) != 0) return false;
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
                    if (!Satisfies(ShapeOf(ItemConj(s, i)), items[i], depth + 1)) return false;
                    if (s.UniqueAt is not null)
                        for (int j = 0; j < i; j++)
                            if (JsonValueGrammar.JsonEquals(items[i], items[j])) return false;
                }
                return true;
            }
            case JsonValueKind.Object:
            {
                if ((types & JsonTypes.Object) == 0) return false;
                var props = JsonValueGrammar.DistinctProperties(v);
                if (props.Count < s.MinProperties || (s.MaxProperties >= 0 && props.Count > s.MaxProperties)) return false;
                if (s.Required.Any(r => !props.Any(p => p.Name == r))) return false;
                foreach (var (name, value) in props)
                    if (!Satisfies(ShapeOf(PropertyConj(s, name)), value, depth + 1)) return false;
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
        if ((common & JsonTypes.String) != 0 && !_rb.IsDead(_rb.And(StringContent(sa), StringContent(sb)))) return false;
        if ((common & JsonTypes.Array) != 0 && !CountsDisjoint(sa.MinItems, sa.MaxItems, sb.MinItems, sb.MaxItems)) return false;
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
