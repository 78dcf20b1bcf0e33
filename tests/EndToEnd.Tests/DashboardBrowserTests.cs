using System.Net;
using Federated.Aggregation.Privacy;
using Federated.Coordinator;
using Federated.Coordinator.Cli;
using Federated.Coordinator.Dashboard;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Wire;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using Xunit.Abstractions;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// `coordinator dashboard` in headless Chromium (Debian's chromium and chromium-driver, through Selenium) during a real
/// two-round run over mutual TLS: round 1 is released, round 2 is held open by its participants. The engineer's page shows
/// the run, its rounds and the budget and its abort control really aborts the run; the officer's page has no such control.
/// A coordinator host's meters are process-wide, so this runs in the metrics collection (alone).
/// </summary>
[Collection(MetricsCollection.Name)]
public sealed class DashboardBrowserTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const string Chromium = "/usr/bin/chromium";
    private const string ChromeDriverFolder = "/usr/bin";
    private static readonly string[] s_clients = ["alice", "bob", "carol"];
    private static readonly TimeSpan s_patience = TimeSpan.FromSeconds(90);
    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-dashboard-" + Guid.NewGuid().ToString("N"));
    private TestFederation _federation = null!;
    private CoordinatorHost _host = null!;

    public async Task InitializeAsync()
    {
        _federation = TestFederation.Create(Path.Combine(_root, "pki"), s_clients);
        _host = CoordinatorHost.Create(
            new CoordinatorOptions { Pki = _federation.Directory, Port = 0, State = Path.Combine(_root, "state.db"), HeartbeatIntervalSeconds = 1 },
            logging => logging.SetMinimumLevel(Microsoft.Extensions.Logging.LogLevel.Warning));
        await _host.StartAsync(CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }
    }

    [Fact]
    public async Task Dashboard_DuringARealRun_EngineerSeesRunRoundsBudgetAndAborts_OfficerHasNoControls()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: .ci/run installs Debian's chromium and chromium-driver");
        string baseModel = Path.Combine(_root, "base");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 11);
        _host.State.Budgets.Set("dash", 100, 1e-5, "officer");
        var plan = new RunPlan
        {
            BaseModel = baseModel, LoraRank = 2, Rounds = 2, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01, ClipNorm = 1.0,
            Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, MinSurvivors = 2, Population = "dash",
            StageTimeoutSeconds = 600,
        };
        plan.TargetModules.Add("q_proj");
        using var stop = new CancellationTokenSource();
        Task[] clients = [.. s_clients.Select(name => Task.Run(() => ClientAsync(name, stop.Token)))];
        using AdminConnection engineer = Connect("engineer");
        using AdminConnection officer = Connect("officer");
        try
        {
            StartRunResponse started = await engineer.CallAsync(o => engineer.Admin.StartRunAsync(new StartRunRequest { Plan = plan }, o), CancellationToken.None);
            string runId = started.RunId;
            RunStatus status = await UntilAsync(engineer, runId, s => s.ReleasedRounds == 1 && s.CurrentRound == 2);

            await using DashboardServer asEngineer = await StartDashboardAsync(engineer);
            await using DashboardServer asOfficer = await StartDashboardAsync(officer);
            Assert.True(IPAddress.IsLoopback(IPAddress.Parse(asEngineer.Address.Host)), "the dashboard binds loopback");
            await NothingElseServedAsync(asEngineer.Address, asOfficer.Address, runId);

            using ChromeDriver browser = Browser();
            browser.Navigate().GoToUrl(asEngineer.Address);
            IWebElement run = await FindAsync(browser, By.CssSelector($"tr.run[data-run='{runId}']"));
            Assert.Contains("running", run.FindElement(By.CssSelector("td.state")).Text, StringComparison.Ordinal);
            Assert.StartsWith($"{AdminOutput.Number(status.EpsilonSpent)} / 100 ", run.FindElement(By.CssSelector("td.epsilon")).Text, StringComparison.Ordinal);
            Assert.True(status.EpsilonSpent > 0);
            IWebElement rounds = browser.FindElement(By.Id($"rounds-{runId}"));
            IReadOnlyList<IWebElement> roundRows = rounds.FindElements(By.CssSelector("tr.round"));
            Assert.Equal(2, roundRows.Count);
            Assert.Equal($"1 3 0 3 0 {AdminOutput.Number(status.EpsilonSpent)} released", roundRows[0].Text);
            Assert.Equal("2 3 0 - - - in progress", roundRows[1].Text);
            Assert.Single(rounds.FindElements(By.CssSelector("svg.epsilon-chart circle")));
            Assert.Equal(3, browser.FindElements(By.CssSelector("#clients tr.client")).Count);
            Assert.Equal("not available to role engineer", browser.FindElement(By.CssSelector("#budgets .unavailable")).Text);
            Assert.StartsWith("verified:", browser.FindElement(By.Id("audit-state")).Text, StringComparison.Ordinal);
            Assert.Equal("Abort run", browser.FindElement(By.Id($"abort-{runId}")).Text);
            Screenshot(browser, "dashboard-engineer.png");

            browser.Navigate().GoToUrl(asOfficer.Address);
            IWebElement officerRun = await FindAsync(browser, By.CssSelector($"tr.run[data-run='{runId}']"));
            Assert.Contains("running", officerRun.Text, StringComparison.Ordinal);
            Assert.Empty(browser.FindElements(By.CssSelector("button.abort, form[action='/abort']")));
            Assert.DoesNotContain("Abort", browser.PageSource, StringComparison.Ordinal);
            Assert.Equal("not available to role officer", browser.FindElement(By.CssSelector("#clients .unavailable")).Text);
            // The population's spend is at the budget's delta (1e-5), not the run's (1e-6): the coordinator's own numbers.
            Budget expected = await officer.CallAsync(o => officer.Admin.GetBudgetAsync(new GetBudgetRequest { Population = "dash" }, o), CancellationToken.None);
            Assert.True(expected.EpsilonSpent > 0 && expected.EpsilonReserved > 0);
            Assert.Equal(
                $"dash 100 1E-05 {AdminOutput.Number(expected.EpsilonSpent)} {AdminOutput.Number(expected.EpsilonReserved)} {AdminOutput.Number(expected.EpsilonRemaining)} officer",
                browser.FindElement(By.CssSelector("#budgets tr.budget")).Text);
            Screenshot(browser, "dashboard-officer.png");

            // The engineer's control calls AbortRun with the engineer's identity: the coordinator ends the run.
            browser.Navigate().GoToUrl(asEngineer.Address);
            (await FindAsync(browser, By.Id($"abort-{runId}"))).Click();
            IWebElement notice = await FindAsync(browser, By.Id("notice"));
            Assert.Equal($"run {runId} aborted", notice.Text);
            RunStatus aborted = await engineer.CallAsync(o => engineer.Admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = runId }, o), CancellationToken.None);
            Assert.Equal(RunState.Aborted, aborted.State);
            Assert.Equal("aborted by engineer: aborted from the dashboard", aborted.Detail);
            Assert.Empty(browser.FindElements(By.Id($"abort-{runId}")));
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));
        }
    }

    /// <summary>Only the page, its fragment and the abort form exist; a foreign Host and a token-less or officer abort are refused.</summary>
    private static async Task NothingElseServedAsync(Uri engineer, Uri officer, string runId)
    {
        using var http = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false });
        foreach (string path in new[] { "/engineer.pfx", "/state.db", "/pki/ca.pem", "/../engineer.pfx", "/api", "/password" })
        {
            using HttpResponseMessage response = await http.GetAsync(new Uri(engineer, path));
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        }
        using (var rebinding = new HttpRequestMessage(HttpMethod.Get, engineer))
        {
            rebinding.Headers.Host = "attacker.example";
            using HttpResponseMessage response = await http.SendAsync(rebinding);
            Assert.Equal(HttpStatusCode.MisdirectedRequest, response.StatusCode);
        }
        var forged = new FormUrlEncodedContent(new Dictionary<string, string> { ["run"] = runId, ["token"] = new string('0', 64) });
        using (HttpResponseMessage response = await http.PostAsync(new Uri(engineer, "/abort"), forged))
        {
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        }
        var huge = new FormUrlEncodedContent(new Dictionary<string, string> { ["run"] = runId, ["token"] = new string('a', 64 * 1024) });
        using (HttpResponseMessage response = await http.PostAsync(new Uri(engineer, "/abort"), huge))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        }
        using (HttpResponseMessage response = await http.PostAsync(new Uri(officer, "/abort"), forged))
        {
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        }
        using HttpResponseMessage page = await http.GetAsync(engineer);
        Assert.Equal("no-store", page.Headers.CacheControl?.ToString());
        Assert.Contains("default-src 'none'", page.Headers.GetValues("Content-Security-Policy").Single(), StringComparison.Ordinal);
    }

    private AdminConnection Connect(string identity) =>
        AdminConnection.Open(new AdminEndpoint(_host.Address, _federation.Identity(identity), _federation.CaPath, password: null));

    private static async Task<DashboardServer> StartDashboardAsync(AdminConnection connection)
    {
        DashboardServer server = DashboardServer.Create(new DashboardReader(connection, TimeProvider.System), IPAddress.Loopback, port: 0);
        await server.StartAsync(CancellationToken.None);
        return server;
    }

    private ChromeDriver Browser()
    {
        var options = new ChromeOptions { BinaryLocation = Chromium };
        // The flags headless Chromium needs on this closed network (docs: the machine's dotnet notes).
        options.AddArguments("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1800", $"--user-data-dir={Path.Combine(_root, "chromium")}");
        ChromeDriverService service = ChromeDriverService.CreateDefaultService(ChromeDriverFolder, "chromedriver");
        service.SuppressInitialDiagnosticInformation = true;
        service.HideCommandPromptWindow = true;
        return new ChromeDriver(service, options, TimeSpan.FromSeconds(60));
    }

    private void Screenshot(ChromeDriver browser, string name)
    {
        string folder = Path.Combine(AppContext.BaseDirectory, "TestResults");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, name);
        browser.GetScreenshot().SaveAsFile(path);
        Assert.True(new FileInfo(path).Length > 0);
        output.WriteLine($"screenshot: {path}");
    }

    /// <summary>Waits for the element (the page polls the coordinator; the first render may race the run).</summary>
    private static async Task<IWebElement> FindAsync(ChromeDriver browser, By by)
    {
        using var patience = new CancellationTokenSource(s_patience);
        while (true)
        {
            IReadOnlyList<IWebElement> found = browser.FindElements(by);
            if (found.Count > 0)
            {
                return found[0];
            }
            await Task.Delay(100, patience.Token);
        }
    }

    private static async Task<RunStatus> UntilAsync(AdminConnection connection, string runId, Func<RunStatus, bool> condition)
    {
        using var patience = new CancellationTokenSource(s_patience);
        using AsyncServerStreamingCall<RunStatus> watch = connection.Admin.WatchRun(new WatchRunRequest { RunId = runId }, AdminConnection.Options(patience.Token, timeout: null));
        await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(patience.Token))
        {
            Assert.True(status.State is RunState.Pending or RunState.Running, $"run {runId} ended early: {status.State} {status.Detail}");
            if (condition(status))
            {
                return status;
            }
        }
        throw new InvalidOperationException($"the watch of run {runId} ended first");
    }

    /// <summary>A real participant: round 1 with a fixed update through SecAgg+, round 2 fetched and then held open.</summary>
    private async Task ClientAsync(string name, CancellationToken cancellationToken)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(_federation.Identity(name), _federation.CaPath);
        using var connection = new CoordinatorConnection(_host.Address, identity);
        var participant = new SecAggParticipant(connection, name);
        var session = new EdgeSession(connection, new RegisterRequest { ClientVersion = "test", Device = "cpu" });
        try
        {
            await session.RunAsync(async (invitation, ct) =>
            {
                RoundManifest manifest = await participant.FetchManifestAsync(invitation, ct);
                if (invitation.Round >= 2)
                {
                    await Task.Delay(Timeout.Infinite, ct);
                }
                byte[] content = await AdapterDownload.DownloadAsync(connection, manifest.GlobalAdapter, ct);
                int d = (int)GlobalAdapterBlob.Read(content).Tensors.OnlyB().ElementCount;
                DSkellamPlan plan = PrivacyPlan.Create(ManifestPrivacy.Parameters(manifest, d)).Quantizer;
                float[] update = [.. Enumerable.Range(0, d).Select(i => (i % 5 - 2) * 0.01f)];
                await participant.ParticipateAsync(manifest, (m, _) => Task.FromResult(new DSkellamEncoder(plan, m.Dp.RotationSeed.Span).Encode(update).Values), ct);
            }, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // The test ends the session.
        }
    }
}
