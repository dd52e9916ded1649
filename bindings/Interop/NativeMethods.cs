namespace MiniCPM4.Interop;

internal static partial class NativeMethods
{
    // Runs before the first call of any binding in this class, so every P/Invoke of MiniCPM4.Core is
    // resolved by NativeLibraryResolver (runtimes/<rid>/native, MINICPM4_NATIVE_LIBRARY, ...).
    static NativeMethods() => NativeLibraryResolver.Register();
}
