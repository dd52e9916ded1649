using System.Globalization;
using System.Numerics;
using System.Text.RegularExpressions;

namespace MiniCPM4.BindingsGenerator;

/// <summary>Turns the MCPM_* integer macros of `clang -dM -E` output into constants.</summary>
internal static partial class MacroReader
{
    /// <summary>MCPM_* macros that are not values (attributes, guards); they are skipped on purpose.</summary>
    private static readonly HashSet<string> NonValueMacros = new(StringComparer.Ordinal)
    {
        "MCPM_API",
        "MCPM_BUILDING_LIBRARY",
    };

    public static void Read(string dmOutput, HeaderText header, HeaderModel model)
    {
        var found = new List<(int Offset, CMacro Macro)>();
        foreach (string rawLine in dmOutput.Replace("\r", "").Split('\n'))
        {
            Match m = DefineRegex().Match(rawLine);
            if (!m.Success)
                continue;
            string name = m.Groups["name"].Value;
            if (!name.StartsWith("MCPM_", StringComparison.Ordinal) || NonValueMacros.Contains(name))
                continue;
            if (m.Groups["args"].Success)
                throw new GeneratorException($"macro {name} is function-like; bindings/generator does not support it");

            (int offset, string? doc) = header.FindDefine(name);
            if (offset < 0)
                continue; // defined somewhere else than minicpm4.h
            string value = m.Groups["value"].Value.Trim();
            (string type, string literal) = ParseIntegerLiteral(name, value);
            found.Add((offset, new CMacro(name, type, literal, doc)));
        }
        // Header order; the name breaks ties so the output never depends on clang's hash order.
        found.Sort((a, b) => a.Offset != b.Offset ? a.Offset.CompareTo(b.Offset)
            : string.CompareOrdinal(a.Macro.Name, b.Macro.Name));
        foreach ((_, CMacro macro) in found)
            model.Macros.Add(macro);
    }

    /// <summary>Maps a C integer literal (with optional parentheses, sign and u/l suffixes) to a C# type and
    /// literal.</summary>
    public static (string Type, string Literal) ParseIntegerLiteral(string name, string value)
    {
        string v = value;
        while (v.Length >= 2 && v[0] == '(' && v[^1] == ')')
            v = v[1..^1].Trim();
        Match m = LiteralRegex().Match(v);
        if (!m.Success)
        {
            throw new GeneratorException(
                $"macro {name} = '{value}' is not an integer literal; bindings/generator cannot map it " +
                "(add it to MacroReader.NonValueMacros if it is not a value)");
        }

        bool negative = m.Groups["neg"].Success;
        string digits = m.Groups["digits"].Value;
        string suffix = m.Groups["suffix"].Value.ToLowerInvariant();
        bool unsignedSuffix = suffix.Contains('u');
        bool longSuffix = suffix.Contains('l');
        bool nonDecimal = digits.Length > 1 && digits[0] == '0';

        BigInteger magnitude;
        if (digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            magnitude =
                BigInteger.Parse("0" + digits[2..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        else if (nonDecimal)
            magnitude = digits[1..].Aggregate(BigInteger.Zero, (acc, c) => acc * 8 + (c - '0'));
        else
            magnitude = BigInteger.Parse(digits, CultureInfo.InvariantCulture);

        if (negative && unsignedSuffix)
            throw new GeneratorException($"macro {name} = '{value}': negative unsigned literal");
        BigInteger n = negative ? -magnitude : magnitude;

        // C's rules for the type of an integer constant, restricted to the fixed-size C# types.
        string type;
        if (unsignedSuffix)
            type = n <= uint.MaxValue && !longSuffix ? "uint" : n <= ulong.MaxValue ? "ulong" : "";
        else if (longSuffix)
            type = n >= long.MinValue && n <= long.MaxValue ? "long" : nonDecimal && n <= ulong.MaxValue ? "ulong" : "";
        else if (n >= int.MinValue && n <= int.MaxValue)
            type = "int";
        else if (nonDecimal && n >= 0 && n <= uint.MaxValue)
            type = "uint";
        else if (n >= long.MinValue && n <= long.MaxValue)
            type = "long";
        else if (nonDecimal && n >= 0 && n <= ulong.MaxValue)
            type = "ulong";
        else
            type = "";
        if (type.Length == 0)
            throw new GeneratorException($"macro {name} = '{value}' does not fit a 64-bit integer");

        string text = n.ToString(CultureInfo.InvariantCulture);
        string literal = type switch
        {
            "uint" => text + "u",
            "long" => text + "L",
            "ulong" => text + "UL",
            _ => text,
        };
        return (type, literal);
    }

    [GeneratedRegex(@"^#define\s+(?<name>[A-Za-z_][A-Za-z0-9_]*)(?<args>\([^)]*\))?(?:\s+(?<value>.*))?$")]
    private static partial Regex DefineRegex();

    [GeneratedRegex(@"^(?<neg>-\s*)?(?<digits>0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)" +
                    @"(?<suffix>[uU]?(?:ll|LL|l|L)?|(?:ll|LL|l|L)[uU])$")]
    private static partial Regex LiteralRegex();
}
