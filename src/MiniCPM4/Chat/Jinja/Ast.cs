namespace MiniCPM4.Chat.Jinja;

// The syntax tree of a parsed template. Every node keeps the source offset it starts at (for error positions).

internal abstract record Node(int Pos);

// ---- expressions ------------------------------------------------------------------------------------------------

internal abstract record Expr(int Pos) : Node(Pos);

internal sealed record ConstExpr(int Pos, object? Value) : Expr(Pos);

internal sealed record NameExpr(int Pos, string Name) : Expr(Pos);

internal sealed record ListExpr(int Pos, List<Expr> Items) : Expr(Pos);

internal sealed record TupleExpr(int Pos, List<Expr> Items) : Expr(Pos);

internal sealed record DictExpr(int Pos, List<(Expr Key, Expr Value)> Items) : Expr(Pos);

/// <summary><c>obj.name</c>: attribute first, then item (Jinja2's <c>getattr</c>).</summary>
internal sealed record AttrExpr(int Pos, Expr Target, string Name) : Expr(Pos);

/// <summary><c>obj[key]</c>: item first, then attribute (Jinja2's <c>getitem</c>).</summary>
internal sealed record ItemExpr(int Pos, Expr Target, Expr Key) : Expr(Pos);

internal sealed record SliceExpr(int Pos, Expr Target, Expr? Start, Expr? Stop, Expr? Step) : Expr(Pos);

internal sealed record Argument(string? Name, Expr Value);

internal sealed record CallExpr(int Pos, Expr Callee, List<Argument> Args, Expr? StarArgs, Expr? StarKwargs)
    : Expr(Pos);

internal sealed record FilterExpr(int Pos, Expr? Target, string Name, List<Argument> Args) : Expr(Pos);

internal sealed record TestExpr(int Pos, Expr Target, string Name, List<Argument> Args) : Expr(Pos);

internal sealed record UnaryExpr(int Pos, string Op, Expr Operand) : Expr(Pos);

internal sealed record BinaryExpr(int Pos, string Op, Expr Left, Expr Right) : Expr(Pos);

internal sealed record CompareExpr(int Pos, Expr First, List<(string Op, Expr Operand)> Rest) : Expr(Pos);

internal sealed record CondExpr(int Pos, Expr Test, Expr Then, Expr? Else) : Expr(Pos);

// ---- statements -------------------------------------------------------------------------------------------------

internal abstract record Stmt(int Pos) : Node(Pos);

internal sealed record DataStmt(int Pos, string Text) : Stmt(Pos);

internal sealed record OutputStmt(int Pos, Expr Value) : Stmt(Pos);

internal sealed record IfStmt(int Pos, List<(Expr Test, List<Stmt> Body)> Branches, List<Stmt>? Else) : Stmt(Pos);

internal sealed record ForStmt(int Pos, Target Target, Expr Iterable, Expr? Filter, List<Stmt> Body, List<Stmt>? Else,
    bool Recursive)
    : Stmt(Pos);

internal sealed record SetStmt(int Pos, Target Target, Expr Value) : Stmt(Pos);

internal sealed record SetBlockStmt(int Pos, Target Target, List<FilterExpr> Filters, List<Stmt> Body) : Stmt(Pos);

internal sealed record MacroStmt(int Pos, string Name, List<(string Name, Expr? Default)> Params, List<Stmt> Body)
    : Stmt(Pos);

internal sealed record CallBlockStmt(int Pos, CallExpr Call, List<(string Name, Expr? Default)> Params, List<Stmt> Body)
    : Stmt(Pos);

internal sealed record FilterBlockStmt(int Pos, List<FilterExpr> Filters, List<Stmt> Body) : Stmt(Pos);

internal sealed record BreakStmt(int Pos) : Stmt(Pos);

internal sealed record ContinueStmt(int Pos) : Stmt(Pos);

/// <summary><c>{% generation %}</c> (transformers' assistant-mask extension): renders its body unchanged.</summary>
internal sealed record GenerationStmt(int Pos, List<Stmt> Body) : Stmt(Pos);

// ---- assignment targets -----------------------------------------------------------------------------------------

internal abstract record Target(int Pos);

internal sealed record NameTarget(int Pos, string Name) : Target(Pos);

internal sealed record TupleTarget(int Pos, List<Target> Items) : Target(Pos);

/// <summary><c>ns.attr</c> in <c>{% set ns.attr = … %}</c>.</summary>
internal sealed record AttrTarget(int Pos, string Object, string Attribute) : Target(Pos);
