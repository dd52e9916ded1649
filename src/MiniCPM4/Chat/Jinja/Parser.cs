namespace MiniCPM4.Chat.Jinja;

/// <summary>
/// Builds the syntax tree with Jinja2's grammar and precedence: conditional expressions, <c>or</c>, <c>and</c>,
/// <c>not</c>, comparisons (<c>in</c>, <c>not in</c>), <c>+ -</c>, <c>~</c>, <c>* / // %</c>, <c>**</c>, unary
/// signs, then postfix access, calls, filters and tests. Unknown filters and tests, unsupported tags and nesting
/// deeper than <see cref="MaxDepth"/> fail here, with the line and column.
/// </summary>
internal sealed class Parser
{
    private const int MaxDepth = 200;

    private static readonly HashSet<string> UnsupportedTags = new(StringComparer.Ordinal)
    {
        "extends", "include", "import", "from", "block", "endblock", "autoescape", "endautoescape", "with", "endwith",
        "do", "trans", "endtrans", "pluralize", "print",
    };

    private readonly List<Token> _tokens;
    private readonly SourceMap _map;
    private int _i;
    private int _depth;
    private int _loopDepth;

    private Parser(List<Token> tokens, SourceMap map)
    {
        _tokens = tokens;
        _map = map;
    }

    public static List<Stmt> Parse(List<Token> tokens, SourceMap map)
    {
        var parser = new Parser(tokens, map);
        var body = parser.ParseBody([], out _);
        parser.Validate(body, soft: false);
        return body;
    }

    // ---- names of filters and tests --------------------------------------------------------------------------------

    // Like Jinja2's compiler: an unknown filter or test fails when the template is parsed, except inside an if
    // statement or a conditional expression (Jinja2's "soft" frames), where it fails only if it is reached.

    private void Validate(List<Stmt> body, bool soft)
    {
        foreach (var stmt in body) Validate(stmt, soft);
    }

    private void Validate(Stmt stmt, bool soft)
    {
        switch (stmt)
        {
            case OutputStmt o: Validate(o.Value, soft); break;
            case IfStmt s:
                foreach (var (test, branch) in s.Branches)
                {
                    Validate(test, true);
                    Validate(branch, true);
                }
                if (s.Else is not null) Validate(s.Else, true);
                break;
            case ForStmt f:
                Validate(f.Iterable, soft);
                if (f.Filter is not null) Validate(f.Filter, false);
                Validate(f.Body, false);
                if (f.Else is not null) Validate(f.Else, false);
                break;
            case SetStmt s: Validate(s.Value, soft); break;
            case SetBlockStmt s:
                foreach (var filter in s.Filters) Validate(filter, false);
                Validate(s.Body, false);
                break;
            case MacroStmt m:
                foreach (var (_, d) in m.Params)
                    if (d is not null) Validate(d, false);
                Validate(m.Body, false);
                break;
            case CallBlockStmt c:
                Validate(c.Call, soft);
                foreach (var (_, d) in c.Params)
                    if (d is not null) Validate(d, false);
                Validate(c.Body, false);
                break;
            case FilterBlockStmt fb:
                foreach (var filter in fb.Filters) Validate(filter, false);
                Validate(fb.Body, false);
                break;
            case GenerationStmt g: Validate(g.Body, false); break;
        }
    }

