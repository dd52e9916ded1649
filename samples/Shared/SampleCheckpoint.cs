using MiniCPM4.Checkpoints;

namespace MiniCPM4.Samples;

/// <summary>The checkpoint a sample runs on: the directory given on its command line, else a tiny random one written to
/// a fresh temporary directory that <see cref="Dispose"/> deletes (so a sample leaves nothing behind).</summary>
internal sealed class SampleCheckpoint : IDisposable
{
    private readonly bool _temporary;

    private SampleCheckpoint(string directory, bool temporary)
    {
        Directory = directory;
        _temporary = temporary;
    }

    public string Directory { get; }

    /// <summary><paramref name="args"/>[0] when given, else a tiny random checkpoint (its output is
    /// gibberish).</summary>
    public static SampleCheckpoint FromArgs(string[] args, string sample, ulong seed)
    {
        if (args.Length > 0) return new SampleCheckpoint(args[0], temporary: false);
        string dir = System.IO.Directory.CreateTempSubdirectory($"minicpm4-{sample}-").FullName;
        Console.WriteLine($"No checkpoint given: writing a tiny random one to {dir} (its output is gibberish)");
        var checkpoint = new SampleCheckpoint(dir, temporary: true);
        try
        {
            CheckpointWriter.CreateRandomModel(dir, ModelPreset.Tiny, seed, TensorDType.BF16);
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
        return checkpoint;
    }

    public void Dispose()
    {
        if (!_temporary) return;
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException e)
        {
            Console.Error.WriteLine($"could not delete the temporary checkpoint {Directory}: {e.Message}");
        }
    }
}
