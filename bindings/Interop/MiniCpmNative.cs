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

/// <summary>One CUDA device as the driver reports it.</summary>
/// <param name="Index">The ordinal to select it with (<c>--device cuda:N</c>,
/// <c>MiniCpmLoadOptions.DeviceIndex</c>).</param>
/// <param name="Name">The device's name, e.g. "NVIDIA H100 80GB HBM3".</param>
/// <param name="ComputeCapability">10 * major + minor, e.g. 90.</param>
/// <param name="Multiprocessors">Streaming multiprocessors.</param>
/// <param name="TotalMemoryBytes">Device memory.</param>
/// <param name="FreeMemoryBytes">Free device memory when the list was taken.</param>
/// <param name="Problem">Why the CUDA backend cannot run on it (e.g. "sm_75; sm_80 or newer required"), or null when it
/// can.</param>
public sealed record CudaDeviceInfo(
    int Index,
    string Name,
    int ComputeCapability,
    int Multiprocessors,
    long TotalMemoryBytes,
    long FreeMemoryBytes,
    string? Problem)
{
    /// <summary>Whether the CUDA backend runs on this device.</summary>
    public bool Usable => Problem is null;
}

/// <summary>The CUDA devices the engine sees.</summary>
/// <param name="Devices">Every device the driver lists (usable or not); empty when CUDA is unavailable.</param>
/// <param name="UnavailableReason">
/// Why there are none ("CUDA unavailable: the CUDA backend is not compiled into this build of the library",
/// "CUDA unavailable: no CUDA device / driver: ..."), or null when devices were listed.
/// </param>
public sealed record CudaDeviceList(IReadOnlyList<CudaDeviceInfo> Devices, string? UnavailableReason);

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
    /// <exception cref="MiniCpmNativeLibraryException">The library cannot be found, loaded, or has another ABI
    /// version.</exception>
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

    /// <summary>
    /// Lists the CUDA devices. A library without the CUDA backend, or a machine without a driver or device, gives an
    /// empty list with the reason instead of an exception. Reading free memory creates each device's CUDA context.
    /// </summary>
    /// <exception cref="MiniCpmNativeLibraryException">The library cannot be found, loaded, or has another ABI
    /// version.</exception>
    public static unsafe CudaDeviceList GetCudaDevices()
    {
        NativeLibraryResolver.EnsureLoaded();
        int count = 0;
        int status = NativeMethods.mcpm_cuda_device_count(&count);
        if (status == NativeConstants.MCPM_ERR_BACKEND_UNAVAILABLE)
            return new CudaDeviceList([], NativeStatus.LastError());
        NativeStatus.Check(status);

        var devices = new List<CudaDeviceInfo>(count);
        for (int i = 0; i < count; i++)
        {
            var info = new mcpm_cuda_device_info { struct_size = (uint)sizeof(mcpm_cuda_device_info) };
            NativeStatus.Check(NativeMethods.mcpm_cuda_device_get_info(i, &info));
            string problem = NativeStatus.ToManagedString(info.problem);
            devices.Add(new CudaDeviceInfo(
                info.index,
                NativeStatus.ToManagedString(info.name),
                info.compute_capability,
                info.multiprocessor_count,
                (long)info.total_memory_bytes,
                (long)info.free_memory_bytes,
                info.usable != 0 ? null : problem.Length > 0 ? problem : "not usable (no reason given)"));
        }
        return new CudaDeviceList(devices.AsReadOnly(), null);
    }
}
