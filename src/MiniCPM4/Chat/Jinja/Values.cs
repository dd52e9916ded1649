using System.Collections;

namespace MiniCPM4.Chat.Jinja;

// Runtime values follow Python's data model: None is null, bool, long (int), double (float), string (str),
// List<object?> (list), PyTuple (tuple), PyDict (dict, insertion-ordered), plus Jinja2's Undefined, namespaces,
// loop objects and callables.

/// <summary>
/// Jinja2's default <c>Undefined</c>: prints as nothing, is false, iterates as empty and has length 0; getting an
/// attribute or item of it, calling it, doing arithmetic or ordering with it fails with the message Jinja2 gives.
/// Two undefined values are equal.
/// </summary>
internal sealed class Undefined
{
    public Undefined(string? name, object? owner = null, bool hasOwner = false, string? hint = null)
    {
        Name = name;
        Owner = owner;
        HasOwner = hasOwner;
        Hint = hint;
    }

    public string? Name { get; }
    public object? Owner { get; }
    public bool HasOwner { get; }
    public string? Hint { get; }

    /// <summary>Jinja2's <c>_undefined_message</c>.</summary>
    public string Message
    {
        get
        {
            if (Hint is not null) return Hint;
            if (!HasOwner) return $"{PyOps.Repr(Name)} is undefined";
            return $"{PyOps.Repr(PyOps.ObjectTypeRepr(Owner))} has no attribute {PyOps.Repr(Name)}";
        }
    }

    public override string ToString() => "";
}

/// <summary>An undefined item: <c>obj[key]</c> that does not exist (the message names the key's repr).</summary>
internal static class UndefinedItem
{
    public static Undefined Create(object? owner, object? key) =>
        key is string s
            ? new Undefined(s, owner, hasOwner: true)
            : new Undefined(PyOps.Repr(key), owner, hasOwner: true,
                hint: $"{PyOps.ObjectTypeRepr(owner)} has no element {PyOps.Repr(key)}");
}

/// <summary>A Python tuple.</summary>
internal sealed class PyTuple(object?[] items) : IReadOnlyList<object?>
{
    public static readonly PyTuple Empty = new([]);
    public object?[] Items { get; } = items;
    public int Count => Items.Length;
    public object? this[int index] => Items[index];
    public IEnumerator<object?> GetEnumerator() => ((IEnumerable<object?>)Items).GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => Items.GetEnumerator();
}

/// <summary>A Python dict: insertion-ordered, keys compared with Python equality (1 == 1.0 == True).</summary>
internal sealed class PyDict : IEnumerable<KeyValuePair<object, object?>>
{
    private readonly OrderedDictionary<object, object?> _items = new(PyKeyComparer.Instance);

    public int Count => _items.Count;
    public IEnumerable<object> Keys => _items.Keys;
    public IEnumerable<object?> Values => _items.Values;

    public static object NormalizeKey(object? key) => key ?? PyNoneKey.Instance;
    public static object? DenormalizeKey(object key) => key is PyNoneKey ? null : key;

    public void Set(object? key, object? value) => _items[NormalizeKey(key)] = value;
    public bool TryGet(object? key, out object? value) => _items.TryGetValue(NormalizeKey(key), out value);
    public bool ContainsKey(object? key) => _items.ContainsKey(NormalizeKey(key));

    public IEnumerable<(object? Key, object? Value)> Pairs()
    {
        foreach (var kv in _items) yield return (DenormalizeKey(kv.Key), kv.Value);
    }

    public IEnumerator<KeyValuePair<object, object?>> GetEnumerator() => _items.GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

internal sealed class PyNoneKey
{
    public static readonly PyNoneKey Instance = new();
}

internal sealed class PyKeyComparer : IEqualityComparer<object>
{
    public static readonly PyKeyComparer Instance = new();

    public new bool Equals(object? x, object? y) => PyOps.Equal(x is PyNoneKey ? null : x, y is PyNoneKey ? null : y);

    public int GetHashCode(object obj) => obj switch
    {
        bool b => b ? 1 : 0,
        long l => l.GetHashCode(),
        double d when d == Math.Floor(d) && Math.Abs(d) < 9.2e18 => ((long)d).GetHashCode(),
        double d => d.GetHashCode(),
        string s => StringComparer.Ordinal.GetHashCode(s),
        PyTuple t => t.Items.Aggregate(17, (h, item) => h * 31 + (item is null ? 0 : GetHashCode(item))),
        PyNoneKey => 0,
        Undefined => 7,
        _ => System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(obj),
    };
}

/// <summary><c>namespace(...)</c>: the one mutable object templates have (<c>{% set ns.x = … %}</c>).</summary>
internal sealed class JinjaNamespace
{
    public Dictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>The <c>loop</c> variable of a for loop.</summary>
internal sealed class LoopInfo(List<object?> items)
{
    public List<object?> Items { get; } = items;
    public int Index0 { get; set; }
    public object? Changed { get; set; } = NotSet;
    public static readonly object NotSet = new();
}

/// <summary>Something a template can call: a macro, a global function, a bound method.</summary>
internal interface IJinjaCallable
{
    object? Call(Interpreter interpreter, List<object?> args, List<(string Name, object? Value)> kwargs, int pos);
}

/// <summary>A Python method bound to its receiver (<c>'a,b'.split</c>, <c>d.items</c>).</summary>
internal sealed class BoundMethod(object? receiver, string name) : IJinjaCallable
{
    public object? Receiver { get; } = receiver;
    public string Name { get; } = name;

    public object? Call(Interpreter interpreter, List<object?> args, List<(string Name, object? Value)> kwargs,
        int pos) =>
        Methods.Invoke(interpreter, Receiver, Name, args, kwargs, pos);
}

/// <summary>A built-in global function.</summary>
internal sealed class BuiltinFunction(string name, Func<Interpreter, List<object?>, List<(string Name, object? Value)>,
    int, object?> body)
    : IJinjaCallable
{
    public string Name { get; } = name;

    public object? Call(Interpreter interpreter, List<object?> args, List<(string Name, object? Value)> kwargs,
        int pos) =>
        body(interpreter, args, kwargs, pos);
}

/// <summary>Raised by a template error at run time; turned into <see cref="TemplateRenderException"/> with a
/// position.</summary>
internal sealed class JinjaRuntimeError(string message) : Exception(message);
