namespace MiniCPM4.Chat.Jinja;

/// <summary>Jinja2's built-in tests (<c>x is defined</c>, <c>x is string</c>, <c>x is divisibleby 3</c>, …).</summary>
internal static class JinjaTests
{
    private delegate bool Test(Interpreter interp, object? value, object?[] args);

    private static readonly Dictionary<string, (int Arity, Test Body)> Table = new(StringComparer.Ordinal)
    {
        ["boolean"] = (0, (_, v, _) => v is bool),
        ["callable"] = (0, (_, v, _) => v is IJinjaCallable),
        ["defined"] = (0, (_, v, _) => v is not Undefined),
        ["undefined"] = (0, (_, v, _) => v is Undefined),
        ["divisibleby"] = (1, (_, v, a) => PyOps.Equal(PyOps.Mod(v, a[0]), 0L)),
        ["eq"] = (1, (_, v, a) => PyOps.Equal(v, a[0])),
        ["equalto"] = (1, (_, v, a) => PyOps.Equal(v, a[0])),
        ["=="] = (1, (_, v, a) => PyOps.Equal(v, a[0])),
        ["ne"] = (1, (_, v, a) => !PyOps.Equal(v, a[0])),
        ["!="] = (1, (_, v, a) => !PyOps.Equal(v, a[0])),
        ["lt"] = (1, (_, v, a) => PyOps.CompareOp("<", v, a[0])),
        ["lessthan"] = (1, (_, v, a) => PyOps.CompareOp("<", v, a[0])),
        ["<"] = (1, (_, v, a) => PyOps.CompareOp("<", v, a[0])),
        ["le"] = (1, (_, v, a) => PyOps.CompareOp("<=", v, a[0])),
        ["<="] = (1, (_, v, a) => PyOps.CompareOp("<=", v, a[0])),
        ["gt"] = (1, (_, v, a) => PyOps.CompareOp(">", v, a[0])),
        ["greaterthan"] = (1, (_, v, a) => PyOps.CompareOp(">", v, a[0])),
        [">"] = (1, (_, v, a) => PyOps.CompareOp(">", v, a[0])),
        ["ge"] = (1, (_, v, a) => PyOps.CompareOp(">=", v, a[0])),
        [">="] = (1, (_, v, a) => PyOps.CompareOp(">=", v, a[0])),
        ["escaped"] = (0, (_, _, _) => false),
        ["even"] = (0, (_, v, _) => PyOps.Equal(PyOps.Mod(v, 2L), 0L)),
        ["odd"] = (0, (_, v, _) => PyOps.Equal(PyOps.Mod(v, 2L), 1L)),
        ["false"] = (0, (_, v, _) => v is false),
        ["true"] = (0, (_, v, _) => v is true),
        ["float"] = (0, (_, v, _) => v is double),
        ["integer"] = (0, (_, v, _) => v is long),
        ["number"] = (0, (_, v, _) => v is long or double or bool),
        ["in"] = (1, (_, v, a) => PyOps.Contains(a[0], v)),
        ["iterable"] = (0, (_, v, _) => PyOps.IsIterable(v)),
        ["lower"] = (0, (_, v, _) => v is string s && s.Any(char.IsLetter) && !s.Any(char.IsUpper)),
        ["upper"] = (0, (_, v, _) => v is string s && s.Any(char.IsLetter) && !s.Any(char.IsLower)),
        ["mapping"] = (0, (_, v, _) => v is PyDict),
        ["none"] = (0, (_, v, _) => v is null),
        ["sameas"] = (1, (_, v, a) => SameAs(v, a[0])),
        ["sequence"] = (0, (_, v, _) => v is string or List<object?> or PyTuple or PyDict or Undefined),
        ["string"] = (0, (_, v, _) => v is string),
        ["filter"] = (0, (_, v, _) => v is string s && Filters.Exists(s)),
        // Exists: Table is not yet assigned here for the compiler
        ["test"] = (0, (_, v, _) => v is string s && Exists(s)),
    };

    public static bool Exists(string name) => Table.ContainsKey(name);

    public static object? Run(Interpreter interp, string name, object? value, List<object?> args,
        List<(string Name, object? Value)> kwargs)
    {
        if (!Table.TryGetValue(name, out var test)) throw new JinjaRuntimeError($"No test named {PyText.Repr(name)}.");
        if (kwargs.Count > 0) throw PyOps.TypeError($"the test '{name}' takes no keyword arguments");
        if (args.Count != test.Arity)
            throw PyOps.TypeError($"the test '{name}' takes {test.Arity} argument(s), {args.Count} given");
        return test.Body(interp, value, [.. args]);
    }

    private static bool SameAs(object? a, object? b)
    {
        if (a is null || b is null) return a is null && b is null;
        if (a is bool x && b is bool y) return x == y;
        if (a is string or long or double) return PyOps.Equal(a, b) && a.GetType() == b.GetType();
        return ReferenceEquals(a, b);
    }
}
