using System.Text.Json;

namespace MiniCPM4.Constraints.Json;

/// <summary>
/// Finds subschemas of one schema document by JSON pointer and resolves <c>$ref</c>: fragments (<c>#/a/b</c> with
/// <c>~0 ~1</c> and %-escapes), <c>$id</c> / draft-4 <c>id</c> base URIs (embedded resources), and <c>$anchor</c> /
/// plain-name fragments. Remote documents are not fetched: a reference outside the document is a compile error.
/// Every subschema is named by its JSON pointer from the root ("" is the root).
/// </summary>
internal sealed class SchemaResolver
{
    private static readonly Uri DefaultBase = new("https://schema.invalid/root.json");
    private readonly JsonElement _root;
    // absolute URI (no fragment) → pointer
    private readonly Dictionary<string, string> _resources = new(StringComparer.Ordinal);
    // absolute URI#anchor → pointer
    private readonly Dictionary<string, string> _anchors = new(StringComparer.Ordinal);
    // pointer of an object schema → base URI
    private readonly Dictionary<string, Uri> _baseOf = new(StringComparer.Ordinal);
    private readonly Dictionary<string, JsonElement> _byPointer = new(StringComparer.Ordinal);

    /// <summary>Keywords whose values are not schemas (so no <c>$id</c> inside them counts).</summary>
    private static readonly HashSet<string> ValueKeywords =
        ["enum", "const", "default", "examples", "example", "required"];

    public SchemaResolver(JsonElement root, bool draft4Ids)
    {
        _root = root;
        Index(root, "", DefaultBase, draft4Ids);
    }

    public JsonElement Root => _root;

    private void Index(JsonElement e, string pointer, Uri baseUri, bool draft4Ids)
    {
        _byPointer[pointer] = e;
        if (e.ValueKind == JsonValueKind.Object)
        {
            string? id = null;
            if (e.TryGetProperty("$id", out var idEl) && idEl.ValueKind == JsonValueKind.String) id = idEl.GetString();
            else if (draft4Ids && e.TryGetProperty("id", out idEl) && idEl.ValueKind == JsonValueKind.String) id =
                idEl.GetString();
            if (!string.IsNullOrEmpty(id) && Uri.TryCreate(baseUri, id, out var resolved))
            {
                var (doc, frag) = Split(resolved);
                if (frag.Length == 0)
                {
                    baseUri = new Uri(doc);
                    _resources.TryAdd(doc, pointer);
                }
                else if (!frag.StartsWith('/'))
                    _anchors.TryAdd(doc + "#" + frag, pointer); // draft-4/6/7 "id": "#name" is an anchor
            }
            if (pointer.Length == 0) _resources.TryAdd(Split(baseUri).Doc, "");
            if (e.TryGetProperty("$anchor", out var anchor) && anchor.ValueKind == JsonValueKind.String)
                _anchors.TryAdd(Split(baseUri).Doc + "#" + anchor.GetString(), pointer);
            _baseOf[pointer] = baseUri;
            foreach (var p in e.EnumerateObject())
            {
                if (ValueKeywords.Contains(p.Name)
                    && !(p.Name == "required" && p.Value.ValueKind == JsonValueKind.Object)) continue;
                if (p.Value.ValueKind is JsonValueKind.Object or JsonValueKind.Array)
                    Index(p.Value, pointer + "/" + Escape(p.Name), baseUri, draft4Ids);
            }
        }
        else if (e.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var item in e.EnumerateArray())
            {
                if (item.ValueKind is JsonValueKind.Object or JsonValueKind.Array or JsonValueKind.True or JsonValueKind
                    .False)
                    Index(item, pointer + "/" + i, baseUri, draft4Ids);
                i++;
            }
        }
    }

    private static (string Doc, string Fragment) Split(Uri u)
    {
        var s = u.AbsoluteUri;
        int hash = s.IndexOf('#');
        return hash < 0 ? (s, "") : (s[..hash], Uri.UnescapeDataString(s[(hash + 1)..]));
    }

    /// <summary>Escapes one reference token of a JSON pointer.</summary>
    public static string Escape(string token) => token.Replace("~", "~0").Replace("/", "~1");

    /// <summary>The element at <paramref name="pointer"/> (a JSON pointer from the root).</summary>
    public bool TryGet(string pointer, out JsonElement element)
    {
        if (_byPointer.TryGetValue(pointer, out element)) return true;
        element = _root;
        if (pointer.Length == 0) return true;
        if (pointer[0] != '/') return false;
        foreach (var raw in pointer[1..].Split('/'))
        {
            var token = raw.Replace("~1", "/").Replace("~0", "~");
            if (element.ValueKind == JsonValueKind.Object)
            {
                if (!element.TryGetProperty(token, out element)) return false;
            }
            else if (element.ValueKind == JsonValueKind.Array)
            {
                if (!int.TryParse(token, out int i) || i < 0 || i >= element.GetArrayLength()) return false;
                element = element[i];
            }
            else return false;
        }
        _byPointer[pointer] = element;
        return true;
    }

    public JsonElement Get(string pointer) =>
        TryGet(pointer, out var e) ? e : throw new ConstraintCompileException("no such subschema", null, pointer);

    /// <summary>Resolves the <c>$ref</c> value <paramref name="reference"/> found in the schema at
    /// <paramref name="at"/>; returns the target's pointer.</summary>
    public string Resolve(string reference, string at)
    {
        var baseUri = BaseOf(at);
        if (!Uri.TryCreate(baseUri, reference, out var target))
            throw new ConstraintCompileException($"cannot parse reference '{reference}'", "$ref", at);
        var (doc, frag) = Split(target);
        string? docPointer = null;
        if (_resources.TryGetValue(doc, out var p)) docPointer = p;
        else if (reference.StartsWith('#')) docPointer = "";
        if (docPointer is null)
            throw new ConstraintCompileException(
                $"reference '{reference}' is outside this schema (remote references are not fetched)", "$ref", at);
        string result;
        if (frag.Length == 0) result = docPointer;
        else if (frag[0] == '/') result = docPointer + frag;
        else if (_anchors.TryGetValue(doc + "#" + frag, out var anchored)) result = anchored;
        else throw new ConstraintCompileException($"unknown anchor '{frag}' in reference '{reference}'", "$ref", at);
        if (!TryGet(result, out _))
            throw new ConstraintCompileException($"reference '{reference}' points at nothing", "$ref", at);
        return result;
    }

    private Uri BaseOf(string pointer)
    {
        // The nearest enclosing object schema with a recorded base.
        while (true)
        {
            if (_baseOf.TryGetValue(pointer, out var u)) return u;
            if (pointer.Length == 0) return DefaultBase;
            pointer = pointer[..pointer.LastIndexOf('/')];
        }
    }

    public static string Describe(string pointer) => pointer.Length == 0 ? "#" : "#" + pointer;
}
