namespace Federated.Coordinator;

internal static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("coordinator: no commands yet");
        return 2;
    }
}
