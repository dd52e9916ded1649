using System.Text;

namespace MiniCPM4.Chat.Jinja;

/// <summary>A variable scope: a for-loop iteration, a macro call, or the template's top level.</summary>
internal sealed class Frame(Frame? parent)
{
    public Frame? Parent { get; } = parent;
    public Dictionary<string, object?> Vars { get; } = new(StringComparer.Ordinal);

    public bool TryLookup(string name, out object? value)
    {
        for (var f = this; f is not null; f = f.Parent)
            if (f.Vars.TryGetValue(name, out value)) return true;
        value = null;
        return false;
    }
}

/// <summary>A <c>{% macro %}</c> (or the <c>caller</c> of a <c>{% call %}</c> block) bound to the scope it was defined
/// in.</summary>
internal sealed class Macro(string name, List<(string Name, Expr? Default)> parameters, List<Stmt> body, Frame scope)
    : IJinjaCallable
{
    public string Name { get; } = name;

    public object? Call(Interpreter interpreter, List<object?> args, List<(string Name, object? Value)> kwargs, int pos)
    {
        if (args.Count > parameters.Count)
            throw new JinjaRuntimeError(
                $"TypeError: macro '{Name}' takes not more than {parameters.Count} argument(s)");
        var frame = new Frame(scope);
        var given = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Count; i++)
        {
            frame.Vars[parameters[i].Name] = args[i];
            given.Add(parameters[i].Name);
        }
        foreach (var (key, value) in kwargs)
        {
            if (key == "caller")
            {
                frame.Vars["caller"] = value;
                continue;
            }
            if (!parameters.Any(p => p.Name == key))
                throw new JinjaRuntimeError($"TypeError: macro '{Name}' takes no keyword argument '{key}'");
            if (!given.Add(key))
                throw new JinjaRuntimeError($"TypeError: macro '{Name}' got multiple values for argument '{key}'");
            frame.Vars[key] = value;
        }
        foreach (var (p, defaultValue) in parameters)
        {
            if (given.Contains(p)) continue;
            frame.Vars[p] = defaultValue is null
                ? new Undefined(p, hint: $"parameter {PyText.Repr(p)} was not provided")
                : interpreter.Evaluate(defaultValue, frame);
        }
        return interpreter.RenderMacroBody(body, frame, pos);
    }
}

/// <summary>
/// Walks the syntax tree. Every statement and expression node costs one step; a render that exceeds
/// <see cref="JinjaRenderOptions.MaxSteps"/>, builds a string or list longer than <see
/// cref="JinjaRenderOptions.MaxOutputLength"/>
/// or nests macro calls deeper than <see cref="JinjaRenderOptions.MaxCallDepth"/> stops with
/// <see cref="TemplateLimitException"/>.
/// </summary>
internal sealed class Interpreter
{
    private enum Flow { Normal, Break, Continue }

    private readonly SourceMap _map;
    private readonly JinjaRenderOptions _options;
    private readonly Dictionary<string, object?> _globals;
    private long _steps;
    private int _callDepth;
    private int _pos;

    public Interpreter(SourceMap map, JinjaRenderOptions options, Dictionary<string, object?> globals)
    {
        _map = map;
        _options = options;
        _globals = globals;
    }

    public JinjaRenderOptions Options => _options;

    public string Render(List<Stmt> body)
    {
        var output = new StringBuilder();
        var frame = new Frame(null);
        try
        {
            Exec(body, frame, output);
        }
        catch (JinjaRuntimeError e)
        {
            throw Wrap(e.Message, e);
        }
        catch (OverflowException e)
        {
            throw Wrap("OverflowError: integer result too large", e);
        }
        catch (InsufficientExecutionStackException e)
        {
            throw Limit("the template recursed too deeply", e);
        }
        catch (Exception e) when (e is not TemplateException and not OperationCanceledException)
        {
            // A defect of this renderer, not of the template; still reported as a render error with a position.
            throw Wrap($"internal error: {e.GetType().Name}: {e.Message}", e);
        }
        return output.ToString();
    }

    private TemplateRenderException Wrap(string message, Exception inner)
    {
        var (line, column) = _map.At(_pos);
        return new TemplateRenderException(message, line, column, inner);
    }

    private TemplateLimitException Limit(string message, Exception? inner = null)
    {
        var (line, column) = _map.At(_pos);
        _ = inner;
        return new TemplateLimitException(message, line, column);
    }

    public (int Line, int Column) Position => _map.At(_pos);

    private void Step(int pos)
    {
        _pos = pos;
        if (++_steps > _options.MaxSteps)
            throw Limit($"the render exceeded its limit of {_options.MaxSteps} steps");
    }

