using MiniCPM4.Constraints.Regex;

namespace MiniCPM4.Constraints.Grammars;

/// <summary>
/// Grammars for the two simplest constraints: the whole output matches a regular expression, or is one of a list of
/// strings. Each is a single lexeme (no skipped text), so the lexer's longest-match rule never cuts the output short.
/// When the empty output is allowed, the start rule has an ε alternative instead of a lexeme that matches ε.
/// </summary>
public static class SimpleConstraints
{
    /// <summary>The whole output (its UTF-8 bytes) must match the ECMAScript <paramref name="pattern"/>; anchors
    /// are not needed.</summary>
    /// <exception cref="ConstraintCompileException">The pattern is malformed, uses a construct a regular language
    /// cannot express, or matches no string.</exception>
    public static Grammar Regex(string pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var rb = new RegexBuilder();
        int regex;
        try
        {
            regex = rb.Pattern(pattern, CharEncoding.Utf8, search: false);
        }
        catch (RegexNotSupportedException ex)
        {
            throw new ConstraintCompileException(ex.Message, "pattern", null, ex);
        }
        if (rb.IsDead(regex)) throw new ConstraintCompileException("the pattern matches no string", "pattern");
        return WholeOutput(rb, regex, "/" + pattern + "/");
    }

    /// <summary>The output must be exactly one of <paramref name="options"/> (compared as UTF-8 bytes; an empty
    /// option allows an empty output).</summary>
    /// <exception cref="ConstraintCompileException">The list is empty.</exception>
    public static Grammar Choice(IReadOnlyList<string> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Count == 0) throw new ConstraintCompileException("a choice needs at least one option", "choice");
        var rb = new RegexBuilder();
        var literals = new int[options.Count];
        for (int i = 0; i < options.Count; i++)
        {
            var option = options[i] ?? throw new ArgumentNullException(nameof(options), $"option {i} is null");
            literals[i] = rb.Literal(option);
        }
        return WholeOutput(rb, rb.Or(literals), "choice");
    }

    /// <summary>start → L (and start → ε when <paramref name="regex"/> matches the empty string), where L is the
    /// non-empty part of <paramref name="regex"/>.</summary>
    private static Grammar WholeOutput(RegexBuilder rb, int regex, string name)
    {
        var gb = new GrammarBuilder(rb);
        var start = gb.Nonterminal("start");
        bool nullable = rb.IsNullable(regex);
        if (nullable)
        {
            gb.AddRule(start);
            regex = rb.And(regex, rb.Not(RegexBuilder.Empty));
        }
        if (!rb.IsDead(regex)) gb.AddRule(start, gb.Lexeme(regex, name));
        return gb.Build(start);
    }
}
