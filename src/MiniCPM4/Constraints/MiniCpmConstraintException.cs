using MiniCPM4.Interop;

namespace MiniCPM4;

/// <summary>
/// A constrained generation could not go on: the constraint rejected the output so far (for example tokens
/// appended outside the generation), or computing a token mask failed. The inner exception says why.
/// </summary>
public sealed class MiniCpmConstraintException(string message, Exception? inner = null)
    : MiniCpmException(message, NativeConstants.MCPM_ERR_CALLBACK, inner);
