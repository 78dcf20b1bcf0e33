namespace Federated.EdgeClient;

internal static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("edge-client: no commands yet");
        return 2;
    }
}