    private void Validate(Expr expr, bool soft)
    {
        switch (expr)
        {
            case ListExpr l: foreach (var e in l.Items) Validate(e, soft); break;
            case TupleExpr t: foreach (var e in t.Items) Validate(e, soft); break;
            case DictExpr d:
                foreach (var (k, v) in d.Items)
                {
                    Validate(k, soft);
                    Validate(v, soft);
                }
                break;
            case AttrExpr a: Validate(a.Target, soft); break;
            case ItemExpr i: Validate(i.Target, soft); Validate(i.Key, soft); break;
            case SliceExpr s:
                Validate(s.Target, soft);
                if (s.Start is not null) Validate(s.Start, soft);
                if (s.Stop is not null) Validate(s.Stop, soft);
                if (s.Step is not null) Validate(s.Step, soft);
                break;
            case CallExpr c:
                Validate(c.Callee, soft);
                foreach (var a in c.Args) Validate(a.Value, soft);
                if (c.StarArgs is not null) Validate(c.StarArgs, soft);
                if (c.StarKwargs is not null) Validate(c.StarKwargs, soft);
                break;
            case FilterExpr f:
                if (!soft && !Filters.Exists(f.Name)) throw Error($"no filter named '{f.Name}'", f.Pos);
                if (f.Target is not null) Validate(f.Target, soft);
                foreach (var a in f.Args) Validate(a.Value, soft);
                break;
            case TestExpr t:
                if (!soft && !JinjaTests.Exists(t.Name)) throw Error($"no test named '{t.Name}'", t.Pos);
                Validate(t.Target, soft);
                foreach (var a in t.Args) Validate(a.Value, soft);
                break;
            case UnaryExpr u: Validate(u.Operand, soft); break;
            case BinaryExpr b: Validate(b.Left, soft); Validate(b.Right, soft); break;
            case CompareExpr c:
                Validate(c.First, soft);
                foreach (var (_, e) in c.Rest) Validate(e, soft);
                break;
            case CondExpr c:
                Validate(c.Test, true);
                Validate(c.Then, true);
                if (c.Else is not null) Validate(c.Else, true);
                break;
        }
    }

    // ---- token stream helpers ----------------------------------------------------------------------------------

    private Token Current => _tokens[_i];
    private Token Peek(int ahead = 1) => _tokens[Math.Min(_i + ahead, _tokens.Count - 1)];
    private Token Next() => _tokens[_i < _tokens.Count - 1 ? _i++ : _i];

    private TemplateSyntaxException Error(string message, int position)
    {
        var (line, column) = _map.At(position);
        return new TemplateSyntaxException(message, line, column);
    }

    private TemplateSyntaxException Error(string message) => Error(message, Current.Position);

    private bool IsOp(string op) => Current.Type == TokenType.Operator && Current.Value == op;
    private bool IsName(string name) => Current.Type == TokenType.Name && Current.Value == name;

    private bool SkipOp(string op)
    {
        if (!IsOp(op)) return false;
        _i++;
        return true;
    }

    private bool SkipName(string name)
    {
        if (!IsName(name)) return false;
        _i++;
        return true;
    }

    private void ExpectOp(string op)
    {
        if (!SkipOp(op)) throw Error($"expected '{op}', got {Current}");
    }

    private string ExpectName(string what = "a name")
    {
        if (Current.Type != TokenType.Name) throw Error($"expected {what}, got {Current}");
        return Next().Value;
    }

    private void ExpectBlockEnd()
    {
        if (Current.Type != TokenType.BlockEnd) throw Error($"expected the end of the statement '%}}', got {Current}");
        _i++;
    }

    private void Enter()
    {
        if (++_depth > MaxDepth) throw Error($"the template nests deeper than {MaxDepth} levels");
    }

    private void Leave() => _depth--;

    // ---- statements ----------------------------------------------------------------------------------------------

