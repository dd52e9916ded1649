namespace MiniCPM4.Checkpoints;

/// <summary>
/// A checkpoint (directory, config file or weights file) could not be loaded. The message always names the
/// file or directory involved (full path) and the problem; <see cref="FilePath"/> holds that path.
/// </summary>
public class CheckpointException : Exception
{
    /// <summary>Full path of the file or directory the problem was found in, if any.</summary>
    public string? FilePath { get; }

    /// <summary>Creates an exception whose message is "<paramref name="filePath"/>: <paramref
    /// name="problem"/>".</summary>
    public CheckpointException(string? filePath, string problem, Exception? innerException = null)
        : base(Format(filePath, problem), innerException)
    {
        FilePath = filePath;
    }

    private static string Format(string? filePath, string problem) =>
        string.IsNullOrEmpty(filePath) ? problem : filePath + ": " + problem;

    /// <summary>Wraps an I/O or permission failure while reading <paramref name="filePath"/>.</summary>
    internal static CheckpointException Io(string filePath, Exception e) =>
        new(filePath, "cannot read the file: " + e.Message, e);

    /// <summary>True for the exceptions that file-system access throws (missing file, permissions, I/O).</summary>
    internal static bool IsIoError(Exception e) =>
        e is IOException or UnauthorizedAccessException or System.Security.SecurityException;
}
