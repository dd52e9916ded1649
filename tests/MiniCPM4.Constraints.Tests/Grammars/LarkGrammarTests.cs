using System.Text;
using MiniCPM4.Constraints.Grammars;
using NUnit.Framework;

namespace MiniCPM4.Constraints.Tests.Grammars;

public class LarkGrammarTests
{
    private static bool Accepts(Grammar g, string text) => GrammarMatcher.Accepts(g, Encoding.UTF8.GetBytes(text));

    private static void AssertLanguage(Grammar g, string[] accepted, string[] rejected)
    {
        using (Assert.EnterMultipleScope())
        {
            foreach (var s in accepted) Assert.That(Accepts(g, s), Is.True, $"should accept \"{s}\"");
            foreach (var s in rejected) Assert.That(Accepts(g, s), Is.False, $"should reject \"{s}\"");
        }
    }

    private static ConstraintCompileException AssertError(string grammar, string pointer, string keyword,
        string? messagePart = null)
    {
        var ex = Assert.Throws<ConstraintCompileException>(() => LarkGrammar.Parse(grammar))!;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(ex.Pointer, Is.EqualTo(pointer), ex.Message);
            Assert.That(ex.Keyword, Is.EqualTo(keyword), ex.Message);
            Assert.That(ex.Message, Does.Contain(pointer));
            Assert.That(ex.Message, Does.Contain(keyword));
            if (messagePart is not null) Assert.That(ex.Message, Does.Contain(messagePart));
        }
        return ex;
    }

    // ---- Languages ----

    [Test]
    public void Arithmetic_WithIgnoredWhitespace()
    {
        var g = LarkGrammar.Parse("""
            // Arithmetic with the usual precedence.
            ?start: sum
            ?sum: product
                | sum "+" product   -> add
                | sum "-" product   -> sub
            ?product: atom
                | product "*" atom
                | product "/" atom
            ?atom: NUMBER | "-" atom | "(" sum ")"
            %import common.NUMBER
            %import common.WS_INLINE
            %ignore WS_INLINE
            """);
        AssertLanguage(g,
            ["1", "1+2", "1 + 2 * (3 - 4.5)", "-3", "  7", "2e10*3", "((1))/ -2", "1\t-\t2"],
            ["", "1+", "(1", "1 2", "1\n+2", "+1", "1++2", "()", "a"]);
    }

    [Test]
    public void JsonLike()
    {
        var g = LarkGrammar.Parse("""
            ?start: value
            ?value: object
                  | array
                  | string
                  | SIGNED_NUMBER      -> number
                  | "true"             -> true
                  | "false"            -> false
                  | "null"             -> null
            array  : "[" [value ("," value)*] "]"
            object : "{" [pair ("," pair)*] "}"
            pair   : string ":" value
            string : ESCAPED_STRING

            %import common.ESCAPED_STRING
            %import common.SIGNED_NUMBER
            %import common.WS
            %ignore WS
            """);
        AssertLanguage(g,
            [
                """{"a": [1, -2.5e3, true, null], "b\"c": {}}""", "[]", "\"x\"", "[ [ ] ]", "false",
                "{\n  \"k\": \"v\\\\\",\n  \"n\": [0.5, 3]\n}",
            ],
            ["[1,]", """{"a"}""", "{a: 1}", "[1 2]", "\"unterminated", "tru", "truex", "{,}", "[\"a\nb\"]"]);
    }

    [Test]
    public void RepetitionOperators()
    {
        var g = LarkGrammar.Parse("""start: "x"+ "y"* "z"? ["w"] ("v" | "u")""");
        AssertLanguage(g, ["xv", "xxxyyzwu", "xzv", "xwu", "xyv"], ["v", "yv", "xzzv", "xwwv", "x", "xvu"]);
    }

    [Test]
    public void RepetitionCounts_InRulesAndTerminals()
    {
        var exact = LarkGrammar.Parse("start: \"ab\" ~ 3");
        AssertLanguage(exact, ["ababab"], ["abab", "abababab", ""]);

        var range = LarkGrammar.Parse("start: (\"a\" | \"b\")~2..3 \"c\"");
        AssertLanguage(range, ["abc", "bbac", "aac"], ["ac", "abbac", "c"]);

        var zero = LarkGrammar.Parse("start: \"a\"~0..1 \"b\"");
        AssertLanguage(zero, ["b", "ab"], ["aab"]);

        var terminal = LarkGrammar.Parse("""
            start: CODE
            CODE: ("0".."9")~4 "-" HEX~2..3
            HEX: /[0-9a-f]/
            """);
        AssertLanguage(terminal, ["1234-ab", "0000-fff"], ["123-ab", "1234-a", "1234-abcd", "1234-AB"]);
        Assert.That(terminal.LexemeNames, Is.EqualTo(new[] { "CODE" }));
    }

    [Test]
    public void CaseInsensitiveLiterals()
    {
        var g = LarkGrammar.Parse("""
            start: "select"i " " /[0-9]+/ ";"
            """);
        AssertLanguage(g, ["select 1;", "SELECT 22;", "sElEcT 3;"], ["selec 1;", "SELECTT 1;", "select  1;"]);

        var unicode = LarkGrammar.Parse("start: \"äöx\"i");
        AssertLanguage(unicode, ["äöx", "ÄÖX", "äÖx"], ["aox", "ÄÖ"]);

        var inTerminal = LarkGrammar.Parse("start: KW\nKW: \"if\"i | \"then\"i");
        AssertLanguage(inTerminal, ["IF", "Then", "tHEN"], ["iff", "the"]);
    }

    [Test]
    public void CaseInsensitiveRegexes()
    {
        var g = LarkGrammar.Parse("start: /ab[c-e]x/i");
        AssertLanguage(g, ["abcx", "ABDX", "abEx", "AbCX"], ["abfx", "ABFX", "abx"]);

        var negated = LarkGrammar.Parse("start: /[^a-c]+/i");
        AssertLanguage(negated, ["xyz", "XYZ", "123"], ["a", "B", "xCx"]);

        var named = LarkGrammar.Parse("start: /(?<name>k)\\w/i");
        AssertLanguage(named, ["kA", "K_"], ["xA"]);

        var escapes = LarkGrammar.Parse("start: /\\d+q/i");
        AssertLanguage(escapes, ["12Q", "3q"], ["q", "12"]);
    }

    [Test]
    public void RegexTerminals()
    {
        var g = LarkGrammar.Parse("""
            start: IDENT ("," IDENT)*
            IDENT: /[a-z_][a-z0-9_]*/
            %ignore " "
            """);
        AssertLanguage(g, ["foo", "foo, bar_1", "a ,b,c"], ["1foo", "foo,", "Foo", "foo bar"]);

        var slash = LarkGrammar.Parse("start: /a\\/b/");
        AssertLanguage(slash, ["a/b"], ["ab", "a\\/b"]);

        var pythonGroup = LarkGrammar.Parse("start: /(?P<x>a)b+/");
        AssertLanguage(pythonGroup, ["ab", "abbb"], ["a"]);

        var unicode = LarkGrammar.Parse("start: /\\p{Lu}\\w*/");
        AssertLanguage(unicode, ["Ab", "É"], ["ab"]);
    }

    [Test]
    public void LiteralRanges()
    {
        var g = LarkGrammar.Parse("start: (\"a\"..\"c\")+ \"α\"..\"ω\"");
        AssertLanguage(g, ["abcβ", "cω", "aα"], ["dα", "a", "aΑ"]);
    }

    [Test]
    public void LiteralRange_CoversEveryUtf8Length()
    {
        var g = LarkGrammar.Parse("start: R\nR: \"\\u00e9\"..\"\\U0001F600\"");
        var rx = g.Regex;
        int lexeme = g.LexemeRegexes.Single();
        int[] inside =
            [0xE9, 0xFF, 0x100, 0x7FF, 0x800, 0xFFF, 0x1000, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x1F5FF, 0x1F600];
        int[] outside = [0x41, 0xE8, 0x1F601, 0x10FFFF];
        using (Assert.EnterMultipleScope())
        {
            foreach (int cp in inside)
                Assert.That(rx.Matches(lexeme, Encoding.UTF8.GetBytes(char.ConvertFromUtf32(cp))), Is.True,
                    $"U+{cp:X}");
            foreach (int cp in outside)
                Assert.That(rx.Matches(lexeme, Encoding.UTF8.GetBytes(char.ConvertFromUtf32(cp))), Is.False,
                    $"U+{cp:X}");
            Assert.That(rx.Matches(lexeme, [0xED, 0xA0, 0x80]), Is.False, "an encoded surrogate");
            Assert.That(rx.Matches(lexeme, [0xE0, 0x80, 0x80]), Is.False, "an overlong encoding");
        }
    }

    [Test]
    public void StringEscapes()
    {
        var g = LarkGrammar.Parse("""start: "a\n\t\\\"\u00e9\x41\U0001F600" "\/" """);
        AssertLanguage(g, ["a\n\t\\\"éA😀/"], ["a\\n"]);
    }

    [Test]
    public void ImportedCommonTerminals()
    {
        var g = LarkGrammar.Parse("""
            start: ID "=" (INT | WORD) ";"
            %import common.CNAME -> ID
            %import common (INT, WORD, WS)
            %ignore WS
            """);
        AssertLanguage(g, ["x = 1;", "_a1=abc ;", "Y=\n42;"], ["1x = 1;", "x = a1;", "x = -1;"]);
    }

    private static readonly object[] CommonCases =
    [
        new object[] { "WS", new[] { " ", " \t\r\n\f" }, new[] { "", "x" } },
        new object[] { "WS_INLINE", new[] { " ", "\t \t" }, new[] { "\n", " \n" } },
        new object[] { "NEWLINE", new[] { "\n", "\r\n", "\n\r\n\n" }, new[] { "\r", " \n" } },
        new object[] { "CR", new[] { "\r" }, new[] { "\n" } },
        new object[] { "LF", new[] { "\n" }, new[] { "\r" } },
        new object[] { "DIGIT", new[] { "0", "9" }, new[] { "a", "12" } },
        new object[] { "HEXDIGIT", new[] { "0", "a", "F" }, new[] { "g", "ff" } },
        new object[] { "INT", new[] { "0", "0123" }, new[] { "-1", "1.0", "" } },
        new object[] { "SIGNED_INT", new[] { "1", "-1", "+20" }, new[] { "--1", "1-" } },
        new object[] { "DECIMAL", new[] { "1.5", "1.", ".5" }, new[] { "1", ".", "1.5e3" } },
        new object[] { "FLOAT", new[] { "1.5", "1e3", "1.5E-3", ".5e+1", "1." }, new[] { "1", "e3", "1e" } },
        new object[] { "NUMBER", new[] { "1", "1.5", "2e9" }, new[] { "-1", "1..2" } },
        new object[] { "SIGNED_NUMBER", new[] { "-1", "+1.5", "3", "-2e-2" }, new[] { "+-1", "-" } },
        new object[] { "LETTER", new[] { "a", "Z" }, new[] { "1", "ab", "é" } },
        new object[] { "UCASE_LETTER", new[] { "A" }, new[] { "a" } },
        new object[] { "LCASE_LETTER", new[] { "a" }, new[] { "A" } },
        new object[] { "WORD", new[] { "a", "Hello" }, new[] { "a1", "a b" } },
        new object[] { "CNAME", new[] { "_", "a1", "_Foo_2" }, new[] { "1a", "a-b" } },
        new object[] { "ESCAPED_STRING", new[] { "\"\"", "\"a b\"", "\"a\\\"b\"", "\"\\\\\"", "\"é\"" },
            new[] { "\"a", "\"a\"b\"", "\"\\\"", "\"a\nb\"", "a" } },
    ];

    [TestCaseSource(nameof(CommonCases))]
    public void CommonTerminal(string name, string[] accepted, string[] rejected)
    {
        var g = LarkGrammar.Parse($"start: {name}\n%import common.{name}");
        int lexeme = g.LexemeRegexes.Single();
        using (Assert.EnterMultipleScope())
        {
            foreach (var s in accepted)
                Assert.That(g.Regex.Matches(lexeme, Encoding.UTF8.GetBytes(s)), Is.True,
                    $"{name} should match \"{s}\"");
            foreach (var s in rejected)
                Assert.That(g.Regex.Matches(lexeme, Encoding.UTF8.GetBytes(s)), Is.False,
                    $"{name} should not match \"{s}\"");
        }
    }

    [Test]
    public void CommentsPrefixesPrioritiesAndAliases_DoNotChangeTheLanguage()
    {
        var g = LarkGrammar.Parse("""
            // a comment line

            start: _item+            // trailing comment
            _item.2: word
                   | number -> num   // an alias
            !word: "w"
            ?number.-1: DIGITS
            DIGITS.5: /[0-9]+/
            """);
        AssertLanguage(g, ["w", "w12w", "3"], ["", "x"]);
    }

    [Test]
    public void AlternativesMayStartOnTheNextLine_AndGroupsMaySpanLines()
    {
        var g = LarkGrammar.Parse("""
            start:
                 | "a" ( "b"
                         | "c" )
                 | "d"
            """);
        AssertLanguage(g, ["", "ab", "ac", "d"], ["a", "bd"]);
    }

    [Test]
    public void CommentLinesBetweenAlternatives_DoNotEndTheRule()
    {
        var g = LarkGrammar.Parse("""
            start: "a"
            // the second alternative:

                 | "b"
            other: "c"
            """);
        AssertLanguage(g, ["a", "b"], ["c"]);
    }

    [Test]
    public void KeywordsOverlappingANamedTerminal()
    {
        var g = LarkGrammar.Parse("""
            start: stmt+
            stmt: "if" NAME "then" NAME ";" | NAME ";"
            NAME: /[a-z]+/
            %import common.WS
            %ignore WS
            """);
        AssertLanguage(g, ["if x then y;", "x;", "iffy; if a then b;", "if if then then;"], ["if x;", "if x then;"]);
    }

    [Test]
    public void Lexing_IsGreedyWithoutBacktracking()
    {
        // A swallows the "b" the rule needs next: Lark's standard lexer behaves the same.
        var greedy = LarkGrammar.Parse("start: A \"b\"\nA: /a[ab]*/");
        AssertLanguage(greedy, [], ["ab", "aab"]);
        var separate = LarkGrammar.Parse("start: A \"b\"\nA: /a+/");
        AssertLanguage(separate, ["ab", "aab"], ["abb"]);
    }

    [Test]
    public void EmptyAlternative_IsEpsilon()
    {
        var g = LarkGrammar.Parse("start: \"a\" |");
        AssertLanguage(g, ["", "a"], ["aa"]);
    }

    [Test]
    public void RecursiveRules()
    {
        var g = LarkGrammar.Parse("""
            start: list
            list: "(" list* ")"
            """);
        AssertLanguage(g, ["()", "(()())", "((()))"], ["(", "())", ")("]);
    }

    // ---- Structure ----

    [Test]
    public void InlineLiterals_AreInternedByRegex()
    {
        var g = LarkGrammar.Parse("""
            start: "a" b "a" A
            b: "a" "b" /a/
            A: "a"
            """);
        Assert.That(g.LexemeNames, Has.Count.EqualTo(2));
        Assert.That(g.LexemeNames, Does.Contain("\"b\""));
    }

    [Test]
    public void TerminalsBuiltFromTerminals_AreOneLexeme_AndUnusedTerminalsAreNoLexemes()
    {
        var g = LarkGrammar.Parse("""
            start: NUMBER
            NUMBER: DIGIT+ ("." DIGIT+)?
            DIGIT: "0".."9"
            UNUSED: /x+/
            """);
        Assert.That(g.LexemeNames, Is.EqualTo(new[] { "NUMBER" }));
        AssertLanguage(g, ["1", "12.50"], ["1.", ".5", "x"]);
    }

    [Test]
    public void OnlyRulesReachableFromStart_AreCompiled()
    {
        var g = LarkGrammar.Parse("""
            start: "a"
            other: "b" other | "c"
            """);
        Assert.That(g.NonterminalNames, Does.Not.Contain("other"));
        Assert.That(g.NonterminalNames[g.Start], Is.EqualTo("start"));
        Assert.That(g.LexemeNames, Is.EqualTo(new[] { "\"a\"" }));
    }

    [Test]
    public void Ignore_BecomesTheSkipRegex()
    {
        var none = LarkGrammar.Parse("start: \"a\"");
        Assert.That(none.SkipRegex, Is.EqualTo(global::MiniCPM4.Constraints.Regex.RegexBuilder.Empty));

        var g = LarkGrammar.Parse("""
            start: "a" "b"
            %ignore " "
            %ignore COMMENT
            COMMENT: /#[^\n]*\n/
            """);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(g.Regex.Matches(g.SkipRegex, ""u8), Is.True);
            Assert.That(g.Regex.Matches(g.SkipRegex, "  # note\n "u8), Is.True);
            Assert.That(g.Regex.Matches(g.SkipRegex, "x"u8), Is.False);
        }
        AssertLanguage(g, ["ab", " a # c\n b"], ["a # c b"]);
    }

    // ---- SimpleConstraints ----

    [Test]
    public void SimpleRegex()
    {
        var g = SimpleConstraints.Regex("[0-9]{3}-[0-9]{4}");
        AssertLanguage(g, ["555-1234"], ["555-123", "x555-1234", "555-12345", ""]);
        Assert.That(g.SkipRegex, Is.EqualTo(global::MiniCPM4.Constraints.Regex.RegexBuilder.Empty));

        var nullable = SimpleConstraints.Regex("(ab)*");
        AssertLanguage(nullable, ["", "ab", "abab"], ["a", "aba"]);

        var unicode = SimpleConstraints.Regex("\\p{L}+");
        AssertLanguage(unicode, ["héllo", "日本"], ["", "a1"]);
    }

    [Test]
    public void SimpleRegex_Errors()
    {
        var bad = Assert.Throws<ConstraintCompileException>(() => SimpleConstraints.Regex("(a"))!;
        Assert.That(bad.Keyword, Is.EqualTo("pattern"));
        Assert.Throws<ConstraintCompileException>(() => SimpleConstraints.Regex("(a)\\1"));
        Assert.Throws<ConstraintCompileException>(() => SimpleConstraints.Regex("[^\\s\\S]"));
    }

    [Test]
    public void SimpleChoice()
    {
        var g = SimpleConstraints.Choice(["yes", "no", "yesno", "日本"]);
        AssertLanguage(g, ["yes", "no", "yesno", "日本"], ["ye", "yesn", "", "noyes", "yes "]);

        var withEmpty = SimpleConstraints.Choice(["", "a"]);
        AssertLanguage(withEmpty, ["", "a"], ["aa"]);

        var ex = Assert.Throws<ConstraintCompileException>(() => SimpleConstraints.Choice([]))!;
        Assert.That(ex.Keyword, Is.EqualTo("choice"));
    }

    // ---- Errors ----

    [Test]
    public void Error_MissingStart() =>
        AssertError("foo: \"a\"", "1:1", "start", "no 'start' rule");

    [Test]
    public void Error_UndefinedRule() =>
        AssertError("start: \"a\" foo", "1:12", "foo", "undefined rule");

    [Test]
    public void Error_UndefinedTerminal() =>
        AssertError("start: A\n\nA: \"a\" NUMBER", "3:8", "NUMBER", "undefined terminal");

    [Test]
    public void Error_NonProductiveRule() =>
        AssertError("start: \"x\" | a\na: \"x\" a\n", "2:1", "a", "never derive a finite string");

    [Test]
    public void Error_MutuallyNonProductiveRules()
    {
        var ex = AssertError("start: b \"x\"\nb: c\nc: \"(\" b \")\"", "1:1", "start", "never derive");
        Assert.That(ex.Message, Does.Contain("b (2:1)").And.Contain("c (3:1)"));
    }

    [Test]
    public void Error_RecursiveTerminals() =>
        AssertError("start: A\nA: \"x\" B\nB: \"y\" A?", "3:8", "A", "recursion in terminals (A -> B -> A)");

    [Test]
    public void Error_SelfRecursiveTerminal() =>
        AssertError("start: A\nA: \"(\" A \")\" | \"x\"", "2:8", "A", "recursion in terminals");

    [Test]
    public void Error_TerminalUsesRule() =>
        AssertError("start: A\nA: \"x\" b\nb: \"y\"", "2:8", "b", "terminal 'A' uses rule 'b'");

    [Test]
    public void Error_SyntaxErrors()
    {
        AssertError("start: \"a\" )", "1:12", ")", "syntax error");
        AssertError("start: (\"a\"", "1:12", "syntax", "expected ')'");
        AssertError("start \"a\"", "1:7", "\"a\"", "expected ':'");
        AssertError("start: \"a\"\n  \"b\": x", "2:3", "\"b\"", "syntax error");
        AssertError("start: \"a\" ~", "1:13", "syntax", "repetition count");
        AssertError("start: \"a\" ~ 3..1", "1:12", "~", "empty");
        AssertError("start: \"a\" ; \"b\"", "1:12", ";", "unexpected character");
        AssertError("start: | | *", "1:12", "*", "syntax error");
    }

    [Test]
    public void Error_Literals()
    {
        AssertError("start: \"abc", "1:8", "string", "unterminated");
        AssertError("start: \"a\\qb\"", "1:10", "\\q", "unknown escape");
        AssertError("start: \"\\uD800\"", "1:8", "string", "surrogate");
        AssertError("start: \"\\UFFFFFFFF\"", "1:9", "escape", "above U+10FFFF");
        AssertError("start: \"\\x4\"", "1:9", "escape", "hexadecimal digits");
        AssertError("start: /abc", "1:8", "regex", "unterminated");
        AssertError("start: \"ab\"..\"c\"", "1:8", "..", "single character");
        AssertError("start: \"z\"..\"a\"", "1:8", "..", "empty");
    }

    [Test]
    public void Error_UnsupportedRegexFlag() =>
        AssertError("start: /a/x", "1:11", "/x", "flag 'x' is not supported");

    [Test]
    public void Error_UnsupportedRegexConstruct()
    {
        var ex = AssertError("start: \"a\"\n  | /(a)\\1/", "2:5", "/(a)\\1/", "regular expression");
        Assert.That(ex.InnerException, Is.TypeOf<global::MiniCPM4.Constraints.Regex.RegexNotSupportedException>());
    }

    [Test]
    public void Error_EmptyTerminal()
    {
        AssertError("start: \"a\" \"\"", "1:12", "\"\"", "matches the empty string");
        AssertError("start: \"a\" X\nX: /b*/", "1:12", "X", "matches the empty string");
        AssertError("start: \"a\" X\nX: /[^\\s\\S]/", "1:12", "X", "matches no string");
    }

    [Test]
    public void Error_NamesAndDefinitions()
    {
        AssertError("start: Foo", "1:8", "Foo", "upper-case");
        AssertError("start: \"a\"\nstart: \"b\"", "2:1", "start", "defined twice (first at 1:1)");
        AssertError("start: A\n?A: \"a\"", "2:1", "?", "apply to rules");
    }

    [Test]
    public void Error_Templates()
    {
        AssertError("start: sep{\"a\"}", "1:11", "template", "not supported");
        AssertError("start: \"a\"\nsep{x}: x (\",\" x)*", "2:4", "template", "not supported");
    }

    [Test]
    public void Error_Directives()
    {
        AssertError("start: A\n%declare A", "2:1", "%declare", "not supported");
        AssertError("start: \"a\"\n%override start: \"b\"", "2:1", "%override", "not supported");
        AssertError("start: \"a\"\n%extend start: \"b\"", "2:1", "%extend", "not supported");
        AssertError("start: \"a\"\n%frobnicate", "2:1", "%frobnicate", "unknown directive");
        AssertError("start: \"a\"\n%import other.X", "2:9", "%import", "only the 'common' module");
        AssertError("start: \"a\"\n%import common.NOPE", "2:16", "NOPE", "defines no terminal");
        AssertError("start: \"a\"\n%import common.WS\n%import common.WS", "3:16", "WS", "defined twice");
        AssertError("start: \"a\"\n%ignore", "2:8", "syntax", "to ignore");
        AssertError("start: \"a\"\n%ignore start", "2:9", "%ignore", "not rule 'start'");
        AssertError("start: \"a\"\n%ignore X", "2:9", "X", "undefined terminal");
    }

    [Test]
    public void Error_ReportsLineAndColumnInMessage()
    {
        var ex = Assert.Throws<ConstraintCompileException>(() => LarkGrammar.Parse("start: \"a\"\n\n   x: y"))!;
        Assert.That(ex.Message, Is.EqualTo("'y' at 3:7: undefined rule 'y'"));
    }
}
