using System.CommandLine;
using MiniCPM4.Server;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 serve`: the OpenAI-compatible HTTP server (src/MiniCPM4.Server) over one model.</summary>
internal static class ServeCommand
{
    private static readonly Option<string> Host = new("--host")
    {
        Description = "Address to listen on (0.0.0.0 for every interface)", DefaultValueFactory = _ => "127.0.0.1",
    };
    private static readonly Option<int> Port = new("--port")
    {
        Description = "TCP port (0 picks a free one)", DefaultValueFactory = _ => 8080,
    };
    private static readonly Option<int> MaxConcurrent = new("--max-concurrent")
    {
        Description = "Generations running at once, each on its own session (batched together)",
        DefaultValueFactory = _ => 8,
    };
    private static readonly Option<int> MaxQueue = new("--max-queue")
    {
        Description = "Requests that may wait for a slot; more get 429", DefaultValueFactory = _ => 8,
    };
    private static readonly Option<int> MaxConversations = new("--max-conversations")
    {
        Description = "Conversations (X-Conversation-Id header) whose KV cache is kept for reuse",
        DefaultValueFactory = _ => 8,
    };
    private static readonly Option<long> MaxRequestBytes = new("--max-request-bytes")
    {
        Description = "Largest request body; larger ones get 413", DefaultValueFactory = _ => 1024 * 1024,
    };
    private static readonly Option<int> DefaultMaxTokens = new("--max-tokens")
    {
        Description = "Completion tokens when a request sets no max_tokens", DefaultValueFactory = _ => 512,
    };
    private static readonly Option<string?> ModelId = new("--model-id")
    {
        Description = "The model name served (default: the checkpoint directory's name)",
    };
    private static readonly Option<string[]> Alias = new("--alias")
    {
        Description = "Another model name requests may use (repeatable); other names get 404 model_not_found",
    };
    private static readonly Option<string[]> ApiKey = new("--api-key")
    {
        Description = "Require 'Authorization: Bearer KEY' (repeatable; default: $MINICPM4_API_KEY, else none)",
    };
    private static readonly Option<double> ShutdownTimeout = new("--shutdown-timeout")
    {
        Description = "Seconds running generations may go on after Ctrl-C or SIGTERM", DefaultValueFactory = _ => 30,
    };

    public static Command Create()
    {
        var command = new Command("serve",
            "OpenAI-compatible HTTP server (/v1/chat/completions, /metrics, a chat page)");
        Cli.AddModelOptions(command);
        foreach (var option in new Option[]
                 {
                     Host, Port, MaxConcurrent, MaxQueue, MaxConversations, MaxRequestBytes, DefaultMaxTokens,
                     ModelId, Alias, ApiKey, ShutdownTimeout, Cli.SpecIter, Cli.SpecTopK, Cli.SpecTree, Cli.NoSpec,
                 })
            command.Options.Add(option);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => RunAsync(parse, ct)));
        return command;
    }

    private static async Task RunAsync(ParseResult parse, CancellationToken ct)
    {
        int port = parse.GetValue(Port);
        if (port is < 0 or > 65535) throw new UsageException($"--port must be in [0, 65535] (got {port})");
        double shutdown = parse.GetValue(ShutdownTimeout);
        if (!double.IsFinite(shutdown) || shutdown < 0)
            throw new UsageException($"--shutdown-timeout must be >= 0 seconds (got {shutdown})");
        string host = parse.GetValue(Host) ?? "127.0.0.1";
        var keys = parse.GetValue(ApiKey) is { Length: > 0 } given ? given
            : Environment.GetEnvironmentVariable("MINICPM4_API_KEY") is { Length: > 0 } env ? [env]
            : [];
        var options = new ServerOptions
        {
            ModelDirectory = Cli.ModelDirectory(parse),
            Urls = $"http://{(host.Contains(':', StringComparison.Ordinal) ? $"[{host}]" : host)}:{port}",
            MaxConcurrentRequests = parse.GetValue(MaxConcurrent),
            MaxQueue = parse.GetValue(MaxQueue),
            MaxCachedConversations = parse.GetValue(MaxConversations),
            MaxRequestBytes = parse.GetValue(MaxRequestBytes),
            DefaultMaxTokens = parse.GetValue(DefaultMaxTokens),
            ModelId = parse.GetValue(ModelId),
            ModelAliases = parse.GetValue(Alias) ?? [],
            ApiKeys = keys,
            ShutdownTimeout = TimeSpan.FromSeconds(shutdown),
            SessionOptions = Cli.SessionOptionsFrom(parse),
            Speculative = Cli.SpeculativeFrom(parse),
        };
        try
        {
            options.Validate(); // before the model loads: a bad option costs no load time
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
        using var model = await Cli.LoadModelAsync(parse, ct);
        options.Model = model;
        string name = options.ModelId ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(model.Directory));
        string speculation = model.Draft is { } draft
            ? $", speculative decoding with the draft in {draft.Directory}"
            : "";
        // The host stops on Ctrl-C or SIGTERM: new requests get 503, running ones get --shutdown-timeout.
        await MiniCpmServer.RunAsync(options, url => Console.Error.WriteLine(
            $"minicpm4: serving '{name}' on {url} (OpenAI API at {url}/v1, chat page at {url}/){speculation}. " +
            "Ctrl-C to stop."), CancellationToken.None);
    }
}
