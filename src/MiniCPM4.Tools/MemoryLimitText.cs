namespace MiniCPM4;

/// <summary>Parses a KV-cache memory limit as the CLI and server take it (e.g. "2GiB", "512M", "80%").</summary>
public static class MemoryLimitText
{
    /// <summary>The limit as <see cref="SessionOptions.KvCacheMemoryBytes"/> and
    /// <see cref="SessionOptions.KvCacheMemoryFraction"/> (one of them 0).</summary>
    /// <exception cref="FormatException">The text is not a limit.</exception>
    public static (long Bytes, double Fraction) Parse(string text) => MemoryLimit.Parse(text);
}
