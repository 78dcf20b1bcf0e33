namespace Federated.Cli;

/// <summary>Reads a PKCS#12 password from a file so that it never appears in a process listing or shell history.</summary>
public static class PasswordFile
{
    public static string? Read(string? path)
    {
        if (path is null)
        {
            return null;
        }
        if (!File.Exists(path))
        {
            throw new UsageException($"--password-file '{path}' does not exist");
        }
        // The first line is the password; a trailing newline from `echo` is not part of it.
        string text = File.ReadAllText(path);
        int end = text.IndexOfAny(['\r', '\n']);
        string password = end < 0 ? text : text[..end];
        if (password.Length == 0)
        {
            throw new UsageException($"--password-file '{path}' is empty; omit the flag for an unencrypted PKCS#12 file");
        }
        return password;
    }
}
