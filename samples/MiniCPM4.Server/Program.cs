using System.Globalization;
using MiniCPM4;
using MiniCPM4.Checkpoints;
using MiniCPM4.Server;

// dotnet run --project samples/MiniCPM4.Server -- --model DIR [--urls http://127.0.0.1:8080] [--context N]
//     [--max-concurrent N] [--max-queue N] [--max-request-bytes N] [--model-id ID] [--threads N] [--quantize int4]
var options = new ServerOptions();
int threads = 0;
var quantization = WeightQuantization.None;
for (int i = 0; i < args.Length; i++)
{
    string Value() => i + 1 < args.Length ? args[++i] : throw Usage($"{args[i]} needs a value");
    int Int() => int.TryParse(Value(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= 0
        ? v : throw Usage($"{args[i]} needs a non-negative integer");
    switch (args[i])
    {
        case "--model" or "-m": options.ModelDirectory = Value(); break;
        case "--urls": options.Urls = Value(); break;
        case "--context": options.ContextLength = Int(); break;
        case "--max-concurrent": options.MaxConcurrentRequests = Math.Max(1, Int()); break;
        case "--max-queue": options.MaxQueue = Int(); break;
        case "--max-request-bytes": options.MaxRequestBytes = Math.Max(1, Int()); break;
        case "--max-tokens": options.DefaultMaxTokens = Math.Max(1, Int()); break;
        case "--model-id": options.ModelId = Value(); break;
        case "--threads": threads = Int(); break;
        case "--quantize":
            quantization = Value() switch
            {
                "int4" => WeightQuantization.Int4,
                "none" => WeightQuantization.None,
                var other => throw Usage($"--quantize {other}: expected int4 or none"),
            };
            break;
        case "--help" or "-h":
            Console.WriteLine("usage: MiniCPM4.Server --model DIR [--urls URLS] [--context N] [--max-concurrent N] " +
                              "[--max-queue N] [--max-request-bytes N] [--max-tokens N] [--model-id ID] [--threads N] [--quantize int4]");
            return 0;
        default:
            Console.Error.WriteLine($"error: unknown argument '{args[i]}' (see --help)");
            return 2;
    }
}

if (options.ModelDirectory is null)
{
    var dir = Path.Combine(Path.GetTempPath(), "minicpm4-server-tiny");
    if (!File.Exists(Path.Combine(dir, "config.json")))
        CheckpointWriter.CreateRandomModel(dir, ModelPreset.Tiny, seed: 1, dtype: TensorDType.BF16);
    Console.WriteLine($"No --model given: serving a tiny RANDOM checkpoint from {dir} (it generates gibberish).");
    options.ModelDirectory = dir;
    options.ModelId ??= "minicpm4-tiny-random";
}
options.LoadOptions = new MiniCpmLoadOptions { Threads = threads, Quantization = quantization };

try
{
    var app = MiniCpmServer.Build(options);
    await app.StartAsync();
    Console.WriteLine($"MiniCPM4 server listening on {string.Join(", ", app.Urls)} " +
                      $"(max {options.MaxConcurrentRequests} running, {options.MaxQueue} queued). Ctrl+C to stop.");
    await app.WaitForShutdownAsync();
    await app.DisposeAsync();
    return 0;
}
catch (Exception ex) when (ex is CheckpointException or MiniCpmException or IOException or ArgumentException)
{
    Console.Error.WriteLine($"error: {ex.Message}");
    return 1;
}

static ArgumentException Usage(string message)
{
    Console.Error.WriteLine($"error: {message}");
    Environment.Exit(2);
    return new ArgumentException(message);
}
