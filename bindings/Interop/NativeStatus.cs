using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace MiniCPM4.Interop;

/// <summary>Turns native status codes into exceptions and native strings into managed ones.</summary>
internal static unsafe class NativeStatus
{
    /// <summary>Throws the exception for <paramref name="status"/> unless it is MCPM_OK.</summary>
    /// <remarks>
    /// Must be called on the thread that made the failing call, before any other call into the library,
    /// because the message comes from mcpm_last_error(), which is per thread.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Check(int status)
    {
        if (status != NativeConstants.MCPM_OK)
            ThrowForStatus(status);
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowForStatus(int status) => throw CreateException(status, LastError());

    /// <summary>
    /// The exception for a failing status: one MiniCpmException subclass per failure class, and
    /// <see cref="OperationCanceledException"/> for MCPM_ERR_CANCELLED. An empty native message is
    /// replaced by the status name.
    /// </summary>
    internal static Exception CreateException(int status, string nativeMessage)
    {
        string message = string.IsNullOrEmpty(nativeMessage) ? $"{StatusName(status)} (status {status})"
            : nativeMessage;
        return status switch
        {
            NativeConstants.MCPM_ERR_INVALID_ARGUMENT => InvalidArgument(message),
            NativeConstants.MCPM_ERR_OUT_OF_MEMORY => new MiniCpmOutOfMemoryException(message),
            NativeConstants.MCPM_ERR_UNSUPPORTED => new MiniCpmUnsupportedException(message),
            NativeConstants.MCPM_ERR_CONTEXT_FULL => new MiniCpmContextFullException(message),
            NativeConstants.MCPM_ERR_CANCELLED => new OperationCanceledException(message),
            NativeConstants.MCPM_ERR_BACKEND_UNAVAILABLE => new MiniCpmBackendUnavailableException(message),
            NativeConstants.MCPM_ERR_INTERNAL => new MiniCpmInternalException(message),
            NativeConstants.MCPM_ERR_CALLBACK => new MiniCpmConstraintException(message),
            NativeConstants.MCPM_ERR_NONFINITE => new MiniCpmNonFiniteLogitsException(message),
            _ => new MiniCpmException(message, status),
        };
    }

    /// <summary>An INVALID_ARGUMENT error, with native field names replaced by the managed option names.</summary>
    private static MiniCpmInvalidArgumentException InvalidArgument(string nativeMessage)
    {
        string message = NativeFieldNames.Translate(nativeMessage, out string? paramName);
        return new MiniCpmInvalidArgumentException(message, paramName);
    }

    /// <summary>The message of the last failing call on this thread ("" if none).</summary>
    internal static string LastError() => ToManagedString(NativeMethods.mcpm_last_error());

    /// <summary>The engine's name for a status code ("invalid argument", ...).</summary>
    internal static string StatusName(int status) => ToManagedString(NativeMethods.mcpm_status_string(status));

    /// <summary>Copies a NUL-terminated UTF-8 string owned by the library; null becomes "".</summary>
    internal static string ToManagedString(byte* utf8)
    {
        if (utf8 == null)
            return string.Empty;
        return Encoding.UTF8.GetString(MemoryMarshal.CreateReadOnlySpanFromNullTerminated(utf8));
    }
}
