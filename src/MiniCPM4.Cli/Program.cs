using System.CommandLine;
using MiniCPM4.Cli;

return await Cli.RunAsync(args);
