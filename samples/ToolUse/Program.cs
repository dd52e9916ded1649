// MiniCPM4 answering with tools served by an MCP server.
// An MCP server (ModelContextProtocol C# SDK) runs in-process over a pair of pipes; an MCP client lists its tools,
// which are AIFunctions, and FunctionInvokingChatClient runs the calls the model makes.
// Usage: dotnet run --project samples/ToolUse -- [checkpoint dir]
// Without a directory a tiny random checkpoint is written to a temp dir first; random weights never call tools.
using System.IO.Pipelines;
using Microsoft.Extensions.AI;
using MiniCPM4;
using MiniCPM4.AI;
using MiniCPM4.Samples;
using ModelContextProtocol.Client;
using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;

using var checkpoint = SampleCheckpoint.FromArgs(args, "tooluse", seed: 3);
string dir = checkpoint.Directory;

// --- The MCP server, in-process over two pipes.
var clientToServer = new Pipe();
var serverToClient = new Pipe();
var serverOptions = new McpServerOptions
{
    ServerInfo = new Implementation { Name = "minicpm4-demo-tools", Version = "1.0.0" },
    ToolCollection =
    [
        McpServerTool.Create((int a, int b) => a + b,
            new McpServerToolCreateOptions { Name = "add", Description = "Adds two integers." }),
        McpServerTool.Create(() => DateTimeOffset.UtcNow.ToString("O"),
            new McpServerToolCreateOptions { Name = "get_time",
                Description = "Returns the current UTC time (ISO 8601)." }),
    ],
};
using var stop = new CancellationTokenSource();
await using var server = McpServer.Create(
    new StreamServerTransport(clientToServer.Reader.AsStream(), serverToClient.Writer.AsStream(), "demo"),
        serverOptions);
var serverRun = server.RunAsync(stop.Token);

// --- The MCP client and its tools as AIFunctions.
await using var mcp = await McpClient.CreateAsync(
    new StreamClientTransport(clientToServer.Writer.AsStream(), serverToClient.Reader.AsStream()));
var tools = await mcp.ListToolsAsync();
Console.WriteLine("MCP tools: " + string.Join(", ", tools.Select(t => $"{t.Name} ({t.Description})")));
var direct = await mcp.CallToolAsync("add", new Dictionary<string, object?> { ["a"] = 17, ["b"] = 25 });
Console.WriteLine("Direct MCP call add(a=17, b=25) = "
    + string.Join("", direct.Content.OfType<TextContentBlock>().Select(c => c.Text)));

// --- MiniCPM4 with function invocation.
using var model = MiniCpmModel.Load(dir);
using IChatClient client = new ChatClientBuilder(new MiniCpmChatClient(model))
    .UseFunctionInvocation()
    .Build();

var options = new ChatOptions { Tools = [.. tools], Temperature = 0, MaxOutputTokens = 128 };
var response =
    await client.GetResponseAsync([new ChatMessage(ChatRole.User, "What is 17 + 25? Use the add tool.")], options);

foreach (var message in response.Messages)
{
    foreach (var content in message.Contents)
    {
        switch (content)
        {
            case FunctionCallContent call:
                var arguments = (call.Arguments ?? new Dictionary<string, object?>())
                    .Select(kv => $"{kv.Key}={kv.Value}");
                Console.WriteLine($"[tool call] {call.Name}({string.Join(", ", arguments)})");
                break;
            case FunctionResultContent result:
                Console.WriteLine($"[tool result] {result.Result}");
                break;
            case TextReasoningContent thought:
                Console.WriteLine($"[thought] {thought.Text}");
                break;
        }
    }
}
int calls = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Count();
Console.WriteLine($"Answer ({response.FinishReason}, {calls} tool call(s)): {response.Text}");
if (calls == 0) Console.WriteLine(
    "The model called no tool (expected with a random checkpoint; use a MiniCPM4-MCP checkpoint).");

stop.Cancel();
try
{
    await serverRun;
}
catch (OperationCanceledException)
{
}
return 0;
