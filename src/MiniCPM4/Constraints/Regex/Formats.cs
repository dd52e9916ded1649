namespace MiniCPM4.Constraints.Regex;

/// <summary>
/// Whole-string regular expressions for JSON Schema <c>format</c> values. Each accepts a subset of (usually exactly)
/// what Python's <c>jsonschema</c> <c>FormatChecker</c> accepts with the usual extras installed (rfc3339-validator,
/// fqdn, rfc3986-validator/rfc3987): a string matched here always passes the checker. The grammars (ECMAScript
/// syntax, all ASCII, so the same in every <see cref="CharEncoding"/>):
/// <list type="bullet">
/// <item><c>date</c>: RFC 3339 full-date <c>YYYY-MM-DD</c>, years 0001–9999 (Python's <c>date.fromisoformat</c> has no
/// year 0), months 01–12, days per month exact, Feb 29 only in leap years (Gregorian: divisible by 4, centuries only
/// when divisible by 400).</item>
/// <item><c>time</c>: RFC 3339 full-time <c>HH:MM:SS(.d+)?(Z|z|(+|-)HH:MM)</c>, hours 00–23, minutes and seconds 00–59
/// (no leap second 60: rfc3339-validator rejects it), offset hours 00–23.</item>
/// <item><c>date-time</c>: date <c>T|t</c> time, as above.</item>
/// <item><c>email</c>: a practical subset of RFC 5321/5322 addresses (jsonschema itself only wants an <c>@</c>):
/// dot-atom local part (atext = <c>A-Za-z0-9!#$%&amp;'*+/=?^_`{|}~-</c>), <c>@</c>, a domain of dot-separated labels
/// (letters, digits, hyphens inside; 1–63 characters). No quoted local parts, no address literals.</item>
/// <item><c>uuid</c>: <c>8-4-4-4-12</c> hex digits, either case.</item>
/// <item><c>ipv4</c>: dotted quad, each 0–255 in decimal without leading zeros (as Python's <c>ipaddress</c>).</item>
/// <item><c>ipv6</c>: RFC 4291 text forms by the RFC 3986 <c>IPv6address</c> rule: eight 1–4 digit hex groups, one
/// <c>::</c> standing for at least one group, an embedded IPv4 dotted quad as the last 32 bits; no zone id.</item>
/// <item><c>hostname</c>: RFC 1123 labels of 1–63 letters, digits and hyphens, not starting or ending with a hyphen,
/// separated by dots, at most 253 characters; no trailing dot (fqdn would accept one; not generated here).</item>
/// <item><c>uri</c>: the complete RFC 3986 <c>URI</c> rule: <c>scheme ":" hier-part ["?" query] ["#" fragment]</c>
/// with <c>//authority</c> (userinfo, IP-literal with IPv6/IPvFuture or reg-name, port), the path forms, and
/// <c>%HH</c> escapes; the one simplification is that an IPv4 host is matched by reg-name (a superset rule
/// in the RFC as well, so the language is unchanged).</item>
/// </list>
/// </summary>
public static class StringFormats
{
    private const string Digit = "[0-9]";
    private const string Year = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})";
    private const string LeapYear = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)";
    private const string MonthDay =
        "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)" +
        "|02-(?:0[1-9]|1[0-9]|2[0-8]))";
    private const string Date = "(?:" + Year + "-" + MonthDay + "|" + LeapYear + "-02-29)";
    private const string Hour = "(?:[01][0-9]|2[0-3])";
    private const string Sixty = "[0-5][0-9]";
    private const string Time = Hour + ":" + Sixty + ":" + Sixty + "(?:\\." + Digit + "+)?(?:[Zz]|[+-]" + Hour + ":"
        + Sixty + ")";
    private const string DecOctet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])";
    private const string IPv4 = DecOctet + "(?:\\." + DecOctet + "){3}";
    private const string H16 = "[0-9A-Fa-f]{1,4}";
    private const string Ls32 = "(?:" + H16 + ":" + H16 + "|" + IPv4 + ")";
    private const string IPv6 = "(?:"
        + "(?:" + H16 + ":){6}" + Ls32
        + "|::(?:" + H16 + ":){5}" + Ls32
        + "|(?:" + H16 + ")?::(?:" + H16 + ":){4}" + Ls32
        + "|(?:(?:" + H16 + ":){0,1}" + H16 + ")?::(?:" + H16 + ":){3}" + Ls32
        + "|(?:(?:" + H16 + ":){0,2}" + H16 + ")?::(?:" + H16 + ":){2}" + Ls32
        + "|(?:(?:" + H16 + ":){0,3}" + H16 + ")?::" + H16 + ":" + Ls32
        + "|(?:(?:" + H16 + ":){0,4}" + H16 + ")?::" + Ls32
        + "|(?:(?:" + H16 + ":){0,5}" + H16 + ")?::" + H16
        + "|(?:(?:" + H16 + ":){0,6}" + H16 + ")?::"
        + ")";
    private const string Label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    private const string Hostname = Label + "(?:\\." + Label + ")*";
    private const string AText = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";
    private const string Email = AText + "+(?:\\." + AText + "+)*@" + Hostname;
    private const string Uuid = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";

    // RFC 3986, appendix A.
    private const string Pct = "%[0-9A-Fa-f]{2}";
    private const string UnreservedSubDelims = "A-Za-z0-9\\-._~!$&'()*+,;=";
    private const string PChar = "(?:[" + UnreservedSubDelims + ":@]|" + Pct + ")";
    private const string Scheme = "[A-Za-z][A-Za-z0-9+\\-.]*";
    private const string UserInfo = "(?:[" + UnreservedSubDelims + ":]|" + Pct + ")*";
    private const string IPvFuture = "v[0-9A-Fa-f]+\\.[" + UnreservedSubDelims + ":]+";
    private const string IPLiteral = "\\[(?:" + IPv6 + "|" + IPvFuture + ")\\]";
    private const string RegName = "(?:[" + UnreservedSubDelims + "]|" + Pct + ")*";
    private const string Authority = "(?:" + UserInfo + "@)?(?:" + IPLiteral + "|" + RegName + ")(?::[0-9]*)?";
    private const string Segment = PChar + "*";
    private const string SegmentNz = PChar + "+";
    private const string HierPart = "(?://" + Authority + "(?:/" + Segment + ")*"
        + "|/(?:" + SegmentNz + "(?:/" + Segment + ")*)?"
        + "|" + SegmentNz + "(?:/" + Segment + ")*"
        + "|)";
    private const string QueryOrFragment = "(?:" + PChar + "|[/?])*";
    private const string Uri = Scheme + ":" + HierPart + "(?:\\?" + QueryOrFragment + ")?(?:#" + QueryOrFragment + ")?";

    /// <summary>The ECMAScript pattern (whole-string) of a format, or null when the format is not known.</summary>
    internal static string? PatternOf(string format) => format switch
    {
        "date" => Date,
        "time" => Time,
        "date-time" => Date + "[Tt]" + Time,
        "email" => Email,
        "uuid" => Uuid,
        "ipv4" => IPv4,
        "ipv6" => IPv6,
        "hostname" => Hostname,
        "uri" => Uri,
        _ => null,
    };

    /// <summary>A whole-string regex for a JSON Schema <c>format</c> in <paramref name="enc"/>, or null for a format
    /// this engine does not know.</summary>
    public static int? Regex(RegexBuilder b, string format, CharEncoding enc)
    {
        string? pattern = PatternOf(format);
        if (pattern is null) return null;
        int r = b.Pattern(pattern, enc, search: false);
        if (format == "hostname")
            r = b.And(r, b.Repeat(b.ByteRange(0, 0x7F), 1, 253)); // all ASCII: characters = bytes
        return r;
    }
}
