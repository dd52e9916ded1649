using System.Text.Json;

namespace MiniCPM4.Constraints.Json;

/// <summary>JSON types as bits; "number" is <see cref="Integer"/> | <see cref="Fraction"/>.</summary>
[Flags]
internal enum JsonTypes
{
    None = 0,
    Null = 1,
    Boolean = 2,
    Integer = 4,
    /// <summary>Numbers that are not integers.</summary>
    Fraction = 8,
    String = 16,
    Array = 32,
    Object = 64,
    Number = Integer | Fraction,
    All = Null | Boolean | Number | String | Array | Object,
}

/// <summary>
/// A conjunction of subschemas (sorted, distinct entries): the schema "all of these". The empty conjunction is the
/// true schema. Entries:
/// <list type="bullet">
/// <item>"" or "/a/b": the subschema at that JSON pointer;</item>
/// <item>"-" + pointer: its negation (see <c>SchemaCompiler.Negate</c>);</item>
/// <item>"!" + key: the anyOf/oneOf group with that key is already distributed into this conjunction;</item>
/// <item>synthetic constraints: <see cref="NeverEntry"/> (false), "#types:n" (the types in mask n), "#require:name",
/// "#forbid:name" (objects without that key), "#exclude:pointer" (not the enum/const values there), "#nkw:pointer"
/// (the negation of one keyword, by its pointer), "#prop:" + name + U+0002 + entry (the value of that property, when
/// present, also satisfies entry).</item>
/// </list>
/// </summary>
internal sealed class Conj
{
    public const string NeverEntry = "#never";
    public static readonly Conj Any = new([]);
    public static readonly Conj Never = new([NeverEntry]);

    public Conj(IEnumerable<string> entries)
    {
        // Entries keep their first-seen order (it decides the order of declared properties); the key is sorted.
        Entries = entries.Distinct(StringComparer.Ordinal).ToArray();
        Key = Entries.Length + ":" + string.Join("\u0001", Entries.Order(StringComparer.Ordinal));
    }

    public string[] Entries { get; }
    public string Key { get; }

    public static Conj Of(params string[] entries) => new(entries);
    public Conj With(params string[] more) => new(Entries.Concat(more));
    public Conj With(Conj other) => new(Entries.Concat(other.Entries));
    public override string ToString() => Entries.Length == 0 ? "true"
        : string.Join(" & ", Entries.Select(e => "#" + e));
}

/// <summary>One schema object's properties / patternProperties / additionalProperties.</summary>
internal sealed class ObjectPart
{
    public required string At { get; init; }
    public List<(string Name, string Pointer)> Properties { get; } = [];
    public List<(string Pattern, string Pointer)> Patterns { get; } = [];
    /// <summary>The additionalProperties schema (null: any value).</summary>
    public string? Additional { get; set; }
}

/// <summary>One schema object's items / prefixItems / additionalItems.</summary>
internal sealed class ArrayPart
{
    public List<string> Prefix { get; } = [];
    /// <summary>The schema of the items after the prefix (null: any).</summary>
    public string? Rest { get; set; }
}

/// <summary>
/// An anyOf / oneOf not yet distributed: each alternative is a list of conjunction entries. <see cref="Key"/> marks
/// it consumed ("!" + Key) in the branches; <see cref="Keyword"/> and <see cref="At"/> are for messages.
/// </summary>
internal sealed record Group(string Key, bool One, List<string[]> Alternatives, string Keyword, string At);

/// <summary>The keywords of a <see cref="Conj"/>, merged: what the grammar is built from.</summary>
internal sealed class Shape
{
    public bool Never;
    public JsonTypes Types = JsonTypes.All;
    /// <summary>The allowed values (null: any).</summary>
    public List<JsonElement>? Enum;
    public string? EnumAt;

    // Numbers.
    public Dec? Lo, Hi;
    public bool LoExclusive, HiExclusive;
    public List<(Dec Value, string At)> MultipleOf = [];

    // Strings.
    public int MinLength;
    public int MaxLength = -1;
    public List<(string Pattern, string At)> Patterns = [];
    public List<(string Format, string At)> Formats = [];

    // Arrays.
    public List<ArrayPart> ArrayParts = [];
    public int MinItems;
    public int MaxItems = -1;
    public string? UniqueAt;

    // Objects.
    public List<ObjectPart> ObjectParts = [];
    public List<string> Required = [];
    public int MinProperties;
    public int MaxProperties = -1;
    public string? MinPropertiesAt;

    public List<Group> Groups = [];

    // From negations and dependencies.
    /// <summary>Values excluded (not enum / not const).</summary>
    public List<JsonElement> Excluded = [];
    /// <summary>More regexes string contents must match (complements of negated string keywords).</summary>
    public List<int> StringRegexes = [];
    /// <summary>Keys objects must not have.</summary>
    public HashSet<string> Forbidden = new(StringComparer.Ordinal);
    /// <summary>More conjunction entries for the values of some properties.</summary>
    public Dictionary<string, List<string>> ExtraProperties = new(StringComparer.Ordinal);
    /// <summary>propertyNames schemas (pointers).</summary>
    public List<string> PropertyNames = [];

    /// <summary>Whether the shape obviously accepts nothing.</summary>
    public bool IsEmpty => Never || Types == JsonTypes.None || Enum is { Count: 0 };

    public void RaiseLower(Dec d, bool exclusive)
    {
        if (Lo is not Dec lo || d.CompareTo(lo) > 0 || (d.CompareTo(lo) == 0 && exclusive))
        {
            Lo = d;
            LoExclusive = exclusive;
        }
    }

    public void LowerUpper(Dec d, bool exclusive)
    {
        if (Hi is not Dec hi || d.CompareTo(hi) < 0 || (d.CompareTo(hi) == 0 && exclusive))
        {
            Hi = d;
            HiExclusive = exclusive;
        }
    }
}
