using System.Runtime.InteropServices;

namespace MiniCPM4.CompareLlamaCpp;

/// <summary>Our engine in-process through the managed API: CPU backend, no draft (no speculation), one
/// session.</summary>
public sealed class OurEngine : IDisposable
{
    private readonly MiniCpmModel _model;
    private readonly MiniCpmSession _session;

    public OurEngine(string checkpointDirectory, int threads, int contextLength, bool int4)
    {
        _model = MiniCpmModel.Load(checkpointDirectory, new MiniCpmLoadOptions
        {
            Device = ComputeDevice.Cpu,
            Threads = threads,
            Quantization = int4 ? WeightQuantization.Int4 : WeightQuantization.None,
            SparseAttention = false,  // llama.cpp has no InfLLM v2: both run dense attention
        });
        if (int4 && _model.Int4LinearCount == 0) throw new InvalidOperationException(
            "the engine did not quantize the linear layers to int4");
        _session = _model.CreateSession(new SessionOptions { ContextLength = contextLength });
    }

    public MiniCpmModel Model => _model;
    public int VocabSize => _model.Config.VocabSize;

    public float[] Evaluate(ReadOnlySpan<int> tokens, bool allPositions) =>
        _session.PrefillWithLogits(tokens, allPositions);

    public float[] DecodeOne(int token) => _session.Decode(token);

    public void Clear() => _session.Reset();

    public void Dispose()
    {
        _session.Dispose();
        _model.Dispose();
    }

    /// <summary>
    /// Our CPU kernels as the library reports them, plus the environment that selects them. MCPM_CPU_PRECISION (fast |
    /// exact) picks the activation types of int4 and bf16 prefill, MCPM_CPU_ISA the vector kernels; unset means the
    /// library's default.
    /// </summary>
    public static string KernelInfo()
    {
        var build = MiniCpmNative.GetBuildInfo();
        return $"{build.CpuFeatures}; MCPM_CPU_ISA={NativeEnvironment.Get("MCPM_CPU_ISA") ?? "(unset)"}, " +
               $"MCPM_CPU_PRECISION={NativeEnvironment.Get("MCPM_CPU_PRECISION") ?? "(unset)"}; library " +
                   $"{build.Version} ({build.Compiler})";
    }
}

/// <summary>
/// The process environment as native code sees it. .NET's Environment.SetEnvironmentVariable does not reach the C
/// runtime's environ on Unix, so a variable the engine reads with getenv is set through libc.
/// </summary>
public static partial class NativeEnvironment
{
    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);

    [LibraryImport("libc", EntryPoint = "getenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr GetEnv(string name);

    public static void Set(string name, string value)
    {
        if (!OperatingSystem.IsWindows() && SetEnv(name, value, 1) != 0) throw new InvalidOperationException(
            $"setenv({name}) failed");
        Environment.SetEnvironmentVariable(name, value);
    }

    public static string? Get(string name) =>
        OperatingSystem.IsWindows() ? Environment.GetEnvironmentVariable(name) : Marshal.PtrToStringUTF8(GetEnv(name));
}