    /// <summary>Parses until a block tag whose name is in <paramref name="endNames"/> (its '{%' and name
    /// consumed).</summary>
    private List<Stmt> ParseBody(string[] endNames, out string? endName, int? openedAt = null)
    {
        var body = new List<Stmt>();
        endName = null;
        while (true)
        {
            var token = Current;
            switch (token.Type)
            {
                case TokenType.Eof:
                    if (endNames.Length > 0)
                        throw Error(
                            $"unexpected end of template: the tag opened here was never closed (expected " +
                            $"{Expected(endNames)})",
                            openedAt ?? token.Position);
                    return body;
                case TokenType.Data:
                    _i++;
                    body.Add(new DataStmt(token.Position, token.Value));
                    break;
                case TokenType.VariableBegin:
                {
                    _i++;
                    var value = ParseTuple(withCondExpr: true);
                    if (Current.Type != TokenType.VariableEnd) throw Error($"expected '}}}}', got {Current}");
                    _i++;
                    body.Add(new OutputStmt(token.Position, value));
                    break;
                }
                case TokenType.BlockBegin:
                {
                    _i++;
                    if (Current.Type != TokenType.Name) throw Error($"expected a tag name, got {Current}");
                    var name = Current.Value;
                    if (Array.IndexOf(endNames, name) >= 0)
                    {
                        _i++;
                        endName = name;
                        return body;
                    }
                    body.Add(ParseStatement(token.Position, endNames));
                    break;
                }
                default:
                    throw Error($"unexpected {token}");
            }
        }
    }

    private static string Expected(string[] names) => string.Join(" or ", names.Select(n => $"'{n}'"));

    private Stmt ParseStatement(int start, string[] enclosingEnds)
    {
        var nameToken = Current;
        string name = nameToken.Value;
        Enter();
        try
        {
            switch (name)
            {
                case "if": _i++; return ParseIf(start);
                case "for": _i++; return ParseFor(start);
                case "set": _i++; return ParseSet(start);
                case "macro": _i++; return ParseMacro(start);
                case "call": _i++; return ParseCallBlock(start);
                case "filter": _i++; return ParseFilterBlock(start);
                case "generation":
                {
                    _i++;
                    ExpectBlockEnd();
                    var body = ParseBody(["endgeneration"], out _, start);
                    ExpectBlockEnd();
                    return new GenerationStmt(start, body);
                }
                case "break" or "continue":
                {
                    _i++;
                    if (_loopDepth == 0) throw Error($"'{name}' outside a loop", nameToken.Position);
                    ExpectBlockEnd();
                    return name == "break" ? new BreakStmt(start) : new ContinueStmt(start);
                }
            }
            if (UnsupportedTags.Contains(name))
                throw Error($"the '{name}' tag is not supported in chat templates", nameToken.Position);
            if (enclosingEnds.Length > 0)
                throw Error($"unexpected tag '{name}' (expected {Expected(enclosingEnds)})", nameToken.Position);
            throw Error($"unknown tag '{name}'", nameToken.Position);
        }
        finally
        {
            Leave();
        }
    }

    private Stmt ParseIf(int start)
    {
        var branches = new List<(Expr, List<Stmt>)>();
        List<Stmt>? elseBody = null;
        var test = ParseTuple(withCondExpr: false);
        ExpectBlockEnd();
        while (true)
        {
            var body = ParseBody(["elif", "else", "endif"], out var end, start);
            branches.Add((test, body));
            if (end == "elif")
            {
                test = ParseTuple(withCondExpr: false);
                ExpectBlockEnd();
                continue;
            }
            if (end == "else")
            {
                ExpectBlockEnd();
                elseBody = ParseBody(["endif"], out _, start);
            }
            ExpectBlockEnd();
            return new IfStmt(start, branches, elseBody);
        }
    }

    private Stmt ParseFor(int start)
    {
        var target = ParseAssignTarget(allowAttribute: false, endName: "in");
        if (!SkipName("in")) throw Error($"expected 'in', got {Current}");
        var iterable = ParseTuple(withCondExpr: false, extraEnd: "recursive");
        Expr? filter = null;
        if (SkipName("if")) filter = ParseExpression();
        bool recursive = false;
        if (IsName("recursive")) throw Error("recursive loops are not supported");
        ExpectBlockEnd();
        _loopDepth++;
        var body = ParseBody(["endfor", "else"], out var end, start);
        _loopDepth--;
        List<Stmt>? elseBody = null;
        if (end == "else")
        {
            ExpectBlockEnd();
            elseBody = ParseBody(["endfor"], out _, start);
        }
        ExpectBlockEnd();
        return new ForStmt(start, target, iterable, filter, body, elseBody, recursive);
    }

