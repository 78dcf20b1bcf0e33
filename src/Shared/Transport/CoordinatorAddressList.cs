namespace Federated.Transport;

/// <summary>
/// The coordinators a `--coordinator URL[,URL...]` flag names: a leader and its standbys sharing one state database,
/// in the order they are tried. Each entry is an absolute https:// URL with a host; none is empty or repeated.
/// </summary>
public sealed class CoordinatorAddressList
{
    /// <summary>More coordinators than this is a typo or a pasted list, not a deployment.</summary>
    public const int MaxCount = 16;

    private CoordinatorAddressList(IReadOnlyList<Uri> addresses) => Addresses = addresses;

    /// <summary>The coordinators in the order given; each keeps the text it was given in (<see cref="Uri.OriginalString"/>).</summary>
    public IReadOnlyList<Uri> Addresses { get; }

    /// <summary>True when the flag named one coordinator: the caller behaves exactly as it did before lists existed.</summary>
    public bool IsSingle => Addresses.Count == 1;

    /// <summary>Parses a comma-separated list; on failure <paramref name="error"/> is one line naming the bad entry and its position.</summary>
    public static bool TryParse(string? text, out CoordinatorAddressList addresses, out string error)
    {
        addresses = new CoordinatorAddressList([]);
        error = "";
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "--coordinator is empty: give one https:// URL or several separated by commas";
            return false;
        }
        string[] entries = text.Split(',', StringSplitOptions.TrimEntries);
        if (entries.Length > MaxCount)
        {
            error = $"--coordinator names {entries.Length} coordinators; at most {MaxCount} are allowed";
            return false;
        }
        var parsed = new List<Uri>(entries.Length);
        for (int i = 0; i < entries.Length; i++)
        {
            string entry = entries[i];
            string where = entries.Length == 1 ? "--coordinator" : $"--coordinator entry {i + 1} of {entries.Length}";
            if (entry.Length == 0)
            {
                error = $"{where} is empty (a stray comma?); give https:// URLs separated by commas";
                return false;
            }
            if (!Uri.TryCreate(entry, UriKind.Absolute, out Uri? url) || url.Scheme != Uri.UriSchemeHttps || url.Host.Length == 0)
            {
                error = $"{where} '{entry}' is not an https:// address such as https://coordinator.example.org:7443";
                return false;
            }
            if (parsed.Any(p => Uri.Compare(p, url, UriComponents.SchemeAndServer | UriComponents.Path, UriFormat.Unescaped, StringComparison.OrdinalIgnoreCase) == 0))
            {
                error = $"{where} '{entry}' is listed twice";
                return false;
            }
            parsed.Add(url);
        }
        addresses = new CoordinatorAddressList(parsed);
        return true;
    }

    /// <summary>The addresses as given, comma-separated: what messages and logs name.</summary>
    public override string ToString() => string.Join(",", Addresses.Select(a => a.OriginalString));
}
