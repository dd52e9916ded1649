using System.Globalization;
using System.Numerics;
using System.Text;
using System.Text.Json;
using MiniCPM4.Constraints.Grammars;
using MiniCPM4.Constraints.Regex;

namespace MiniCPM4.Constraints.Json;

/// <summary>One compilation of <see cref="JsonSchemaCompiler"/>: a nonterminal per conjunction of subschemas.</summary>
internal sealed partial class SchemaCompiler
{
    private readonly SchemaResolver _resolver;
    private readonly JsonSchemaOptions _options;
    private readonly RegexBuilder _rb;
    private readonly GrammarBuilder _g;
    private readonly NumberRanges _numbers;
    private readonly JsonValueGrammar _values;
    /// <summary>Whether integers may be written n.0 (draft 6 on; not draft 4, where 1.0 is not an integer).</summary>
    private readonly bool _integralFloats;
    /// <summary>Whether a $ref makes its sibling keywords ignored (drafts 4 to 7).</summary>
    private readonly bool _refOverridesSiblings;
    private readonly Dictionary<string, Symbol> _nonterminals = new(StringComparer.Ordinal);
    private readonly Queue<(Conj Conj, Symbol Nt)> _pending = new();
    private readonly Dictionary<string, Shape> _shapes = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _patternRegexes = new(StringComparer.Ordinal);
    private Symbol? _never;
    private int _nonterminalCount;
    private int _branchCount;