    private Stmt ParseSet(int start)
    {
        var target = ParseAssignTarget(allowAttribute: true, endName: null);
        if (SkipOp("="))
        {
            var value = ParseTuple(withCondExpr: true);
            ExpectBlockEnd();
            return new SetStmt(start, target, value);
        }
        var filters = new List<FilterExpr>();
        while (SkipOp("|")) filters.Add(ParseFilter(null));
        ExpectBlockEnd();
        var body = ParseBody(["endset"], out _, start);
        ExpectBlockEnd();
        return new SetBlockStmt(start, target, filters, body);
    }

    private Stmt ParseMacro(int start)
    {
        string name = ExpectName("a macro name");
        var parameters = ParseSignature(required: true);
        ExpectBlockEnd();
        int savedLoops = _loopDepth;
        _loopDepth = 0;
        var body = ParseBody(["endmacro"], out _, start);
        _loopDepth = savedLoops;
        ExpectBlockEnd();
        return new MacroStmt(start, name, parameters, body);
    }

    private Stmt ParseCallBlock(int start)
    {
        var parameters = IsOp("(") ? ParseSignature(required: true) : [];
        var expr = ParseExpression();
        if (expr is not CallExpr call) throw Error("expected a call after 'call'", expr.Pos);
        ExpectBlockEnd();
        int savedLoops = _loopDepth;
        _loopDepth = 0;
        var body = ParseBody(["endcall"], out _, start);
        _loopDepth = savedLoops;
        ExpectBlockEnd();
        return new CallBlockStmt(start, call, parameters, body);
    }

    private Stmt ParseFilterBlock(int start)
    {
        var filters = new List<FilterExpr> { ParseFilter(null) };
        while (SkipOp("|")) filters.Add(ParseFilter(null));
        ExpectBlockEnd();
        var body = ParseBody(["endfilter"], out _, start);
        ExpectBlockEnd();
        return new FilterBlockStmt(start, filters, body);
    }

    private List<(string, Expr?)> ParseSignature(bool required)
    {
        var parameters = new List<(string, Expr?)>();
        if (!SkipOp("("))
        {
            if (required) throw Error($"expected '(', got {Current}");
            return parameters;
        }
        while (!SkipOp(")"))
        {
            if (parameters.Count > 0) ExpectOp(",");
            if (SkipOp(")")) break;
            int pos = Current.Position;
            string name = ExpectName("a parameter name");
            CheckAssignable(name, pos);
            if (parameters.Any(p => p.Item1 == name)) throw Error($"duplicate parameter '{name}'", pos);
            Expr? defaultValue = SkipOp("=") ? ParseExpression() : null;
            if (defaultValue is null && parameters.Count > 0 && parameters[^1].Item2 is not null)
                throw Error("a parameter without a default follows one with a default", pos);
            parameters.Add((name, defaultValue));
        }
        return parameters;
    }

    private void CheckAssignable(string name, int pos)
    {
        if (name is "true" or "false" or "none" or "True" or "False" or "None")
            throw Error($"cannot assign to '{name}'", pos);
    }

    private Target ParseAssignTarget(bool allowAttribute, string? endName)
    {
        int start = Current.Position;
        var items = new List<Target>();
        bool isTuple = false;
        bool parenthesized = SkipOp("(");
        while (true)
        {
            if (items.Count > 0)
            {
                if (!SkipOp(",")) break;
                isTuple = true;
                if (Current.Type != TokenType.Name || (endName is not null && IsName(endName))) break;
            }
            int pos = Current.Position;
            string name = ExpectName("a variable name");
            CheckAssignable(name, pos);
            if (allowAttribute && IsOp("."))
            {
                _i++;
                string attribute = ExpectName("an attribute name");
                items.Add(new AttrTarget(pos, name, attribute));
            }
            else
            {
                items.Add(new NameTarget(pos, name));
            }
            if (!IsOp(",")) break;
        }
        if (parenthesized) ExpectOp(")");
        if (items.Count == 1 && !isTuple) return items[0];
        if (items.Any(t => t is AttrTarget)) throw Error("cannot assign to a namespace attribute in a tuple", start);
        return new TupleTarget(start, items);
    }

