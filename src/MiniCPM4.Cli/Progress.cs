using Spectre.Console;

namespace MiniCPM4.Cli;

/// <summary>A Spectre.Console progress bar on stderr (stdout stays clean for text and JSON); silent
/// when stderr is redirected.</summary>
internal static class Progress
{
    public static async Task<T> RunAsync<T>(string title, Func<IProgress<LoadProgress>, Task<T>> work)
    {
        if (Console.IsErrorRedirected) return await work(new Progress<LoadProgress>());
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        T result = default!;
        await console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                new RemainingTimeColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(title), maxValue: 1.0);
                var reporter = new Progress<LoadProgress>(p => task.Value = p.Fraction);
                result = await work(reporter);
                task.Value = 1.0;
            });
        return result;
    }
}
