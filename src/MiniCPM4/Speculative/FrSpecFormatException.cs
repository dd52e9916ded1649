using MiniCPM4.Checkpoints;

namespace MiniCPM4.Speculative;

/// <summary>
/// An FR-Spec token-id file (<c>freq_&lt;r&gt;.pt</c>, <c>.npy</c> or <c>.safetensors</c>) is missing, unreadable,
/// malformed or does not fit the model (wrong length, duplicate or out-of-range ids, no EOS). The message is
/// "<i>path</i>: <i>problem</i>"; <see cref="CheckpointException.FilePath"/> holds the path. It derives from
/// <see cref="CheckpointException"/> because the file is part of a (speculative-decoding) checkpoint.
/// </summary>
public sealed class FrSpecFormatException : CheckpointException
{
    /// <summary>Creates an exception whose message is "<paramref name="filePath"/>: <paramref
    /// name="problem"/>".</summary>
    public FrSpecFormatException(string? filePath, string problem, Exception? innerException = null)
        : base(filePath, problem, innerException)
    {
    }
}
