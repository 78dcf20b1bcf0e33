using Federated.EdgeClient.Cli;
using Federated.EdgeClient.Rounds;

namespace Federated.EdgeClient.Tests.Cli;

/// <summary>Where `edge-client run` reports: stderr lines for people, or with --json only JSON objects on stdout.</summary>
public sealed class EdgeRunOutputTests
{
    private static readonly EdgeEvent s_invited = new(EdgeEvent.Invited, "invited to round 3 of run r1") { RunId = "r1", Round = 3 };

    [Fact]
    public void Report_Text_OneEdgeClientLineOnStderrNothingOnStdout()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        new EdgeRunOutput(json: false, stdout, stderr).Report(s_invited);

        Assert.Equal("", stdout.ToString());
        Assert.Equal("edge-client: invited to round 3 of run r1" + Environment.NewLine, stderr.ToString());
    }

    [Fact]
    public void Report_Json_OneObjectOnStdoutNothingOnStderr()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        new EdgeRunOutput(json: true, stdout, stderr).Report(s_invited);

        Assert.Equal("""{"event":"invited","run_id":"r1","round":3,"message":"invited to round 3 of run r1"}""" + Environment.NewLine, stdout.ToString());
        Assert.Equal("", stderr.ToString());
    }
}
