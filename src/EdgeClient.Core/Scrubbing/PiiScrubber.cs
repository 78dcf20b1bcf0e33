using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Federated.EdgeClient.Scrubbing;

/// <summary>The kinds of personal data the scrubber recognises; each becomes a typed placeholder.</summary>
internal enum PiiType
{
    Email,
    Phone,
    PaymentCard,
    Iban,
    UsSsn,
    IPv4,
    IPv6,
    Name,
    Custom,
}

/// <summary>One detected piece of personal data: where it is, what it is, and the placeholder that replaces it.</summary>
internal sealed record PiiMatch(int Start, int Length, PiiType Type, string Label)
{
    public int End => Start + Length;

    public string Placeholder => Type == PiiType.Custom ? $"[{Label}]" : $"[{PlaceholderName(Type)}]";

    internal static string PlaceholderName(PiiType type) => type switch
    {
        PiiType.Email => "EMAIL",
        PiiType.Phone => "PHONE",
        PiiType.PaymentCard => "CARD",
        PiiType.Iban => "IBAN",
        PiiType.UsSsn => "SSN",
        PiiType.IPv4 => "IPV4",
        PiiType.IPv6 => "IPV6",
        PiiType.Name => "NAME",
        _ => "CUSTOM",
    };
}

/// <summary>A data holder's own rule: a label (becomes the placeholder) and a regular expression.</summary>
internal sealed record CustomPiiPattern(string Label, string Pattern);

/// <summary>Finds and replaces personal data in free text before it is used for training.</summary>
/// <remarks>
/// Detection is pattern plus validation: card numbers must pass the Luhn check, IBANs the ISO 13616 mod-97 check
/// and the country's length, SSNs the SSA's never-issued rules, IP addresses a real parse. Near misses (order
/// numbers, dates, version strings) are left alone. Overlapping matches resolve to the earliest, then longest.
/// </remarks>
internal sealed class PiiScrubber
{
    private static readonly TimeSpan s_regexTimeout = TimeSpan.FromSeconds(1);

    private static readonly Regex s_email = new(
        @"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])",
        RegexOptions.CultureInvariant | RegexOptions.Compiled, s_regexTimeout);

    // International (+CC ...) or North American (NXX) NXX-XXXX shapes; separators space, dot, dash.
    private static readonly Regex s_phone = new(
        @"(?<![\w+.-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w-]|\.\d)",
        RegexOptions.CultureInvariant | RegexOptions.Compiled, s_regexTimeout);

    private static readonly Regex s_card = new(
        @"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])",
        RegexOptions.CultureInvariant | RegexOptions.Compiled, s_regexTimeout);

    private static readonly Regex s_iban = new(
        @"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])",
        RegexOptions.CultureInvariant | RegexOptions.Compiled, s_regexTimeout);

    private static readonly Regex s_ssn = new(
        @"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])",
        RegexOptions.CultureInvariant | RegexOptions.Compiled, s_regexTimeout);

    // Preceded by a version marker (v1.2.3.4, "version 10.0.0.1") it is a version string, not an address.
    private static readonly Regex s_ipv4 = new(
        @"(?<![\w.])(?<!\bv)(?<!version )(?<!Version )(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)",
        RegexOptions.CultureInvariant | RegexOptions.Compiled, s_regexTimeout);

    private static readonly Regex s_ipv6 = new(
        @"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:]|\.\d)",
        RegexOptions.CultureInvariant | RegexOptions.Compiled, s_regexTimeout);

    // ISO 13616 IBAN lengths per country (SWIFT IBAN registry).
    private static readonly Dictionary<string, int> s_ibanLengths = new(StringComparer.Ordinal)
    {
        ["AD"] = 24, ["AE"] = 23, ["AL"] = 28, ["AT"] = 20, ["AZ"] = 28, ["BA"] = 20, ["BE"] = 16, ["BG"] = 22,
        ["BH"] = 22, ["BR"] = 29, ["CH"] = 21, ["CR"] = 22, ["CY"] = 28, ["CZ"] = 24, ["DE"] = 22, ["DK"] = 18,
        ["DO"] = 28, ["EE"] = 20, ["EG"] = 29, ["ES"] = 24, ["FI"] = 18, ["FO"] = 18, ["FR"] = 27, ["GB"] = 22,
        ["GE"] = 22, ["GI"] = 23, ["GL"] = 18, ["GR"] = 27, ["GT"] = 28, ["HR"] = 21, ["HU"] = 28, ["IE"] = 22,
        ["IL"] = 23, ["IS"] = 26, ["IT"] = 27, ["JO"] = 30, ["KW"] = 30, ["KZ"] = 20, ["LB"] = 28, ["LI"] = 21,
        ["LT"] = 20, ["LU"] = 20, ["LV"] = 21, ["MC"] = 27, ["MD"] = 24, ["ME"] = 22, ["MK"] = 19, ["MR"] = 27,
        ["MT"] = 31, ["MU"] = 30, ["NL"] = 18, ["NO"] = 15, ["PK"] = 24, ["PL"] = 28, ["PS"] = 29, ["PT"] = 25,
        ["QA"] = 29, ["RO"] = 24, ["RS"] = 22, ["SA"] = 24, ["SE"] = 24, ["SI"] = 19, ["SK"] = 24, ["SM"] = 27,
        ["TN"] = 24, ["TR"] = 26, ["UA"] = 29, ["VG"] = 24, ["XK"] = 20,
    };

