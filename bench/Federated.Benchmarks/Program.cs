namespace Federated.Benchmarks;

internal static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("usage: Federated.Benchmarks <suite> [--json]");
        return 2;
    }
}
