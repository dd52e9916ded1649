using MiniCPM4.Cli;

return await Cli.RunAsync(args);
