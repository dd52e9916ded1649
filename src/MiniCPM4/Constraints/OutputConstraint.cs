using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text.Json;
using MiniCPM4.Constraints.Grammars;
using MiniCPM4.Constraints.Json;
using MiniCPM4.Constraints.TokenMasks;

namespace MiniCPM4.Constraints;

/// <summary>What a constraint is written in.</summary>
public enum ConstraintKind
{
    /// <summary>A JSON Schema: the output is one JSON value valid under it.</summary>
    JsonSchema,
    /// <summary>An ECMAScript regular expression the whole output must match.</summary>
    Regex,
    /// <summary>A grammar in the Lark-like format of docs/grammar-format.md.</summary>
    Grammar,
    /// <summary>The output is exactly one of a list of strings.</summary>
    Choice,
    /// <summary>A call of one of some functions, with keyword arguments valid under each one's parameters schema
    /// (MiniCPM4's tool-call syntax: <c>name(arg="text", n=5)</c>).</summary>
    ToolCall,
}

/// <summary>
/// What generated text must be, enforced token by token (<see cref="GenerationOptions.Constraint"/>): at every step
/// only tokens that keep the output inside the constraint's language can be drawn, and end of output is allowed
/// exactly when the output is complete. Created through the factories, which compile the constraint at once (so a
/// constraint the engine cannot enforce exactly fails here, with a <see cref="ConstraintCompileException"/> naming
/// the keyword or construct) and cache the result by source text. Immutable and thread-safe.
/// </summary>
public sealed class OutputConstraint
{
    private const int CacheLimit = 512;
    private static readonly ConcurrentDictionary<(ConstraintKind, string, JsonSchemaOptions?),
        Lazy<OutputConstraint>> Cache = new();

    private readonly ConditionalWeakTable<TokenVocabulary, TokenMaskComputer> _computers = new();
    private readonly Lexer _lexer;

    private OutputConstraint(ConstraintKind kind, string source, Grammar grammar)
    {
        Kind = kind;
        Source = source;
        CompiledGrammar = grammar;
        _lexer = new Lexer(grammar);  // rejects lexemes that match the empty string
        if (!grammar.HasSentence())
            throw new ConstraintCompileException(
                $"the {kind} constraint accepts no output at all (it is unsatisfiable)")
            {
                Unsatisfiable = true,
            };
    }

    public ConstraintKind Kind { get; }
    /// <summary>The schema, pattern or grammar text (choices joined by newlines).</summary>
    public string Source { get; }
    internal Grammars.Grammar CompiledGrammar { get; }
    /// <summary>Serializes the lexer, parsers and mask caches of this constraint (they are shared).</summary>
    internal object Gate { get; } = new();

    /// <summary>A JSON Schema constraint (drafts 4 to 2020-12; see docs for the supported keywords).</summary>
    public static OutputConstraint JsonSchema(string schema, JsonSchemaOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(schema);
        return Cached(ConstraintKind.JsonSchema, schema, options, () => JsonSchemaCompiler.Compile(schema, options));
    }

    /// <summary>
    /// A JSON Schema constraint for generation: objects get only the properties their schema declares
    /// (<see cref="JsonSchemaOptions.AllowUndeclaredProperties"/> false, so a model does not add keys at will), unless
    /// that leaves nothing to generate (properties declared in one <c>allOf</c> branch are undeclared in another),
    /// in which case the schema's own meaning is used.
    /// </summary>
    public static OutputConstraint JsonSchemaDeclaredProperties(string schema)
    {
        try
        {
            return JsonSchema(schema, DeclaredOnly);
        }
        catch (ConstraintCompileException e) when (e.Unsatisfiable)
        {
            return JsonSchema(schema);
        }
    }

    private static readonly JsonSchemaOptions DeclaredOnly = new() { AllowUndeclaredProperties = false };

    /// <summary>A JSON Schema constraint from a parsed schema.</summary>
    public static OutputConstraint JsonSchema(JsonElement schema, JsonSchemaOptions? options = null) =>
        JsonSchema(schema.GetRawText(), options);

    /// <summary>The whole output matches <paramref name="pattern"/> (ECMAScript syntax).</summary>
    public static OutputConstraint Regex(string pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        return Cached(ConstraintKind.Regex, pattern, null, () => SimpleConstraints.Regex(pattern));
    }

    /// <summary>The output is a sentence of <paramref name="grammar"/> (docs/grammar-format.md).</summary>
    public static OutputConstraint Grammar(string grammar)
    {
        ArgumentNullException.ThrowIfNull(grammar);
        return Cached(ConstraintKind.Grammar, grammar, null, () => LarkGrammar.Parse(grammar));
    }

    /// <summary>The output is exactly one of <paramref name="options"/>.</summary>
    public static OutputConstraint Choice(IEnumerable<string> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var list = options.ToArray();
        return Cached(ConstraintKind.Choice, string.Join('\n', list), null, () => SimpleConstraints.Choice(list));
    }

    /// <summary>
    /// A call of one of <paramref name="functions"/> in Python keyword-argument syntax, the arguments valid under
    /// the function's JSON Schema (see <see cref="JsonSchemaOptions.PythonCall"/>): how a required tool call is
    /// constrained.
    /// </summary>
    public static OutputConstraint ToolCall(IEnumerable<(string Name, JsonElement Parameters)> functions)
    {
        ArgumentNullException.ThrowIfNull(functions);
        var list = functions.Select(f => (f.Name, f.Parameters.Clone())).ToArray();
        var source = string.Join('\n', list.Select(f => f.Name + " " + f.Item2.GetRawText()));
        return Cached(ConstraintKind.ToolCall, source, null, () => JsonSchemaCompiler.CompilePythonCalls(list));
    }

    /// <summary>Whether <paramref name="text"/> as a whole is in the constraint's language.</summary>
    public bool Accepts(string text)
    {
        lock (Gate)
        {
            var m = new GrammarMatcher(_lexer);
            return m.TryConsume(System.Text.Encoding.UTF8.GetBytes(text)) && m.IsComplete;
        }
    }

    public override string ToString() => $"{Kind} constraint";

    /// <summary>A matcher for one generation over <paramref name="vocabulary"/>; <paramref name="stopIds"/> end the
    /// output and are allowed exactly when it is complete.</summary>
    internal ConstraintMatcher CreateMatcher(TokenVocabulary vocabulary, IReadOnlyList<int> stopIds)
    {
        TokenMaskComputer computer;
        lock (Gate) computer = _computers.GetValue(vocabulary, v => new TokenMaskComputer(_lexer, v));
        return new ConstraintMatcher(this, computer, stopIds);
    }

    private static OutputConstraint Cached(ConstraintKind kind, string source, JsonSchemaOptions? options,
        Func<Grammar> compile)
    {
        if (Cache.Count > CacheLimit) Cache.Clear();
        var lazy = Cache.GetOrAdd((kind, source, options),
            _ => new Lazy<OutputConstraint>(() => new OutputConstraint(kind, source, compile())));
        try
        {
            return lazy.Value;
        }
        catch
        {
            Cache.TryRemove((kind, source, options), out _);  // errors are not cached
            throw;
        }
    }
}
