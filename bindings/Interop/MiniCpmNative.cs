using MiniCPM4.Interop;

namespace MiniCPM4;

/// <summary>How the native engine was built: version, ABI, backends and CPU/CUDA details.</summary>
/// <param name="Version">Library version, e.g. "0.1.0".</param>
/// <param name="AbiVersion">The library's MCPM_ABI_VERSION.</param>
/// <param name="Backends">Compiled-in backends: "cpu", "cuda".</param>
/// <param name="CudaVersion">CUDA toolkit version as 1000*major+10*minor, 0 without CUDA.</param>
/// <param name="CudaArchitectures">CUDA architectures compiled, e.g. "80;86;90"; "" without CUDA.</param>
/// <param name="CpuFeatures">Vector paths compiled and the one selected at run time.</param>
/// <param name="Compiler">Compiler and build type.</param>
public sealed record MiniCpmBuildInfo(
    string Version,
    uint AbiVersion,
    IReadOnlyList<string> Backends,
    int CudaVersion,
    string CudaArchitectures,
    string CpuFeatures,
    string Compiler);

/// <summary>Locating the native engine library and asking it about itself.</summary>
public static class MiniCpmNative
{
    /// <summary>
    /// Loads the native library from <paramref name="path"/> (the file, or the directory holding it) instead
    /// of searching. Call before anything else uses the library; once it is loaded, a different path throws
    /// <see cref="InvalidOperationException"/>.
    /// </summary>
    public static void SetLibraryPath(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        NativeLibraryResolver.Configure(path);
    }

    /// <summary>The path the native library was loaded from, or null if it is not loaded yet.</summary>
    public static string? LoadedLibraryPath => NativeLibraryResolver.LoadedPath;

    /// <summary>Loads the library if needed and returns how it was built.</summary>
    /// <exception cref="MiniCpmNativeLibraryException">The library cannot be found, loaded, or has another ABI version.</exception>
    public static unsafe MiniCpmBuildInfo GetBuildInfo()
    {
        NativeLibraryResolver.EnsureLoaded();
        var info = new mcpm_build_info { struct_size = (uint)sizeof(mcpm_build_info) };
        NativeStatus.Check(NativeMethods.mcpm_get_build_info(&info));

        var backends = new List<string>();
        uint flags = info.backends;
        if ((flags & NativeConstants.MCPM_BACKEND_FLAG_CPU) != 0)
            backends.Add("cpu");
        if ((flags & NativeConstants.MCPM_BACKEND_FLAG_CUDA) != 0)
            backends.Add("cuda");
        uint unknown = flags & ~(NativeConstants.MCPM_BACKEND_FLAG_CPU | NativeConstants.MCPM_BACKEND_FLAG_CUDA);
        if (unknown != 0)
            backends.Add($"unknown(0x{unknown:x})");

        return new MiniCpmBuildInfo(
            NativeStatus.ToManagedString(info.version),
            info.abi_version,
            backends.AsReadOnly(),
            info.cuda_version,
            NativeStatus.ToManagedString(info.cuda_archs),
            NativeStatus.ToManagedString(info.cpu_features),
            NativeStatus.ToManagedString(info.compiler));
    }
}