    private readonly IReadOnlyList<(string Label, Regex Regex)> _custom;
    private readonly Regex? _names;

    public PiiScrubber(IEnumerable<CustomPiiPattern>? customPatterns = null, IEnumerable<string>? names = null)
    {
        var custom = new List<(string, Regex)>();
        foreach (CustomPiiPattern pattern in customPatterns ?? [])
        {
            if (string.IsNullOrWhiteSpace(pattern.Label) || !Regex.IsMatch(pattern.Label, "^[A-Z][A-Z0-9_]{0,31}$"))
            {
                throw new ArgumentException(
                    $"custom pattern label '{pattern.Label}' must be 1 to 32 upper-case letters, digits or '_', starting with a letter",
                    nameof(customPatterns));
            }
            try
            {
                custom.Add((pattern.Label, new Regex(pattern.Pattern, RegexOptions.CultureInvariant, s_regexTimeout)));
            }
            catch (ArgumentException ex)
            {
                throw new ArgumentException($"custom pattern {pattern.Label} is not a valid regular expression: {ex.Message}", nameof(customPatterns), ex);
            }
        }
        _custom = custom;

        string[] nameList = (names ?? []).Select(n => n.Trim()).Where(n => n.Length > 0).Distinct(StringComparer.OrdinalIgnoreCase)
            .OrderByDescending(n => n.Length).ToArray();
        if (nameList.Length > 0)
        {
            string alternation = string.Join('|', nameList.Select(Regex.Escape));
            _names = new Regex($@"(?<!\w)(?:{alternation})(?!\w)", RegexOptions.CultureInvariant | RegexOptions.IgnoreCase, s_regexTimeout);
        }
    }

    /// <summary>Every detected span in <paramref name="text"/>, non-overlapping, in order.</summary>
    public IReadOnlyList<PiiMatch> Find(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var candidates = new List<PiiMatch>();
        foreach ((string label, Regex regex) in _custom)
        {
            AddAll(candidates, regex, text, PiiType.Custom, label, static _ => true);
        }
        if (_names is not null)
        {
            AddAll(candidates, _names, text, PiiType.Name, "NAME", static _ => true);
        }
        AddAll(candidates, s_email, text, PiiType.Email, "EMAIL", static m => !IsFileName(m.Value));
        AddAll(candidates, s_iban, text, PiiType.Iban, "IBAN", static m => IsValidIban(m.Value));
        // A Luhn-valid digit run inside an IBAN-shaped token (even one failing its check) is part of that token.
        var ibanShaped = s_iban.Matches(text).Select(m => (m.Index, End: m.Index + m.Length)).ToArray();
        AddAll(candidates, s_card, text, PiiType.PaymentCard, "CARD",
            m => IsPaymentCard(m.Value) && !ibanShaped.Any(s => s.Index < m.Index && m.Index + m.Length <= s.End));
        AddAll(candidates, s_ssn, text, PiiType.UsSsn, "SSN", IsValidSsn);
        AddAll(candidates, s_ipv6, text, PiiType.IPv6, "IPV6", static m => IsIPv6(m.Value));
        AddAll(candidates, s_ipv4, text, PiiType.IPv4, "IPV4", static m => IsIPv4(m.Value));
        AddAll(candidates, s_phone, text, PiiType.Phone, "PHONE", static m => IsPhone(m.Value));

        // Earliest start wins; at equal start the longest; the list order above breaks remaining ties
        // (custom rules and names first, since the data holder knows its data best).
        var ordered = candidates.Select((m, i) => (m, i)).OrderBy(x => x.m.Start).ThenByDescending(x => x.m.Length).ThenBy(x => x.i);
        var result = new List<PiiMatch>();
        int covered = 0;
        foreach ((PiiMatch match, _) in ordered)
        {
            if (match.Start >= covered)
            {
                result.Add(match);
                covered = match.End;
            }
        }
        return result;
    }

    /// <summary>The text with every detected span replaced by its typed placeholder.</summary>
    public string Scrub(string text, IList<PiiMatch>? found = null)
    {
        IReadOnlyList<PiiMatch> matches = Find(text);
        if (matches.Count == 0)
        {
            return text;
        }
        var builder = new StringBuilder(text.Length);
        int position = 0;
        foreach (PiiMatch match in matches)
        {
            builder.Append(text, position, match.Start - position).Append(match.Placeholder);
            position = match.End;
            found?.Add(match);
        }
        builder.Append(text, position, text.Length - position);
        return builder.ToString();
    }

