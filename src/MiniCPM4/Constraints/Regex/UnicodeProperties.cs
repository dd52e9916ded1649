using System.Globalization;

namespace MiniCPM4.Constraints.Regex;

/// <summary>
/// Code point sets of the Unicode general categories as .NET's <see cref="CharUnicodeInfo"/> knows them (its Unicode
/// version may differ slightly from a given JavaScript engine's), built once on first use.
/// </summary>
internal static class UnicodeProperties
{
    private static CodePointSet[]? s_categories;
    private static readonly object s_lock = new();

    private static CodePointSet[] Categories
    {
        get
        {
            var c = Volatile.Read(ref s_categories);
            if (c is not null) return c;
            lock (s_lock)
            {
                s_categories ??= Build();
                return s_categories;
            }
        }
    }

    private static CodePointSet[] Build()
    {
        const int n = (int)UnicodeCategory.OtherNotAssigned + 1;
        var ranges = new List<(int, int)>[n];
        for (int i = 0; i < n; i++) ranges[i] = [];
        int start = 0;
        var current = CharUnicodeInfo.GetUnicodeCategory(0);
        for (int cp = 1; cp <= CodePointSet.MaxCodePoint + 1; cp++)
        {
            var cat = cp <= CodePointSet.MaxCodePoint ? CharUnicodeInfo.GetUnicodeCategory(cp) : (UnicodeCategory)(-1);
            if (cat == current) continue;
            ranges[(int)current].Add((start, cp - 1));
            start = cp;
            current = cat;
        }
        var sets = new CodePointSet[n];
        for (int i = 0; i < n; i++) sets[i] = CodePointSet.FromRanges(ranges[i]);
        return sets;
    }

    private static readonly Dictionary<string, UnicodeCategory[]> s_names = BuildNames();

    private static Dictionary<string, UnicodeCategory[]> BuildNames()
    {
        var d = new Dictionary<string, UnicodeCategory[]>(StringComparer.Ordinal);
        void Add(UnicodeCategory[] cats, params string[] names)
        {
            foreach (var name in names) d[name] = cats;
        }
        void One(UnicodeCategory cat, params string[] names) => Add([cat], names);

        One(UnicodeCategory.UppercaseLetter, "Lu", "Uppercase_Letter");
        One(UnicodeCategory.LowercaseLetter, "Ll", "Lowercase_Letter");
        One(UnicodeCategory.TitlecaseLetter, "Lt", "Titlecase_Letter");
        One(UnicodeCategory.ModifierLetter, "Lm", "Modifier_Letter");
        One(UnicodeCategory.OtherLetter, "Lo", "Other_Letter");
        Add([UnicodeCategory.UppercaseLetter, UnicodeCategory.LowercaseLetter, UnicodeCategory.TitlecaseLetter],
            "LC", "Cased_Letter");
        Add([UnicodeCategory.UppercaseLetter, UnicodeCategory.LowercaseLetter, UnicodeCategory.TitlecaseLetter,
            UnicodeCategory.ModifierLetter, UnicodeCategory.OtherLetter], "L", "Letter");
        One(UnicodeCategory.NonSpacingMark, "Mn", "Nonspacing_Mark");
        One(UnicodeCategory.SpacingCombiningMark, "Mc", "Spacing_Mark");
        One(UnicodeCategory.EnclosingMark, "Me", "Enclosing_Mark");
        Add([UnicodeCategory.NonSpacingMark, UnicodeCategory.SpacingCombiningMark, UnicodeCategory.EnclosingMark],
            "M", "Mark", "Combining_Mark");
        One(UnicodeCategory.DecimalDigitNumber, "Nd", "Decimal_Number", "digit");
        One(UnicodeCategory.LetterNumber, "Nl", "Letter_Number");
        One(UnicodeCategory.OtherNumber, "No", "Other_Number");
        Add([UnicodeCategory.DecimalDigitNumber, UnicodeCategory.LetterNumber, UnicodeCategory.OtherNumber],
            "N", "Number");
        One(UnicodeCategory.ConnectorPunctuation, "Pc", "Connector_Punctuation");
        One(UnicodeCategory.DashPunctuation, "Pd", "Dash_Punctuation");
        One(UnicodeCategory.OpenPunctuation, "Ps", "Open_Punctuation");
        One(UnicodeCategory.ClosePunctuation, "Pe", "Close_Punctuation");
        One(UnicodeCategory.InitialQuotePunctuation, "Pi", "Initial_Punctuation");
        One(UnicodeCategory.FinalQuotePunctuation, "Pf", "Final_Punctuation");
        One(UnicodeCategory.OtherPunctuation, "Po", "Other_Punctuation");
        Add([UnicodeCategory.ConnectorPunctuation, UnicodeCategory.DashPunctuation, UnicodeCategory.OpenPunctuation,
            UnicodeCategory.ClosePunctuation, UnicodeCategory.InitialQuotePunctuation,
            UnicodeCategory.FinalQuotePunctuation, UnicodeCategory.OtherPunctuation], "P", "Punctuation", "punct");
        One(UnicodeCategory.MathSymbol, "Sm", "Math_Symbol");
        One(UnicodeCategory.CurrencySymbol, "Sc", "Currency_Symbol");
        One(UnicodeCategory.ModifierSymbol, "Sk", "Modifier_Symbol");
        One(UnicodeCategory.OtherSymbol, "So", "Other_Symbol");
        Add([UnicodeCategory.MathSymbol, UnicodeCategory.CurrencySymbol, UnicodeCategory.ModifierSymbol,
            UnicodeCategory.OtherSymbol], "S", "Symbol");
        One(UnicodeCategory.SpaceSeparator, "Zs", "Space_Separator");
        One(UnicodeCategory.LineSeparator, "Zl", "Line_Separator");
        One(UnicodeCategory.ParagraphSeparator, "Zp", "Paragraph_Separator");
        Add([UnicodeCategory.SpaceSeparator, UnicodeCategory.LineSeparator, UnicodeCategory.ParagraphSeparator],
            "Z", "Separator");
        One(UnicodeCategory.Control, "Cc", "Control", "cntrl");
        One(UnicodeCategory.Format, "Cf", "Format");
        One(UnicodeCategory.Surrogate, "Cs", "Surrogate");
        One(UnicodeCategory.PrivateUse, "Co", "Private_Use");
        One(UnicodeCategory.OtherNotAssigned, "Cn", "Unassigned");
        Add([UnicodeCategory.Control, UnicodeCategory.Format, UnicodeCategory.Surrogate, UnicodeCategory.PrivateUse,
            UnicodeCategory.OtherNotAssigned], "C", "Other");
        return d;
    }

    /// <summary>The set of a <c>\p{...}</c> property name (a general category, short or long name, optionally as
    /// <c>gc=</c>/<c>General_Category=</c>; or <c>Any</c>, <c>ASCII</c>, <c>Assigned</c>), or null when
    /// unknown.</summary>
    public static CodePointSet? Lookup(string name)
    {
        int eq = name.IndexOf('=');
        if (eq >= 0)
        {
            string key = name[..eq];
            if (key is not ("gc" or "General_Category")) return null;
            name = name[(eq + 1)..];
        }
        else
        {
            switch (name)
            {
                case "Any": return CodePointSet.All;
                case "ASCII": return CodePointSet.Range(0, 0x7F);
                case "Assigned": return Categories[(int)UnicodeCategory.OtherNotAssigned].Complement();
            }
        }
        if (!s_names.TryGetValue(name, out var cats)) return null;
        var set = CodePointSet.None;
        foreach (var c in cats) set = set.Union(Categories[(int)c]);
        return set;
    }
}