    /// <summary>Fails when a string or list about to be built is longer than the output limit.</summary>
    public void CheckSize(long length)
    {
        if (length > _options.MaxOutputLength)
            throw Limit(
                $"the render built a value longer than its limit of {_options.MaxOutputLength} characters or items");
    }

    // ---- statements ----------------------------------------------------------------------------------------------

    private Flow Exec(List<Stmt> body, Frame frame, StringBuilder output)
    {
        foreach (var stmt in body)
        {
            var flow = Exec(stmt, frame, output);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    private void Write(StringBuilder output, string text)
    {
        CheckSize((long)output.Length + text.Length);
        output.Append(text);
    }

    private Flow Exec(Stmt stmt, Frame frame, StringBuilder output)
    {
        Step(stmt.Pos);
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        switch (stmt)
        {
            case DataStmt data:
                Write(output, data.Text);
                return Flow.Normal;
            case OutputStmt o:
                Write(output, PyOps.Str(Evaluate(o.Value, frame)));
                return Flow.Normal;
            case IfStmt s:
                foreach (var (test, branch) in s.Branches)
                    if (PyOps.Truthy(Evaluate(test, frame))) return Exec(branch, frame, output);
                return s.Else is null ? Flow.Normal : Exec(s.Else, frame, output);
            case ForStmt f:
                ExecFor(f, frame, output);
                return Flow.Normal;
            case SetStmt s:
                Assign(s.Target, Evaluate(s.Value, frame), frame);
                return Flow.Normal;
            case SetBlockStmt s:
            {
                var inner = new StringBuilder();
                Exec(s.Body, frame, inner);
                object? value = inner.ToString();
                foreach (var filter in s.Filters) value = ApplyFilter(filter, value, frame);
                Assign(s.Target, value, frame);
                return Flow.Normal;
            }
            case MacroStmt m:
                frame.Vars[m.Name] = new Macro(m.Name, m.Params, m.Body, frame);
                return Flow.Normal;
            case CallBlockStmt c:
            {
                var caller = new Macro("caller", c.Params, c.Body, frame);
                var callee = Evaluate(c.Call.Callee, frame);
                var (args, kwargs) = EvaluateArguments(c.Call, frame);
                kwargs.Add(("caller", caller));
                _pos = c.Pos;
                Write(output, PyOps.Str(Invoke(callee, args, kwargs, c.Pos)));
                return Flow.Normal;
            }
            case FilterBlockStmt fb:
            {
                var inner = new StringBuilder();
                Exec(fb.Body, frame, inner);
                object? value = inner.ToString();
                foreach (var filter in fb.Filters) value = ApplyFilter(filter, value, frame);
                Write(output, PyOps.Str(value));
                return Flow.Normal;
            }
            case GenerationStmt g:
                return Exec(g.Body, frame, output);
            case BreakStmt:
                return Flow.Break;
            case ContinueStmt:
                return Flow.Continue;
        }
        throw new InvalidOperationException("unknown statement " + stmt.GetType().Name);
    }

    private void ExecFor(ForStmt f, Frame frame, StringBuilder output)
    {
        var iterable = Evaluate(f.Iterable, frame);
        _pos = f.Pos;
        var items = new List<object?>();
        foreach (var item in PyOps.Iterate(iterable))
        {
            Step(f.Pos);
            if (f.Filter is not null)
            {
                var test = new Frame(frame);
                Assign(f.Target, item, test);
                if (!PyOps.Truthy(Evaluate(f.Filter, test))) continue;
            }
            items.Add(item);
        }
        if (items.Count == 0)
        {
            if (f.Else is not null) Exec(f.Else, frame, output);
            return;
        }
        var loop = new LoopInfo(items);
        for (int i = 0; i < items.Count; i++)
        {
            loop.Index0 = i;
            var iteration = new Frame(frame);
            iteration.Vars["loop"] = loop;
            Assign(f.Target, items[i], iteration);
            if (Exec(f.Body, iteration, output) == Flow.Break) break;
        }
    }

    private void Assign(Target target, object? value, Frame frame)
    {
        switch (target)
        {
            case NameTarget n:
                frame.Vars[n.Name] = value;
                break;
            case AttrTarget a:
            {
                _pos = a.Pos;
                if (!frame.TryLookup(a.Object, out var obj) && !_globals.TryGetValue(a.Object, out obj))
                    throw new JinjaRuntimeError($"{PyText.Repr(a.Object)} is undefined");
                if (obj is not JinjaNamespace ns)
                    throw new JinjaRuntimeError("cannot assign attribute on non-namespace object");
                ns.Attributes[a.Attribute] = value;
                break;
            }
            case TupleTarget t:
            {
                _pos = t.Pos;
                if (value is Undefined u) throw PyOps.UndefinedError(u);
                var items = PyOps.ToList(value);
                if (items.Count < t.Items.Count)
                    throw new JinjaRuntimeError(
                        $"ValueError: not enough values to unpack (expected {t.Items.Count}, got {items.Count})");
                if (items.Count > t.Items.Count)
                    throw new JinjaRuntimeError($"ValueError: too many values to unpack (expected {t.Items.Count})");
                for (int i = 0; i < items.Count; i++) Assign(t.Items[i], items[i], frame);
                break;
            }
        }
    }

    /// <summary>Renders a macro body in its frame (depth-limited).</summary>
    public string RenderMacroBody(List<Stmt> body, Frame frame, int pos)
    {
        if (++_callDepth > _options.MaxCallDepth)
        {
            _pos = pos;
            throw Limit($"macro calls nested deeper than {_options.MaxCallDepth}");
        }
        try
        {
            var output = new StringBuilder();
            Exec(body, frame, output);
            return output.ToString();
        }
        finally
        {
            _callDepth--;
        }
    }

    // ---- expressions ---------------------------------------------------------------------------------------------

    public object? Evaluate(Expr expr, Frame frame)
    {
        Step(expr.Pos);
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        switch (expr)
        {
            case ConstExpr c:
                return c.Value;
            case NameExpr n:
                if (frame.TryLookup(n.Name, out var value)) return value;
                if (_globals.TryGetValue(n.Name, out value)) return value;
                return new Undefined(n.Name);
            case ListExpr l:
            {
                var list = new List<object?>(l.Items.Count);
                foreach (var item in l.Items) list.Add(Evaluate(item, frame));
                return list;
            }
            case TupleExpr t:
            {
                var items = new object?[t.Items.Count];
                for (int i = 0; i < items.Length; i++) items[i] = Evaluate(t.Items[i], frame);
                return new PyTuple(items);
            }
            case DictExpr d:
            {
                var dict = new PyDict();
                foreach (var (k, v) in d.Items)
                {
                    var key = Evaluate(k, frame);
                    if (key is List<object?> or PyDict) throw PyOps.TypeError(
                        $"unhashable type: '{PyOps.TypeName(key)}'");
                    dict.Set(key, Evaluate(v, frame));
                }
                return dict;
            }
            case AttrExpr a:
            {
                var target = Evaluate(a.Target, frame);
                _pos = a.Pos;
                return PyOps.GetAttr(target, a.Name);
            }
            case ItemExpr i:
            {
                var target = Evaluate(i.Target, frame);
                var key = Evaluate(i.Key, frame);
                _pos = i.Pos;
                return PyOps.GetItem(target, key);
            }
            case SliceExpr s:
            {
                var target = Evaluate(s.Target, frame);
                var start = s.Start is null ? null : Evaluate(s.Start, frame);
                var stop = s.Stop is null ? null : Evaluate(s.Stop, frame);
                var step = s.Step is null ? null : Evaluate(s.Step, frame);
                _pos = s.Pos;
                var result = PyOps.Slice(target, start, stop, step);
                return result;
            }
            case CallExpr c:
            {
                var callee = Evaluate(c.Callee, frame);
                var (args, kwargs) = EvaluateArguments(c, frame);
                _pos = c.Pos;
                return Invoke(callee, args, kwargs, c.Pos);
            }
            case FilterExpr f:
                return ApplyFilter(f, Evaluate(f.Target!, frame), frame);
            case TestExpr t:
            {
                var target = Evaluate(t.Target, frame);
                var (args, kwargs) = EvaluateArguments(t.Args, frame);
                _pos = t.Pos;
                return JinjaTests.Run(this, t.Name, target, args, kwargs);
            }
            case UnaryExpr u:
            {
                var operand = Evaluate(u.Operand, frame);
                _pos = u.Pos;
                return u.Op switch
                {
                    "not" => !PyOps.Truthy(operand),
                    "-" => PyOps.Negate(operand),
                    _ => PyOps.Plus(operand),
                };
            }
            case BinaryExpr b:
                return EvaluateBinary(b, frame);
            case CompareExpr c:
            {
                var left = Evaluate(c.First, frame);
                foreach (var (op, operandExpr) in c.Rest)
                {
                    var right = Evaluate(operandExpr, frame);
                    _pos = c.Pos;
                    if (!PyOps.CompareOp(op, left, right)) return false;
                    left = right;
                }
                return true;
            }
            case CondExpr c:
                if (PyOps.Truthy(Evaluate(c.Test, frame))) return Evaluate(c.Then, frame);
                return c.Else is null
                    ? new Undefined(null, hint: "the inline if-expression on line " + _map.At(c.Pos).Line
                        + " evaluated to false and no else section was defined.")
                    : Evaluate(c.Else, frame);
        }
        throw new InvalidOperationException("unknown expression " + expr.GetType().Name);
    }

    private object? EvaluateBinary(BinaryExpr b, Frame frame)
    {
        var left = Evaluate(b.Left, frame);
        switch (b.Op)
        {
            case "and": return PyOps.Truthy(left) ? Evaluate(b.Right, frame) : left;
            case "or": return PyOps.Truthy(left) ? left : Evaluate(b.Right, frame);
        }
        var right = Evaluate(b.Right, frame);
        _pos = b.Pos;
        switch (b.Op)
        {
            case "~":
            {
                string l = PyOps.Str(left), r = PyOps.Str(right);
                CheckSize((long)l.Length + r.Length);
                return l + r;
            }
            case "+": return PyOps.Add(left, right, this);
            case "-": return PyOps.Sub(left, right);
            case "*": return PyOps.Mul(left, right, this);
            case "/": return PyOps.TrueDiv(left, right);
            case "//": return PyOps.FloorDiv(left, right);
            case "%": return PyOps.Mod(left, right);
            case "**": return PyOps.Pow(left, right);
        }
        throw new InvalidOperationException("unknown operator " + b.Op);
    }

    private (List<object?> Args, List<(string, object?)> Kwargs) EvaluateArguments(CallExpr call, Frame frame)
    {
        var (args, kwargs) = EvaluateArguments(call.Args, frame);
        if (call.StarArgs is not null)
        {
            var extra = Evaluate(call.StarArgs, frame);
            args.AddRange(PyOps.Iterate(extra));
        }
        if (call.StarKwargs is not null)
        {
            var extra = Evaluate(call.StarKwargs, frame);
            if (extra is not PyDict d) throw PyOps.TypeError("argument after ** must be a mapping");
            foreach (var (k, v) in d.Pairs())
            {
                if (k is not string key) throw PyOps.TypeError("keywords must be strings");
                kwargs.Add((key, v));
            }
        }
        return (args, kwargs);
    }

    private (List<object?> Args, List<(string, object?)> Kwargs) EvaluateArguments(List<Argument> arguments,
        Frame frame)
    {
        var args = new List<object?>();
        var kwargs = new List<(string, object?)>();
        foreach (var a in arguments)
        {
            var value = Evaluate(a.Value, frame);
            if (a.Name is null) args.Add(value);
            else kwargs.Add((a.Name, value));
        }
        return (args, kwargs);
    }

    public object? Invoke(object? callee, List<object?> args, List<(string Name, object? Value)> kwargs, int pos)
    {
        switch (callee)
        {
            case IJinjaCallable c:
                return c.Call(this, args, kwargs, pos);
            case Undefined u:
                throw PyOps.UndefinedError(u);
            default:
                throw PyOps.TypeError($"'{PyOps.TypeName(callee)}' object is not callable");
        }
    }

    private object? ApplyFilter(FilterExpr f, object? value, Frame frame)
    {
        var (args, kwargs) = EvaluateArguments(f.Args, frame);
        _pos = f.Pos;
        return Filters.Apply(this, f.Name, value, args, kwargs);
    }

    /// <summary>Attributes of the <c>loop</c> variable.</summary>
    public static bool LoopAttribute(LoopInfo loop, string name, out object? value)
    {
        int n = loop.Items.Count, i = loop.Index0;
        value = name switch
        {
            "index" => (long)(i + 1),
            "index0" => (long)i,
            "revindex" => (long)(n - i),
            "revindex0" => (long)(n - i - 1),
            "first" => i == 0,
            "last" => i == n - 1,
            "length" => (long)n,
            "depth" => 1L,
            "depth0" => 0L,
            "previtem" => i > 0 ? loop.Items[i - 1] : new Undefined(null, hint: "there is no previous item"),
            "nextitem" => i < n - 1 ? loop.Items[i + 1] : new Undefined(null, hint: "there is no next item"),
            "cycle" => new BuiltinFunction("cycle", (_, args, _, _) =>
                args.Count == 0 ? throw PyOps.TypeError("no items for cycling given") : args[i % args.Count]),
            "changed" => new BuiltinFunction("changed", (_, args, _, _) =>
            {
                var current = new PyTuple([.. args]);
                if (loop.Changed is PyTuple previous && PyOps.Equal(previous, current)) return false;
                loop.Changed = current;
                return true;
            }),
            _ => null,
        };
        return value is not null;
    }
}