    // ---- expressions ---------------------------------------------------------------------------------------------

    private Expr ParseTuple(bool withCondExpr, string? extraEnd = null, bool explicitParentheses = false)
    {
        int start = Current.Position;
        var items = new List<Expr>();
        bool isTuple = false;
        while (true)
        {
            if (items.Count > 0) ExpectOp(",");
            if (Current.Type is TokenType.VariableEnd or TokenType.BlockEnd || IsOp(")")
                || (extraEnd is not null && IsName(extraEnd)))
                break;
            items.Add(withCondExpr ? ParseExpression() : ParseOr());
            if (IsOp(",")) isTuple = true;
            else break;
        }
        if (!isTuple)
        {
            if (items.Count > 0) return items[0];
            if (!explicitParentheses) throw Error($"expected an expression, got {Current}");
        }
        return new TupleExpr(start, items);
    }

    private Expr ParseExpression()
    {
        Enter();
        try
        {
            var expr = ParseOr();
            while (IsName("if"))
            {
                int pos = Next().Position;
                var test = ParseOr();
                Expr? otherwise = SkipName("else") ? ParseExpression() : null;
                expr = new CondExpr(pos, test, expr, otherwise);
            }
            return expr;
        }
        finally
        {
            Leave();
        }
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (IsName("or"))
        {
            int pos = Next().Position;
            left = new BinaryExpr(pos, "or", left, ParseAnd());
        }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (IsName("and"))
        {
            int pos = Next().Position;
            left = new BinaryExpr(pos, "and", left, ParseNot());
        }
        return left;
    }

    private Expr ParseNot()
    {
        if (IsName("not"))
        {
            int pos = Next().Position;
            Enter();
            try
            {
                return new UnaryExpr(pos, "not", ParseNot());
            }
            finally
            {
                Leave();
            }
        }
        return ParseCompare();
    }

    private static readonly HashSet<string> CompareOps =
        new(StringComparer.Ordinal) { "==", "!=", "<", "<=", ">", ">=" };

