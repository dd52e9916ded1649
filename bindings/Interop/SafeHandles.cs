using System.Runtime.InteropServices;

namespace MiniCPM4.Interop;

/// <summary>Owns an mcpm_model*; releasing it calls mcpm_model_free.</summary>
internal sealed class ModelHandle : SafeHandle
{
    /// <summary>Creates an invalid handle; the LibraryImport marshaller fills it from an out-parameter.</summary>
    public ModelHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    internal ModelHandle(nint existing, bool ownsHandle)
        : base(IntPtr.Zero, ownsHandle)
    {
        SetHandle(existing);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        // Sessions hold their own native reference, so this is safe while sessions are alive.
        NativeMethods.mcpm_model_free(handle);
        return true;
    }
}

/// <summary>Owns an mcpm_session*; releasing it calls mcpm_session_free.</summary>
internal sealed class SessionHandle : SafeHandle
{
    /// <summary>Creates an invalid handle; the LibraryImport marshaller fills it from an out-parameter.</summary>
    public SessionHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    internal SessionHandle(nint existing, bool ownsHandle)
        : base(IntPtr.Zero, ownsHandle)
    {
        SetHandle(existing);
    }

    /// <summary>
    /// The model this session was created from, kept reachable for as long as the session is. The native
    /// side refcounts the model too, so disposing the model handle first is safe either way.
    /// </summary>
    internal ModelHandle? Model { get; set; }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMethods.mcpm_session_free(handle);
        return true;
    }
}

/// <summary>Owns an mcpm_draft*; releasing it calls mcpm_draft_free. Sessions created with the draft
/// hold their own native reference.</summary>
internal sealed class DraftHandle : SafeHandle
{
    /// <summary>Creates an invalid handle; the LibraryImport marshaller fills it from an out-parameter.</summary>
    public DraftHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMethods.mcpm_draft_free(handle);
        return true;
    }
}

/// <summary>Owns an mcpm_batcher*; releasing it calls mcpm_batcher_free. The batcher holds its own
/// native reference to the model.</summary>
internal sealed class BatcherHandle : SafeHandle
{
    /// <summary>Creates an invalid handle; the LibraryImport marshaller fills it from an out-parameter.</summary>
    public BatcherHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMethods.mcpm_batcher_free(handle);
        return true;
    }
}