    /// <summary>A compilation into <paramref name="grammar"/> (a fresh builder when null), so that several schemas
    /// can share one grammar (<see cref="JsonSchemaCompiler.CompilePythonCalls"/>).</summary>
    public SchemaCompiler(JsonElement root, JsonSchemaOptions options, GrammarBuilder? grammar = null)
    {
        _options = options;
        _g = grammar ?? new GrammarBuilder(new RegexBuilder());
        _rb = _g.Regex;
        bool draft4 = false;
        if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("$schema", out var s)
            && s.ValueKind == JsonValueKind.String)
        {
            var uri = s.GetString()!;
            if (uri.Contains("draft-03")) throw new ConstraintCompileException("draft 3 schemas are not supported",
                "$schema", "");
            draft4 = uri.Contains("draft-04");
            _refOverridesSiblings = draft4 || uri.Contains("draft-06") || uri.Contains("draft-07");
        }
        _integralFloats = !draft4 && options.IntegralFloats;
        _resolver = new SchemaResolver(root, draft4Ids: draft4 || !HasDollarId(root));
        _numbers = new NumberRanges(_rb);
        _values = new JsonValueGrammar(_g, _numbers, pythonLiterals: options.PythonCall is not null);
        if (options.MaxWhitespace > 0)
        {
            Span<bool> ws = stackalloc bool[256];
            ws[' '] = ws['\t'] = ws['\n'] = ws['\r'] = true;
            _g.SkipRegex = _rb.Repeat(_rb.Bytes(ws), 0, options.MaxWhitespace);
        }
    }

    private static bool HasDollarId(JsonElement root) =>
        root.ValueKind == JsonValueKind.Object && root.TryGetProperty("$id", out _);

    public Grammar Run() => _g.Build(Emit());

    /// <summary>Adds the schema's rules to the grammar builder and returns its start symbol.</summary>
    public Symbol Emit()
    {
        var start = _options.PythonCall is { } function ? CallGrammar(function) : Ref(Conj.Of(""));
        while (_pending.Count > 0)
        {
            var (conj, nt) = _pending.Dequeue();
            Fill(conj, nt);
        }
        return start;
    }

    // ---------------------------------------------------------------------------------------------------------
    // Nonterminals.

    /// <summary>The nonterminal of a conjunction (created on first use, filled later).</summary>
    private Symbol Ref(Conj conj)
    {
        if (_nonterminals.TryGetValue(conj.Key, out var nt)) return nt;
        nt = NewNonterminal(conj.ToString());
        _nonterminals[conj.Key] = nt;
        _pending.Enqueue((conj, nt));
        return nt;
    }

    private Symbol NewNonterminal(string name)
    {
        if (++_nonterminalCount > _options.MaxNonterminals)
            throw new ConstraintCompileException(
                $"the schema needs more than {_options.MaxNonterminals} grammar nonterminals");
        return _g.Nonterminal(name);
    }

    /// <summary>A terminal that never matches: the rule of an empty language.</summary>
    private Symbol Never => _never ??= _g.Lexeme(RegexBuilder.Nothing, "never");

    /// <summary>A nonterminal with these alternatives (none: the empty language).</summary>
    private Symbol Alternatives(string name, List<Symbol[]> alternatives)
    {
        var nt = NewNonterminal(name);
        AddAlternatives(nt, alternatives);
        return nt;
    }

    private void AddAlternatives(Symbol nt, List<Symbol[]> alternatives)
    {
        if (alternatives.Count == 0) _g.AddRule(nt, Never);
        foreach (var a in alternatives) _g.AddRule(nt, a);
    }

    private void Fill(Conj conj, Symbol nt)
    {
        var shape = ShapeOf(conj);
        var alternatives = new List<Symbol[]>();
        if (!shape.IsEmpty)
        {
            if (shape.Groups.Count > 0) Distribute(conj, shape, alternatives);
            else EmitTyped(shape, alternatives);
        }
        AddAlternatives(nt, alternatives);
    }

    /// <summary>anyOf / oneOf (and the groups negations and dependencies make): the first pending group,
    /// distributed over the rest of the conjunction. A oneOf alternative also gets the negation of every other
    /// alternative it is not provably disjoint from, so exactly one holds.</summary>
    private void Distribute(Conj conj, Shape shape, List<Symbol[]> alternatives)
    {
        var group = shape.Groups[0];
        if (group.Alternatives.Count > _options.MaxAlternatives)
            throw new ConstraintCompileException($"more than {_options.MaxAlternatives} alternatives", group.Keyword,
                group.At);
        _branchCount += group.Alternatives.Count;
        if (_branchCount > _options.MaxBranches)
            throw new ConstraintCompileException(
                $"distributing anyOf/oneOf/not/if/dependencies over the rest of the schema needs more than " +
                    $"{_options.MaxBranches} branches",
                group.Keyword, group.At);
        var consumed = "!" + group.Key;
        var branches = new List<Conj>();
        for (int i = 0; i < group.Alternatives.Count; i++)
        {
            var entries = new List<string>(conj.Entries);
            entries.AddRange(group.Alternatives[i]);
            entries.Add(consumed);
            if (group.One)
            {
                var mine = conj.With(group.Alternatives[i]).With(consumed);
                for (int j = 0; j < group.Alternatives.Count; j++)
                {
                    if (j == i) continue;
                    var other = conj.With(group.Alternatives[j]).With(consumed);
                    if (ShapeOf(mine).IsEmpty || Disjoint(mine, other, 0)) continue;
                    foreach (var e in group.Alternatives[j])
                    {
                        if (e.Length > 0 && e[0] != '/')
                            throw new ConstraintCompileException("oneOf alternatives may overlap", group.Keyword,
                                group.At);
                        entries.Add("-" + e);
                    }
                }
            }
            var branch = new Conj(entries);
            try
            {
                if (!ShapeOf(branch).IsEmpty) branches.Add(branch);
            }
            catch (ConstraintCompileException e) when (group.One)
            {
                throw new ConstraintCompileException(
                    "the alternatives may overlap, and telling them apart needs a negation that is not enforced: "
                        + e.Message,
                    group.Keyword, group.At, e);
            }
        }
        foreach (var b in branches) alternatives.Add([Ref(b)]);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Typed emission.

    private void EmitTyped(Shape shape, List<Symbol[]> alternatives)
    {
        var types = EffectiveTypes(shape);
        if (shape.Enum is not null)
        {
            var kept = new List<JsonElement>();
            foreach (var v in shape.Enum)
            {
                if (Satisfies(shape, v, 0) && !kept.Any(k => JsonValueGrammar.JsonEquals(k, v))) kept.Add(v);
            }
            bool integralFloats = _integralFloats || (types & JsonTypes.Fraction) != 0;
            foreach (var v in kept) alternatives.Add([_values.Literal(v, integralFloats)]);
            return;
        }
        bool Excluded(JsonValueKind kind) => shape.Excluded.Any(e => e.ValueKind == kind);
        if ((types & JsonTypes.Array) != 0 && Excluded(JsonValueKind.Array))
            throw new ConstraintCompileException("excluding array values (not enum/const) is not enforced", "not",
                shape.EnumAt);
        if ((types & JsonTypes.Object) != 0 && Excluded(JsonValueKind.Object))
            throw new ConstraintCompileException("excluding object values (not enum/const) is not enforced", "not",
                shape.EnumAt);
        if ((types & JsonTypes.Null) != 0 && !Excluded(JsonValueKind.Null)) alternatives.Add(
            [_g.Literal(_values.Null)]);
        if ((types & JsonTypes.Boolean) != 0)
        {
            if (!Excluded(JsonValueKind.True)) alternatives.Add([_g.Literal(_values.True)]);
            if (!Excluded(JsonValueKind.False)) alternatives.Add([_g.Literal(_values.False)]);
        }
        if ((types & JsonTypes.Number) != 0)
        {
            int r = NumberRegex(shape, types);
            if (!_rb.IsDead(r)) alternatives.Add([_g.Lexeme(r, "number")]);
        }
        if ((types & JsonTypes.String) != 0)
        {
            int r = _values.Quoted(StringContent(shape));
            if (!_rb.IsDead(r)) alternatives.Add([_g.Lexeme(r, "string")]);
        }
        if ((types & JsonTypes.Array) != 0 && ArrayGrammar(shape) is Symbol a) alternatives.Add([a]);
        if ((types & JsonTypes.Object) != 0 && ObjectGrammar(shape) is Symbol o) alternatives.Add([o]);
    }

    /// <summary>The types, less those the shape's bounds make empty (multipleOf 1 leaves integers only).</summary>
    private static JsonTypes EffectiveTypes(Shape shape)
    {
        var types = shape.Types;
        if (shape.MultipleOf.Count > 0 && (types & JsonTypes.Number) != 0)
        {
            // Every supported multipleOf is a positive integer: its multiples are integers.
            foreach (var (m, at) in shape.MultipleOf) CheckMultipleOf(m, at);
            types &= ~JsonTypes.Fraction;
        }
        if (shape.MinLength > 0 && shape.MaxLength >= 0 && shape.MinLength > shape.MaxLength) types &= ~JsonTypes
            .String;
        if (shape.MaxItems >= 0 && shape.MinItems > shape.MaxItems) types &= ~JsonTypes.Array;
        if (shape.MaxProperties >= 0 && shape.MinProperties > shape.MaxProperties) types &= ~JsonTypes.Object;
        return types;
    }

    private static void CheckMultipleOf(Dec m, string at)
    {
        if (m.Negative || m.IsZero) throw new ConstraintCompileException("multipleOf must be positive", "multipleOf",
            at);
        if (!m.IsInteger || !DividesPowerOfTen(m))
            throw new ConstraintCompileException(
                $"multipleOf {m} is not enforced (only positive integers dividing a power of ten: 1, 2, 5, 10, 25, " +
                    $"...)", "multipleOf", at);
    }

    private static bool DividesPowerOfTen(Dec m)
    {
        if (m.Int.Length > 6) return false;
        var n = BigInteger.Parse(m.Int, CultureInfo.InvariantCulture);
        while (n % 2 == 0) n /= 2;
        while (n % 5 == 0) n /= 5;
        return n == 1;
    }

    private int NumberRegex(Shape shape, JsonTypes types)
    {
        bool integer = (types & JsonTypes.Fraction) == 0;
        bool pointZero = _integralFloats && shape.MultipleOf.Count == 0;
        Dec? lo = shape.Lo, hi = shape.Hi;
        bool loEx = shape.LoExclusive, hiEx = shape.HiExclusive;
        var excluded = shape.Excluded.Where(e => e.ValueKind == JsonValueKind.Number).ToList();
        bool fractionOnly = (types & JsonTypes.Integer) == 0;
        int r = _numbers.Range(lo, loEx, hi, hiEx, integer, pointZero, decimalOnly: excluded.Count > 0 || fractionOnly);
        if (fractionOnly) r = _rb.And(r, _numbers.NonIntegral());
        foreach (var (m, _) in shape.MultipleOf)
            if (m.Int != "1") r = _rb.And(r, MultiplesOf(m));
        foreach (var e in excluded)
            if (Dec.Parse(e.GetRawText()) is Dec d) r = _rb.And(r, _rb.Not(_numbers.Equal(d)));
        return r;
    }

    /// <summary>Integers (no fraction) that are multiples of <paramref name="m"/>, which divides 10^k: the last k
    /// digits decide.</summary>
    private int MultiplesOf(Dec m)
    {
        var n = BigInteger.Parse(m.Int, CultureInfo.InvariantCulture);
        int k = 0;
        var p = BigInteger.One;
        while (p % n != 0) { p *= 10; k++; }
        if (k > 3) throw new ConstraintCompileException($"multipleOf {m} is too large");
        var digit = _rb.ByteRange((byte)'0', (byte)'9');
        var alts = new List<int>();
        for (var v = BigInteger.Zero; v < p; v += n)
        {
            // Whole numbers below 10^k (no leading zeros), and any longer number ending in these k digits.
            alts.Add(_rb.Literal(v.ToString(CultureInfo.InvariantCulture)));
            alts.Add(
                _rb.Concat(_rb.ByteRange((byte)'1', (byte)'9'), _rb.Star(digit),
                _rb.Literal(v.ToString(CultureInfo.InvariantCulture).PadLeft(k, '0'))));
        }
        return _rb.Concat(_rb.Optional(_rb.Literal("-")), _rb.Or(alts.ToArray()));
    }

    private static readonly HashSet<string> SupportedFormats =
        ["date", "time", "date-time", "email", "uuid", "ipv4", "ipv6", "hostname", "uri"];

    /// <summary>Standard formats this compiler cannot enforce exactly: compile errors (unknown formats are
    /// annotations).</summary>
    private static readonly HashSet<string> UnsupportedFormats =
    [
        "uri-reference", "iri", "iri-reference", "idn-email", "idn-hostname", "uri-template", "json-pointer",
        "relative-json-pointer", "regex", "duration",
    ];

    /// <summary>The string content regex (no quotes) of a shape.</summary>
    private int StringContent(Shape shape)
    {
        int r = _values.AnyStringContent;
        if (shape.MinLength > 0 || shape.MaxLength >= 0)
        {
            if (shape.MaxLength >= 0 && shape.MinLength > shape.MaxLength) return RegexBuilder.Nothing;
            r = _rb.Repeat(_rb.AnyCodePoint(CharEncoding.JsonStringContent), shape.MinLength, shape.MaxLength);
        }
        foreach (var (p, at) in shape.Patterns) r = _rb.And(r, PatternRegex(p, at));
        foreach (var extra in shape.StringRegexes) r = _rb.And(r, extra);
        foreach (var e in shape.Excluded)
            if (e.ValueKind == JsonValueKind.String) r =
                _rb.And(r, _rb.Not(_rb.Text(e.GetString()!, CharEncoding.JsonStringContent)));
        foreach (var (f, at) in shape.Formats)
        {
            if (SupportedFormats.Contains(f)
                && StringFormats.Regex(_rb, f, CharEncoding.JsonStringContent) is int fr) r = _rb.And(r, fr);
            else if (SupportedFormats.Contains(f) || UnsupportedFormats.Contains(f))
                throw new ConstraintCompileException($"format '{f}' is not enforced", "format", at);
        }
        return r;
    }

    private int PatternRegex(string pattern, string at)
    {
        if (_patternRegexes.TryGetValue(pattern, out int r)) return r;
        try
        {
            r = _rb.Pattern(pattern, CharEncoding.JsonStringContent, search: true);
        }
        catch (RegexNotSupportedException e)
        {
            throw new ConstraintCompileException($"pattern '{pattern}': {e.Message}", "pattern", at, e);
        }
        _patternRegexes[pattern] = r;
        return r;
    }

    // ---------------------------------------------------------------------------------------------------------
    // Arrays.

    private static Conj ItemConj(Shape shape, int index)
    {
        var entries = new List<string>();
        foreach (var part in shape.ArrayParts)
        {
            if (index < part.Prefix.Count) entries.Add(part.Prefix[index]);
            else if (part.Rest is string rest) entries.Add(rest);
        }
        return new Conj(entries);
    }

    private static Conj RestConj(Shape shape) =>
        new(shape.ArrayParts.Where(p => p.Rest is not null).Select(p => p.Rest!));

    private Symbol? ArrayGrammar(Shape shape)
    {
        int prefix = shape.ArrayParts.Count == 0 ? 0 : shape.ArrayParts.Max(p => p.Prefix.Count);
        int min = shape.MinItems, max = shape.MaxItems;
        var items = new List<Conj>();
        for (int i = 0; i < prefix; i++)
        {
            var c = ItemConj(shape, i);
            if (ShapeOf(c).IsEmpty)
            {
                max = max < 0 ? i : Math.Min(max, i);
                break;
            }
            items.Add(c);
        }
        prefix = items.Count;
        var rest = RestConj(shape);
        if (ShapeOf(rest).IsEmpty) max = max < 0 ? prefix : Math.Min(max, prefix);
        if (max >= 0 && min > max) return null;
        if (min > 100_000) throw new ConstraintCompileException("minItems is too large", "minItems", null);
        if (shape.UniqueAt is string uniqueAt && !(max >= 0 && max <= 1))
            return UniqueArray(shape, items, rest, min, max, uniqueAt);

        // Tail(i): the items from position i on, i items written already.
        var tails = new Symbol?[prefix + 1];
        Symbol Tail(int i)
        {
            if (tails[i] is Symbol t) return t;
            var alts = new List<Symbol[]>();
            if (i < prefix)
            {
                if (i >= min) alts.Add([]);
                if (max < 0 || i < max)
                {
                    var item = Ref(items[i]);
                    alts.Add(i > 0 ? [_values.Comma, item, Tail(i + 1)] : [item, Tail(i + 1)]);
                }
            }
            else
            {
                int lo = Math.Max(0, min - i);
                int hi = max < 0 ? -1 : max - i;
                if (lo == 0) alts.Add([]);
                if (hi != 0)
                {
                    var item = Ref(rest);
                    if (i == 0) alts.Add([_g.Repeat("items", item, _values.Comma, Math.Max(1, lo), hi)]);
                    else alts.Add([_values.Comma, _g.Repeat("items", item, _values.Comma, Math.Max(1, lo), hi)]);
                }
            }
            var nt = Alternatives("array.tail" + i, alts);
            tails[i] = nt;
            return nt;
        }
        var body = Tail(0);
        return _g.Sequence("array", _values.LBracket, body, _values.RBracket);
    }

    /// <summary>uniqueItems over the values of a small enum: a nonterminal per set of values used so far.</summary>
    private Symbol? UniqueArray(Shape shape, List<Conj> prefixItems, Conj rest, int min, int max, string at)
    {
        var itemShape = ShapeOf(rest);
        if (prefixItems.Count > 0 || itemShape.Groups.Count > 0 || itemShape.Enum is null)
            throw new ConstraintCompileException(
                "uniqueItems is enforced only for arrays of at most one item or items from an enum", "uniqueItems", at);
        var values = new List<JsonElement>();
        foreach (var v in itemShape.Enum)
            if (Satisfies(itemShape, v, 0) && !values.Any(k => JsonValueGrammar.JsonEquals(k, v))) values.Add(v);
        if (values.Count > 10)
            throw new ConstraintCompileException("uniqueItems is enforced only for enums of at most 10 values",
                "uniqueItems", at);
        bool integralFloats = _integralFloats || (EffectiveTypes(itemShape) & JsonTypes.Fraction) != 0;
        var literals = values.Select(v => _values.Literal(v, integralFloats)).ToArray();
        int limit = max < 0 ? values.Count : Math.Min(max, values.Count);
        if (min > limit) return null;
        var memo = new Dictionary<int, Symbol>();
        Symbol After(int used)
        {
            if (memo.TryGetValue(used, out var s)) return s;
            int count = BitOperations.PopCount((uint)used);
            var alts = new List<Symbol[]>();
            if (count >= min) alts.Add([]);
            if (count < limit)
                for (int i = 0; i < literals.Length; i++)
                    if ((used & (1 << i)) == 0)
                        alts.Add(count > 0 ? [_values.Comma, literals[i], After(used | (1 << i))]
                            : [literals[i], After(used | (1 << i))]);
            s = Alternatives("unique", alts);
            memo[used] = s;
            return s;
        }
        return _g.Sequence("array", _values.LBracket, After(0), _values.RBracket);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Objects.

    /// <summary>The declared property names, in schema order (required names declared nowhere last).</summary>
    private static List<string> DeclaredNames(Shape shape)
    {
        var names = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var part in shape.ObjectParts)
            foreach (var (name, _) in part.Properties)
                if (seen.Add(name)) names.Add(name);
        foreach (var name in shape.Required)
            if (seen.Add(name)) names.Add(name);
        foreach (var name in shape.ExtraProperties.Keys)
            if (seen.Add(name)) names.Add(name);
        foreach (var name in shape.Forbidden)
            if (seen.Add(name)) names.Add(name);
        return names;
    }

    private bool KeyMatches(string pattern, string at, string key) =>
        !_rb.IsDead(_rb.And(PatternRegex(pattern, at), _rb.Text(key, CharEncoding.JsonStringContent)));

    /// <summary>The schema a property's value must satisfy: its declarations, the patterns its key matches, and the
    /// additionalProperties of the parts that neither declare nor match it.</summary>
    private Conj PropertyConj(Shape shape, string key)
    {
        var entries = new List<string>();
        if (shape.Forbidden.Contains(key)) return Conj.Never;
        if (shape.ExtraProperties.TryGetValue(key, out var extra)) entries.AddRange(extra);
        foreach (var part in shape.ObjectParts)
        {
            bool covered = false;
            foreach (var (name, ptr) in part.Properties)
                if (name == key)
                {
                    entries.Add(ptr);
                    covered = true;
                }
            foreach (var (pattern, ptr) in part.Patterns)
                if (KeyMatches(pattern, ptr, key))
                {
                    entries.Add(ptr);
                    covered = true;
                }
            if (!covered && part.Additional is string add) entries.Add(add);
        }
        return new Conj(entries);
    }

    /// <summary>The root object as a Python call, <c>function(name=value, ...)</c> (see
    /// <see cref="JsonSchemaOptions.PythonCall"/>).</summary>
    private Symbol CallGrammar(string function)
    {
        if (!IsPythonIdentifier(function))
            throw new ConstraintCompileException($"'{function}' is not a Python identifier", "PythonCall");
        var shape = ShapeOf(Conj.Of(""));
        if (shape.IsEmpty || shape.Groups.Count > 0 || (shape.Types & JsonTypes.Object) == 0)
            throw new ConstraintCompileException(
                "keyword arguments need an object schema (without anyOf/oneOf/not at the top)",
                "type", "");
        return ObjectGrammar(shape, function) ?? Never;
    }

    private static bool IsPythonIdentifier(string s) =>
        s.Length > 0 && (char.IsAsciiLetter(s[0]) || s[0] == '_')
            && s.All(c => char.IsAsciiLetterOrDigit(c) || c == '_');

    private Symbol? ObjectGrammar(Shape shape, string? call = null)
    {
        var names = DeclaredNames(shape);
        var required = new HashSet<string>(shape.Required, StringComparer.Ordinal);
        var props = new List<(string Name, Symbol Member, bool Required)>();
        int? keyNames = PropertyNamesRegex(shape);
        foreach (var name in names)
        {
            var conj = PropertyConj(shape, name);
            bool isRequired = required.Contains(name);
            if (ShapeOf(conj).IsEmpty
                || (keyNames is int kn && _rb.IsDead(_rb.And(kn, _rb.Text(name, CharEncoding.JsonStringContent)))))
            {
                if (isRequired) return null;
                continue;
            }
            if (call is not null && !IsPythonIdentifier(name))
                throw new ConstraintCompileException(
                    $"property '{name}' is not a Python identifier, so it cannot be a keyword argument",
                    "properties", "");
            var member = call is null
                ? _g.Sequence("property " + name, _g.Lexeme(_values.StringLiteral(name), "\"" + name + "\""),
                    _values.Colon, Ref(conj))
                : _g.Sequence("argument " + name, _g.Literal(name + "="), Ref(conj));
            props.Add((name, member, isRequired));
        }
        var additional = call is null ? AdditionalMember(shape, names, keyNames) : null;
        int n = props.Count;
        int minP = shape.MinProperties, maxP = shape.MaxProperties;
        int saturate = maxP >= 0 ? maxP : Math.Max(minP, 1);
        // The undeclared properties, after `count` declared ones.
        var tails = new Dictionary<int, Symbol>();
        Symbol Tail(int count)
        {
            if (tails.TryGetValue(count, out var s)) return s;
            var alts = new List<Symbol[]>();
            int need = Math.Max(0, minP - count);
            int upper = maxP < 0 ? -1 : maxP - count;
            if (need == 0) alts.Add([]);
            if (additional is Symbol add && upper != 0)
            {
                if (need > 1)
                    throw new ConstraintCompileException(
                        "minProperties would need several undeclared properties (their keys could repeat)",
                            "minProperties",
                        shape.MinPropertiesAt);
                var list = _g.Repeat("additional", add, _values.Comma, Math.Max(1, need), upper);
                alts.Add(count > 0 ? [_values.Comma, list] : [list]);
            }
            s = Alternatives("additional properties", alts);
            tails[count] = s;
            return s;
        }
        // Declared properties in schema order: Rest(i, count), properties i.. to come, count written (saturated).
        var memo = new Dictionary<(int, int), Symbol>();
        Symbol Rest(int i, int count)
        {
            if (i == n) return Tail(count);
            if (memo.TryGetValue((i, count), out var s)) return s;
            var alts = new List<Symbol[]>();
            var (_, member, isRequired) = props[i];
            if (maxP < 0 || count + 1 <= maxP)
            {
                var next = Rest(i + 1, Math.Min(count + 1, saturate));
                alts.Add(count > 0 ? [_values.Comma, member, next] : [member, next]);
            }
            if (!isRequired) alts.Add([Rest(i + 1, count)]);
            s = Alternatives("properties", alts);
            memo[(i, count)] = s;
            return s;
        }
        // Declared properties in any order (small objects, when the options allow it): AnyOrder(set written so far).
        int requiredMask = 0;
        for (int i = 0; i < n; i++)
            if (props[i].Required) requiredMask |= 1 << i;
        var masks = new Dictionary<int, Symbol>();
        Symbol AnyOrder(int mask)
        {
            if (masks.TryGetValue(mask, out var s)) return s;
            int count = BitOperations.PopCount((uint)mask);
            var alts = new List<Symbol[]>();
            for (int i = 0; i < n; i++)
            {
                if ((mask & (1 << i)) != 0 || (maxP >= 0 && count + 1 > maxP)) continue;
                var next = AnyOrder(mask | (1 << i));
                alts.Add(count > 0 ? [_values.Comma, props[i].Member, next] : [props[i].Member, next]);
            }
            if ((mask & requiredMask) == requiredMask) alts.Add([Tail(count)]);
            s = Alternatives("properties", alts);
            masks[mask] = s;
            return s;
        }
        var body = n > 0 && n <= Math.Min(_options.AnyOrderMaxProperties, 12) ? AnyOrder(0) : Rest(0, 0);
        return call is null
            ? _g.Sequence("object", _values.LBrace, body, _values.RBrace)
            : _g.Sequence("call", _g.Literal(call + "("), body, _g.Literal(")"));
    }

    /// <summary>The string content regex of the keys propertyNames allows (null: any key).</summary>
    private int? PropertyNamesRegex(Shape shape)
    {
        if (shape.PropertyNames.Count == 0) return null;
        var conj = new Conj(shape.PropertyNames);
        var names = ShapeOf(conj);
        if (names.IsEmpty) return RegexBuilder.Nothing;
        if (names.Groups.Count > 0)
            throw new ConstraintCompileException("propertyNames with anyOf/oneOf/not is not enforced", "propertyNames",
                shape.PropertyNames[0]);
        if ((EffectiveTypes(names) & JsonTypes.String) == 0) return RegexBuilder.Nothing;
        int r = StringContent(names);
        if (names.Enum is not null)
            r = _rb.And(r, _rb.Or(names.Enum.Where(e => e.ValueKind == JsonValueKind.String)
                .Select(e => _rb.Text(e.GetString()!, CharEncoding.JsonStringContent)).Append(RegexBuilder.Nothing)
                    .ToArray()));
        return r;
    }

    /// <summary>One undeclared property (key: value), over the key regions the patterns cut; null when none is
    /// allowed.</summary>
    private Symbol? AdditionalMember(Shape shape, List<string> declared, int? keyNames)
    {
        int keys = keyNames ?? _values.AnyStringContent;
        if (declared.Count > 0)
            keys = _rb.And(keys,
                _rb.Not(_rb.Or(declared.Select(d => _rb.Text(d, CharEncoding.JsonStringContent)).ToArray())));
        var allPatterns = new List<(string Pattern, string Ptr, ObjectPart Part)>();
        foreach (var part in shape.ObjectParts)
            foreach (var (p, ptr) in part.Patterns) allPatterns.Add((p, ptr, part));
        // Regions: a key regex and which patterns its keys match.
        var regions = new List<(int Regex, HashSet<int> Matched)> { (keys, []) };
        for (int pi = 0; pi < allPatterns.Count; pi++)
        {
            int pr = PatternRegex(allPatterns[pi].Pattern, allPatterns[pi].Ptr);
            var next = new List<(int, HashSet<int>)>();
            foreach (var (r, matched) in regions)
            {
                int inside = _rb.And(r, pr);
                if (!_rb.IsDead(inside)) next.Add((inside, [.. matched, pi]));
                int outside = _rb.And(r, _rb.Not(pr));
                if (!_rb.IsDead(outside)) next.Add((outside, matched));
            }
            regions = next;
            if (regions.Count > _options.MaxAlternatives)
                throw new ConstraintCompileException("too many combinations of patternProperties", "patternProperties",
                    allPatterns[pi].Ptr);
        }
        var alts = new List<Symbol[]>();
        foreach (var (r, matched) in regions)
        {
            var entries = new List<string>();
            foreach (var part in shape.ObjectParts)
            {
                bool any = false;
                for (int pi = 0; pi < allPatterns.Count; pi++)
                    if (allPatterns[pi].Part == part && matched.Contains(pi))
                    {
                        entries.Add(allPatterns[pi].Ptr);
                        any = true;
                    }
                if (!any && part.Additional is string add) entries.Add(add);
            }
            var conj = new Conj(entries);
            if (ShapeOf(conj).IsEmpty) continue;
            alts.Add([_g.Lexeme(_values.Quoted(r), "key"), _values.Colon, Ref(conj)]);
        }
        if (alts.Count == 0) return null;
        return Alternatives("additional", alts);
    }
}