    private static void AddAll(List<PiiMatch> into, Regex regex, string text, PiiType type, string label, Func<Match, bool> valid)
    {
        foreach (Match match in regex.Matches(text))
        {
            if (match.Length > 0 && valid(match))
            {
                into.Add(new PiiMatch(match.Index, match.Length, type, label));
            }
        }
    }

    // "icon@2x.png": no top-level domain is a common file extension, so such a match is a file name.
    private static readonly HashSet<string> s_fileExtensions = new(StringComparer.OrdinalIgnoreCase)
    {
        "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "pdf", "js", "css", "map", "json",
    };

    private static bool IsFileName(string email) => s_fileExtensions.Contains(email[(email.LastIndexOf('.') + 1)..]);

    /// <summary>Luhn (ISO/IEC 7812-1 Annex B) check over the digits of a candidate, ignoring spaces and dashes.</summary>
    internal static bool PassesLuhn(ReadOnlySpan<char> digits)
    {
        int sum = 0;
        bool doubleIt = false;
        int count = 0;
        for (int i = digits.Length - 1; i >= 0; i--)
        {
            char c = digits[i];
            if (c is ' ' or '-')
            {
                continue;
            }
            if (c is < '0' or > '9')
            {
                return false;
            }
            int d = c - '0';
            if (doubleIt)
            {
                d *= 2;
                if (d > 9)
                {
                    d -= 9;
                }
            }
            sum += d;
            doubleIt = !doubleIt;
            count++;
        }
        return count > 0 && sum % 10 == 0;
    }

    private static bool IsPaymentCard(string candidate)
    {
        string digits = new(candidate.Where(char.IsAsciiDigit).ToArray());
        if (digits.Length is < 13 or > 19 || !PassesLuhn(digits))
        {
            return false;
        }
        // Issuer identification numbers of the card networks (ISO/IEC 7812 major industry identifiers 2 to 6).
        return digits[0] is '2' or '3' or '4' or '5' or '6' && !digits.All(c => c == digits[0]);
    }

    /// <summary>ISO 13616 check: known country, its registered length, and (rearranged number mod 97) == 1.</summary>
    internal static bool IsValidIban(string candidate)
    {
        string iban = candidate.Replace(" ", string.Empty, StringComparison.Ordinal);
        if (iban.Length < 15 || !s_ibanLengths.TryGetValue(iban[..2], out int length) || iban.Length != length)
        {
            return false;
        }
        int remainder = 0;
        foreach (char c in iban[4..] + iban[..4])
        {
            int value = c switch
            {
                >= '0' and <= '9' => c - '0',
                >= 'A' and <= 'Z' => c - 'A' + 10,
                _ => -1,
            };
            if (value < 0)
            {
                return false;
            }
            remainder = value >= 10 ? (remainder * 100 + value) % 97 : (remainder * 10 + value) % 97;
        }
        return remainder == 1;
    }

    // SSA rules for numbers never issued: area 000, 666 or 900-999; group 00; serial 0000.
    private static bool IsValidSsn(Match match)
    {
        int area = int.Parse(match.Groups[1].ValueSpan, CultureInfo.InvariantCulture);
        int group = int.Parse(match.Groups[2].ValueSpan, CultureInfo.InvariantCulture);
        int serial = int.Parse(match.Groups[3].ValueSpan, CultureInfo.InvariantCulture);
        return area is not 0 and not 666 and < 900 && group != 0 && serial != 0;
    }

    private static bool IsIPv4(string candidate)
    {
        string[] parts = candidate.Split('.');
        return parts.Length == 4 && parts.All(p => p.Length <= 3 && (p.Length == 1 || p[0] != '0') && int.Parse(p, CultureInfo.InvariantCulture) <= 255);
    }

    private static bool IsIPv6(string candidate)
    {
        // Times (12:30:45) and MAC addresses parse as nothing; require a real IPv6 parse and at least one "::" or 8 groups.
        int groups = candidate.Count(c => c == ':') + 1;
        bool compressed = candidate.Contains("::", StringComparison.Ordinal);
        if (!compressed && groups < 8 && !(groups == 7 && candidate.Contains('.', StringComparison.Ordinal)))
        {
            return false;
        }
        if (candidate == "::" || !candidate.Any(char.IsAsciiHexDigit))
        {
            return false;
        }
        return IPAddress.TryParse(candidate, out IPAddress? address) && address.AddressFamily == AddressFamily.InterNetworkV6;
    }

    private static bool IsPhone(string candidate)
    {
        int digits = candidate.Count(char.IsAsciiDigit);
        if (candidate.StartsWith('+'))
        {
            // E.164: at most 15 digits including the country code; at least 8 for a real subscriber number.
            return digits is >= 8 and <= 15;
        }
        return digits == 10;
    }
}
