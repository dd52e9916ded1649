using MiniCPM4.Interop;

namespace MiniCPM4;

/// <summary>
/// A failure reported by the MiniCPM4 native engine. <see cref="Status"/> is the engine's status code
/// (one per failure class); the message is the engine's own description of what went wrong.
/// </summary>
public class MiniCpmException : Exception
{
    public MiniCpmException(string message, int status, Exception? inner = null)
        : base(message, inner)
    {
        Status = status;
    }

    /// <summary>The native status code (MCPM_ERR_*), or -1 when the native library itself could not be used.</summary>
    public int Status { get; }
}

/// <summary>
/// A bad option, pointer, size, name, shape or dtype, or a call in the wrong state (MCPM_ERR_INVALID_ARGUMENT). An
/// <see cref="ArgumentException"/>, so callers catch it with the other argument errors; the message names the managed
/// option (e.g. <c>GenerationOptions.TopP</c>) where the field has one, and <see cref="ArgumentException.ParamName"/>
/// is that name. Not a <see cref="MiniCpmException"/> (a class has one base), but it carries the same
/// <see cref="Status"/>.
/// </summary>
public class MiniCpmInvalidArgumentException : ArgumentException
{
    public MiniCpmInvalidArgumentException(string message, Exception? inner = null)
        : base(message, inner)
    {
        _message = message;
    }

    public MiniCpmInvalidArgumentException(string message, string? paramName, Exception? inner = null)
        : base(message, paramName, inner)
    {
        _message = message;
    }

    private readonly string _message;

    /// <summary>The message as given: it names the option already, so no "(Parameter '...')" suffix is added.</summary>
    public override string Message => _message;

    /// <summary>The native status code: always MCPM_ERR_INVALID_ARGUMENT.</summary>
    public int Status => NativeConstants.MCPM_ERR_INVALID_ARGUMENT;
}

/// <summary>An allocation in the engine failed; nothing was changed (MCPM_ERR_OUT_OF_MEMORY).</summary>
public class MiniCpmOutOfMemoryException : MiniCpmException
{
    public MiniCpmOutOfMemoryException(string message, Exception? inner = null)
        : base(message, NativeConstants.MCPM_ERR_OUT_OF_MEMORY, inner)
    {
    }
}

/// <summary>A valid request the engine cannot serve, e.g. a configuration it does not implement
/// (MCPM_ERR_UNSUPPORTED).</summary>
public class MiniCpmUnsupportedException : MiniCpmException
{
    public MiniCpmUnsupportedException(string message, Exception? inner = null)
        : base(message, NativeConstants.MCPM_ERR_UNSUPPORTED, inner)
    {
    }
}

/// <summary>The tokens do not fit into the session's KV cache (MCPM_ERR_CONTEXT_FULL).</summary>
public class MiniCpmContextFullException : MiniCpmException
{
    public MiniCpmContextFullException(string message, Exception? inner = null)
        : base(message, NativeConstants.MCPM_ERR_CONTEXT_FULL, inner)
    {
    }
}

/// <summary>The requested backend is not compiled in or has no usable device (MCPM_ERR_BACKEND_UNAVAILABLE).</summary>
public class MiniCpmBackendUnavailableException : MiniCpmException
{
    public MiniCpmBackendUnavailableException(string message, Exception? inner = null)
        : base(message, NativeConstants.MCPM_ERR_BACKEND_UNAVAILABLE, inner)
    {
    }
}

/// <summary>The model's logits held a NaN or an infinity, so nothing could be sampled (MCPM_ERR_NONFINITE): corrupt
/// weights or an overflow. The message names the generation step; the session stays usable.</summary>
public class MiniCpmNonFiniteLogitsException : MiniCpmException
{
    public MiniCpmNonFiniteLogitsException(string message, Exception? inner = null)
        : base(message, NativeConstants.MCPM_ERR_NONFINITE, inner)
    {
    }
}

/// <summary>A bug in the engine; the message says where (MCPM_ERR_INTERNAL).</summary>
public class MiniCpmInternalException : MiniCpmException
{
    public MiniCpmInternalException(string message, Exception? inner = null)
        : base(message, NativeConstants.MCPM_ERR_INTERNAL, inner)
    {
    }
}

/// <summary>
/// The native library could not be found or loaded, or it is incompatible with this version of the
/// managed bindings. <see cref="Attempts"/> lists every place that was tried and why it failed.
/// </summary>
public sealed class MiniCpmNativeLibraryException : MiniCpmException
{
    public MiniCpmNativeLibraryException(string message, IReadOnlyList<string> attempts, Exception? inner = null)
        : base(message, -1, inner)
    {
        Attempts = attempts;
    }

    /// <summary>"path: reason" for every location tried, in search order.</summary>
    public IReadOnlyList<string> Attempts { get; }
}