    private Expr ParseCompare()
    {
        int start = Current.Position;
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Current.Type == TokenType.Operator && CompareOps.Contains(Current.Value))
            {
                string op = Next().Value;
                rest.Add((op, ParseMath1()));
            }
            else if (SkipName("in"))
            {
                rest.Add(("in", ParseMath1()));
            }
            else if (IsName("not") && Peek().Type == TokenType.Name && Peek().Value == "in")
            {
                _i += 2;
                rest.Add(("notin", ParseMath1()));
            }
            else
            {
                break;
            }
        }
        return rest.Count == 0 ? first : new CompareExpr(start, first, rest);
    }

    private Expr ParseMath1()
    {
        var left = ParseConcat();
        while (IsOp("+") || IsOp("-"))
        {
            var op = Next();
            left = new BinaryExpr(op.Position, op.Value, left, ParseConcat());
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var left = ParseMath2();
        while (IsOp("~"))
        {
            int pos = Next().Position;
            left = new BinaryExpr(pos, "~", left, ParseMath2());
        }
        return left;
    }

    private Expr ParseMath2()
    {
        var left = ParsePow();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%"))
        {
            var op = Next();
            left = new BinaryExpr(op.Position, op.Value, left, ParsePow());
        }
        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary(withFilter: true);
        while (IsOp("**"))
        {
            int pos = Next().Position;
            left = new BinaryExpr(pos, "**", left, ParseUnary(withFilter: true));
        }
        return left;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Enter();
        try
        {
            Expr node;
            if (IsOp("-") || IsOp("+"))
            {
                var op = Next();
                node = new UnaryExpr(op.Position, op.Value, ParseUnary(withFilter: false));
            }
            else
            {
                node = ParsePrimary();
            }
            node = ParsePostfix(node);
            if (withFilter) node = ParseFilterExpr(node);
            return node;
        }
        finally
        {
            Leave();
        }
    }

    private Expr ParsePrimary()
    {
        var token = Current;
        switch (token.Type)
        {
            case TokenType.Name:
                _i++;
                return token.Value switch
                {
                    "true" or "True" => new ConstExpr(token.Position, true),
                    "false" or "False" => new ConstExpr(token.Position, false),
                    "none" or "None" => new ConstExpr(token.Position, null),
                    _ => new NameExpr(token.Position, token.Value),
                };
            case TokenType.String:
            {
                _i++;
                string value = (string)token.Literal!;
                while (Current.Type == TokenType.String) value += (string)Next().Literal!;
                return new ConstExpr(token.Position, value);
            }
            case TokenType.Integer:
            case TokenType.Float:
                _i++;
                return new ConstExpr(token.Position, token.Literal);
            case TokenType.Operator when token.Value == "(":
            {
                _i++;
                var inner = ParseTuple(withCondExpr: true, explicitParentheses: true);
                ExpectOp(")");
                return inner;
            }
            case TokenType.Operator when token.Value == "[":
            {
                _i++;
                var items = new List<Expr>();
                while (!IsOp("]"))
                {
                    if (items.Count > 0) ExpectOp(",");
                    if (IsOp("]")) break;
                    items.Add(ParseExpression());
                }
                ExpectOp("]");
                return new ListExpr(token.Position, items);
            }
            case TokenType.Operator when token.Value == "{":
            {
                _i++;
                var items = new List<(Expr, Expr)>();
                while (!IsOp("}"))
                {
                    if (items.Count > 0) ExpectOp(",");
                    if (IsOp("}")) break;
                    var key = ParseExpression();
                    ExpectOp(":");
                    items.Add((key, ParseExpression()));
                }
                ExpectOp("}");
                return new DictExpr(token.Position, items);
            }
            default:
                throw Error($"unexpected {token}");
        }
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            if (IsOp(".") || IsOp("[")) node = ParseSubscript(node);
            else if (IsOp("(")) node = ParseCall(node);
            else return node;
        }
    }

    private Expr ParseFilterExpr(Expr node)
    {
        while (true)
        {
            if (IsOp("|"))
            {
                _i++;
                node = ParseFilter(node);
            }
            else if (IsName("is"))
            {
                node = ParseTest(node);
            }
            else if (IsOp("("))
            {
                node = ParseCall(node);
            }
            else
            {
                return node;
            }
        }
    }

    private Expr ParseSubscript(Expr node)
    {
        var token = Next();
        if (token.Value == ".")
        {
            var attribute = Current;
            if (attribute.Type == TokenType.Name)
            {
                _i++;
                return new AttrExpr(token.Position, node, attribute.Value);
            }
            if (attribute.Type == TokenType.Integer)
            {
                _i++;
                return new ItemExpr(token.Position, node, new ConstExpr(attribute.Position, attribute.Literal));
            }
            throw Error($"expected an attribute name or number after '.', got {attribute}");
        }
        // '['
        var args = new List<Expr>();
        while (!IsOp("]"))
        {
            if (args.Count > 0) ExpectOp(",");
            args.Add(ParseSubscribed(node, token.Position));
        }
        ExpectOp("]");
        if (args.Count == 0) throw Error("expected an index or slice in '[]'", token.Position);
        if (args.Count == 1)
            return args[0] is SliceExpr slice ? slice : new ItemExpr(token.Position, node, args[0]);
        if (args.Any(a => a is SliceExpr)) throw Error("tuples of slices are not supported", token.Position);
        return new ItemExpr(token.Position, node, new TupleExpr(token.Position, args));
    }

    private Expr ParseSubscribed(Expr target, int pos)
    {
        Expr? start = null;
        if (!IsOp(":"))
        {
            var node = ParseExpression();
            if (!IsOp(":")) return node;
            start = node;
        }
        _i++; // ':'
        Expr? stop = null, step = null;
        if (!IsOp("]") && !IsOp(",") && !IsOp(":")) stop = ParseExpression();
        if (SkipOp(":"))
        {
            if (!IsOp("]") && !IsOp(",")) step = ParseExpression();
        }
        return new SliceExpr(pos, target, start, stop, step);
    }

    private CallExpr ParseCall(Expr callee)
    {
        int pos = Current.Position;
        var (args, star, starStar) = ParseCallArgs();
        return new CallExpr(pos, callee, args, star, starStar);
    }

    private (List<Argument> Args, Expr? Star, Expr? StarStar) ParseCallArgs()
    {
        ExpectOp("(");
        var args = new List<Argument>();
        Expr? star = null, starStar = null;
        bool requireComma = false;
        while (!IsOp(")"))
        {
            if (requireComma)
            {
                ExpectOp(",");
                if (IsOp(")")) break;
            }
            if (IsOp("*") )
            {
                _i++;
                if (star is not null || starStar is not null) throw Error(
                    "invalid syntax for function call expression");
                star = ParseExpression();
            }
            else if (IsOp("**"))
            {
                _i++;
                if (starStar is not null) throw Error("invalid syntax for function call expression");
                starStar = ParseExpression();
            }
            else if (Current.Type == TokenType.Name && Peek().Type == TokenType.Operator && Peek().Value == "=")
            {
                if (starStar is not null) throw Error("invalid syntax for function call expression");
                string key = Next().Value;
                _i++;
                if (args.Any(a => a.Name == key)) throw Error($"keyword argument '{key}' repeated");
                args.Add(new Argument(key, ParseExpression()));
            }
            else
            {
                if (star is not null || starStar is not null || args.Any(a => a.Name is not null))
                    throw Error("a positional argument follows a keyword argument");
                args.Add(new Argument(null, ParseExpression()));
            }
            requireComma = true;
        }
        ExpectOp(")");
        return (args, star, starStar);
    }

    private FilterExpr ParseFilter(Expr? target)
    {
        int pos = Current.Position;
        string name = ExpectName("a filter name");
        while (IsOp(".") && Peek().Type == TokenType.Name)
        {
            _i++;
            name += "." + Next().Value;
        }
        var args = new List<Argument>();
        if (IsOp("("))
        {
            var (parsed, star, starStar) = ParseCallArgs();
            if (star is not null || starStar is not null) throw Error(
                "*args and **kwargs are not supported in filter calls", pos);
            args = parsed;
        }
        return new FilterExpr(pos, target, name, args);
    }

    private Expr ParseTest(Expr target)
    {
        int isPos = Next().Position; // 'is'
        bool negated = SkipName("not");
        int pos = Current.Position;
        string name = ExpectName("a test name");
        while (IsOp(".") && Peek().Type == TokenType.Name)
        {
            _i++;
            name += "." + Next().Value;
        }
        var args = new List<Argument>();
        if (IsOp("("))
        {
            var (parsed, star, starStar) = ParseCallArgs();
            if (star is not null || starStar is not null) throw Error(
                "*args and **kwargs are not supported in test calls", pos);
            args = parsed;
        }
        else if (
            (Current.Type is TokenType.Name or TokenType.String or TokenType.Integer or TokenType.Float || IsOp("(")
            || IsOp("[") || IsOp("{")) &&
                 !(IsName("else") || IsName("or") || IsName("and")))
        {
            if (IsName("is")) throw Error("you cannot chain multiple tests with 'is'");
            var argument = ParsePostfix(ParsePrimary());
            args.Add(new Argument(null, argument));
        }
        Expr test = new TestExpr(pos, target, name, args);
        return negated ? new UnaryExpr(isPos, "not", test) : test;
    }
}
