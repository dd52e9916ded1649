using System.Text.Json;
using MiniCPM4.Constraints.Grammars;
using MiniCPM4.Constraints.Regex;

namespace MiniCPM4.Constraints.Json;

/// <summary>
/// The grammar pieces for JSON values: punctuation, strings, literal values (const / enum) and "any JSON value".
/// Every value is a sequence of lexemes, so the grammar's skip regex (whitespace) may come between them.
/// </summary>
internal sealed class JsonValueGrammar
{
    private readonly GrammarBuilder _g;
    private readonly RegexBuilder _rb;
    private readonly NumberRanges _numbers;
    private Symbol? _any;
    private int _stringContent = -1;

    public JsonValueGrammar(GrammarBuilder g, NumberRanges numbers, bool pythonLiterals = false)
    {
        _g = g;
        True = pythonLiterals ? "True" : "true";
        False = pythonLiterals ? "False" : "false";
        Null = pythonLiterals ? "None" : "null";
        _rb = g.Regex;
        _numbers = numbers;
        LBrace = g.Literal("{");
        RBrace = g.Literal("}");
        LBracket = g.Literal("[");
        RBracket = g.Literal("]");
        Comma = g.Literal(",");
        Colon = g.Literal(":");
    }

    public Symbol LBrace { get; }
    public Symbol RBrace { get; }
    public Symbol LBracket { get; }
    public Symbol RBracket { get; }
    public Symbol Comma { get; }
    public Symbol Colon { get; }
    /// <summary>The spellings of true, false and null (JSON's, or Python's for keyword-argument calls).</summary>
    public string True { get; }
    public string False { get; }
    public string Null { get; }

    /// <summary>Any string content (code points in the canonical JSON escaping), without the quotes.</summary>
    public int AnyStringContent => _stringContent >= 0
        ? _stringContent
        : _stringContent = _rb.Star(_rb.AnyCodePoint(CharEncoding.JsonStringContent));

    /// <summary>A quoted string whose content matches <paramref name="content"/>.</summary>
    public int Quoted(int content) => _rb.Concat(_rb.Literal("\""), content, _rb.Literal("\""));

    /// <summary>The regex of exactly this string value, quoted.</summary>
    public int StringLiteral(string s) => Quoted(_rb.Text(s, CharEncoding.JsonStringContent));

    /// <summary>Any JSON value (one shared recursive nonterminal).</summary>
    public Symbol Any()
    {
        if (_any is Symbol a) return a;
        var value = _g.Nonterminal("any");
        _any = value;
        var str = _g.Lexeme(Quoted(AnyStringContent), "string");
        var member = _g.Sequence("any.member", str, Colon, value);
        var members = _g.Repeat("any.members", member, Comma, 0, -1);
        var array = _g.Repeat("any.items", value, Comma, 0, -1);
        _g.AddRule(value, LBrace, members, RBrace);
        _g.AddRule(value, LBracket, array, RBracket);
        _g.AddRule(value, str);
        _g.AddRule(value, _g.Lexeme(_numbers.AnyNumber(), "number"));
        _g.AddRule(value, _g.Literal(True));
        _g.AddRule(value, _g.Literal(False));
        _g.AddRule(value, _g.Literal(Null));
        return value;
    }

    /// <summary>
    /// Exactly the value <paramref name="v"/> (numbers: every decimal spelling of the same number, integral ones as
    /// "n.0" too only when <paramref name="integralFloats"/>; objects: their keys in the given order).
    /// </summary>
    public Symbol Literal(JsonElement v, bool integralFloats)
    {
        switch (v.ValueKind)
        {
            case JsonValueKind.Null: return _g.Literal(Null);
            case JsonValueKind.True: return _g.Literal(True);
            case JsonValueKind.False: return _g.Literal(False);
            case JsonValueKind.String: return _g.Lexeme(StringLiteral(v.GetString()!));
            case JsonValueKind.Number:
            {
                var d = Dec.Parse(v.GetRawText())
                    ?? throw new ConstraintCompileException($"number {v.GetRawText()} out of range");
                return _g.Lexeme(_numbers.Equal(d, !d.IsInteger || integralFloats), d.ToString());
            }
            case JsonValueKind.Array:
            {
                var items = new List<Symbol> { LBracket };
                bool first = true;
                foreach (var item in v.EnumerateArray())
                {
                    if (!first) items.Add(Comma);
                    first = false;
                    items.Add(Literal(item, integralFloats));
                }
                items.Add(RBracket);
                return _g.Sequence("const.array", items.ToArray());
            }
            case JsonValueKind.Object:
            {
                var items = new List<Symbol> { LBrace };
                bool first = true;
                foreach (var (name, value) in DistinctProperties(v))
                {
                    if (!first) items.Add(Comma);
                    first = false;
                    items.Add(_g.Lexeme(StringLiteral(name)));
                    items.Add(Colon);
                    items.Add(Literal(value, integralFloats));
                }
                items.Add(RBrace);
                return _g.Sequence("const.object", items.ToArray());
            }
            default: throw new ConstraintCompileException($"unexpected JSON value kind {v.ValueKind}");
        }
    }

    /// <summary>An object's properties with duplicate names resolved the way parsers do (the last one wins).</summary>
    public static List<(string Name, JsonElement Value)> DistinctProperties(JsonElement obj)
    {
        var list = new List<(string, JsonElement)>();
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in obj.EnumerateObject())
        {
            if (index.TryGetValue(p.Name, out int i)) list[i] = (p.Name, p.Value);
            else
            {
                index[p.Name] = list.Count;
                list.Add((p.Name, p.Value));
            }
        }
        return list;
    }

    /// <summary>JSON Schema equality: numbers by value (1 == 1.0), booleans apart from numbers, objects regardless of
    /// key order.</summary>
    public static bool JsonEquals(JsonElement a, JsonElement b)
    {
        var ka = Kind(a.ValueKind);
        if (ka != Kind(b.ValueKind)) return false;
        switch (a.ValueKind)
        {
            case JsonValueKind.Null: return true;
            case JsonValueKind.True:
            case JsonValueKind.False: return a.ValueKind == b.ValueKind;
            case JsonValueKind.String: return a.GetString() == b.GetString();
            case JsonValueKind.Number:
            {
                var da = Dec.Parse(a.GetRawText());
                var db = Dec.Parse(b.GetRawText());
                return da is not null && db is not null && da.Value.CompareTo(db.Value) == 0;
            }
            case JsonValueKind.Array:
            {
                if (a.GetArrayLength() != b.GetArrayLength()) return false;
                using var ea = a.EnumerateArray().GetEnumerator();
                using var eb = b.EnumerateArray().GetEnumerator();
                while (ea.MoveNext() && eb.MoveNext())
                    if (!JsonEquals(ea.Current, eb.Current)) return false;
                return true;
            }
            case JsonValueKind.Object:
            {
                var pa = DistinctProperties(a);
                var pb = DistinctProperties(b).ToDictionary(p => p.Name, p => p.Value, StringComparer.Ordinal);
                if (pa.Count != pb.Count) return false;
                foreach (var (name, value) in pa)
                    if (!pb.TryGetValue(name, out var other) || !JsonEquals(value, other)) return false;
                return true;
            }
            default: return false;
        }
    }

    private static int Kind(JsonValueKind k) => k switch
    {
        JsonValueKind.True or JsonValueKind.False => 1,
        _ => (int)k + 10,
    };
}
