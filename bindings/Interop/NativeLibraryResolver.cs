using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace MiniCPM4.Interop;

/// <summary>The outcome of one search for the native library: the loaded handle (or 0) and every attempt.</summary>
internal sealed class NativeLibrarySearch
{
    internal NativeLibrarySearch(nint handle, string? loadedPath, IReadOnlyList<string> attempts)
    {
        Handle = handle;
        LoadedPath = loadedPath;
        Attempts = attempts.ToArray().AsReadOnly();
    }

    /// <summary>The library handle, or 0 if nothing loaded.</summary>
    internal nint Handle { get; }

    /// <summary>Where the library was loaded from (for the OS search: the library name).</summary>
    internal string? LoadedPath { get; }

    /// <summary>"path: reason" for each location tried, in order, including the one that loaded.</summary>
    internal IReadOnlyList<string> Attempts { get; }

    internal bool Succeeded => Handle != 0;

    /// <summary>The exception describing a failed search: every path tried, its reason, and how to fix it.</summary>
    internal MiniCpmNativeLibraryException CreateException()
    {
        var sb = new StringBuilder();
        sb.Append("The MiniCPM4 native engine (").Append(NativeLibraryResolver.PlatformFileName).Append(
            ") was not found. ");
        if (NativeLibraryResolver.RuntimePackage() is { } package)
            sb.Append("Add its runtime package to the application: dotnet add package ").Append(package)
              .Append(" (MiniCPM4.Runtime.linux-x64.Cuda for the CUDA build).");
        else
            sb.Append("No runtime package is published for ").Append(RuntimeInformation.RuntimeIdentifier)
              .Append(": build the engine from source (./build.sh in the MiniCPM4.NET repository).");
        sb.Append(" Or set ").Append(NativeLibraryResolver.EnvironmentVariable)
          .Append(
              " to the library file or its directory, or call MiniCpmNative.SetLibraryPath(path) before the first use")
          .Append(" (in the source tree, ./build.sh builds build/native/").Append(
              NativeLibraryResolver.PlatformFileName)
          .Append(").\nTried, in order:");
        for (int i = 0; i < Attempts.Count; i++)
            sb.Append('\n').Append("  ").Append(i + 1).Append(". ").Append(Attempts[i]);
        return new MiniCpmNativeLibraryException(sb.ToString(), Attempts);
    }
}

/// <summary>
/// Finds, loads and checks the native engine for every P/Invoke of this assembly. Search order:
/// (1) the path given to <see cref="Configure"/>, (2) $MINICPM4_NATIVE_LIBRARY (file or directory),
/// (3) runtimes/&lt;rid&gt;/native/&lt;file&gt; under the application and the MiniCPM4.Core directories,
/// (4) those directories themselves, (5) the operating system's default search.
/// </summary>
internal static class NativeLibraryResolver
{
    internal const string EnvironmentVariable = "MINICPM4_NATIVE_LIBRARY";

    private static readonly Lock Gate = new();
    private static volatile bool s_registered;
    private static string? s_configuredPath;
    private static nint s_handle;
    private static string? s_loadedPath;

    // Set while this thread searches, so a resolver callback triggered by the search itself is declined.
    [ThreadStatic]
    private static bool t_searching;

    /// <summary>The platform's file name of the library: libminicpm4.so, libminicpm4.dylib or minicpm4.dll.</summary>
    internal static string PlatformFileName { get; } =
        OperatingSystem.IsWindows() ? NativeMethods.LibraryName + ".dll"
        : OperatingSystem.IsMacOS() || OperatingSystem.IsIOS() || OperatingSystem.IsMacCatalyst() ? "lib"
            + NativeMethods.LibraryName + ".dylib"
        : "lib" + NativeMethods.LibraryName + ".so";

    /// <summary>The full path the library was loaded from, or null before the first successful load.</summary>
    internal static string? LoadedPath => Volatile.Read(ref s_loadedPath);

    /// <summary>Registers the DllImport resolver for MiniCPM4.Core; idempotent and thread-safe.</summary>
    internal static void Register()
    {
        if (s_registered)
            return;
        lock (Gate)
        {
            if (s_registered)
                return;
            NativeLibrary.SetDllImportResolver(typeof(NativeMethods).Assembly, Resolve);
            s_registered = true;
        }
    }

    /// <summary>
    /// Sets the path (a file, or a directory holding the library) searched first. Must be called before the
    /// library is loaded; once loaded, a different path throws <see cref="InvalidOperationException"/>
    /// and the same path is accepted as a no-op.
    /// </summary>
    internal static void Configure(string? explicitPath)
    {
        string? full = string.IsNullOrWhiteSpace(explicitPath) ? null : CandidateFile(Path.GetFullPath(explicitPath));
        lock (Gate)
        {
            if (s_handle != 0)
            {
                if (full is null || PathsEqual(full, s_loadedPath))
                    return;
                throw new InvalidOperationException(
                    $"The MiniCPM4 native library is already loaded from '{s_loadedPath}'; the library path " +
                    $"'{explicitPath}' must be set before the first use of the library.");
            }
            s_configuredPath = full;
        }
    }

    /// <summary>Loads the library now (idempotent, thread-safe); throws MiniCpmNativeLibraryException on
    /// failure.</summary>
    internal static void EnsureLoaded() => _ = GetHandle();

    private static nint GetHandle()
    {
        nint handle = Volatile.Read(ref s_handle);
        return handle != 0 ? handle : LoadSlow();
    }

    private static nint LoadSlow()
    {
        Register();
        lock (Gate)
        {
            if (s_handle != 0)
                return s_handle;

            NativeLibrarySearch search;
            t_searching = true;
            try
            {
                search = Search(s_configuredPath, Environment.GetEnvironmentVariable(EnvironmentVariable));
            }
            finally
            {
                t_searching = false;
            }
            if (!search.Succeeded)
                throw search.CreateException();

            try
            {
                CheckAbi(search.Handle, search.LoadedPath!, unchecked((uint)NativeConstants.MCPM_ABI_VERSION));
            }
            catch
            {
                NativeLibrary.Free(search.Handle);
                throw;
            }
            Volatile.Write(ref s_loadedPath, search.LoadedPath);
            Volatile.Write(ref s_handle, search.Handle);
            return search.Handle;
        }
    }

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName != NativeMethods.LibraryName || t_searching)
            return 0;
        // Throws MiniCpmNativeLibraryException (with every path tried) out of the first P/Invoke.
        return GetHandle();
    }

    /// <summary>
    /// Calls mcpm_abi_version() of a loaded library and throws MiniCpmNativeLibraryException if it is
    /// missing or differs from <paramref name="expected"/>.
    /// </summary>
    internal static unsafe void CheckAbi(nint handle, string path, uint expected)
    {
        if (!NativeLibrary.TryGetExport(handle, "mcpm_abi_version", out nint export))
        {
            string missing = $"{path}: does not export mcpm_abi_version; it is not a MiniCPM4 engine library";
            throw new MiniCpmNativeLibraryException(
                $"The MiniCPM4 native library at '{path}' does not export mcpm_abi_version: it is not a MiniCPM4 " +
                    $"engine library.",
                [missing]);
        }
        uint actual = ((delegate* unmanaged<uint>)export)();
        if (actual != expected)
        {
            string mismatch = $"{path}: ABI version {actual}, expected {expected}";
            throw new MiniCpmNativeLibraryException(
                $"The MiniCPM4 native library at '{path}' has ABI version {actual}, but these bindings were " +
                    $"generated " +
                $"for ABI version {expected}. Rebuild the native library (./build.sh) from the same source tree as " +
                    $"the " +
                $"managed library, or point {EnvironmentVariable} at a matching build.",
                [mismatch]);
        }
    }

    /// <summary>
    /// Searches for the library without touching the process-wide state: returns the first handle that loads
    /// (the caller owns it) and every attempt. <paramref name="baseDirectories"/> defaults to the application
    /// directory and the directory of MiniCPM4.Core.
    /// </summary>
    internal static NativeLibrarySearch Search(
        string? explicitPath,
        string? environmentValue,
        IReadOnlyList<string>? baseDirectories = null,
        bool includeDefaultSearch = true)
    {
        var attempts = new List<string>();
        var tried = new HashSet<string>(OperatingSystem.IsWindows() || OperatingSystem.IsMacOS()
            ? StringComparer.OrdinalIgnoreCase
            : StringComparer.Ordinal);

        nint TryPath(string path, string source)
        {
            string full;
            try
            {
                full = CandidateFile(Path.GetFullPath(path));
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
            {
                attempts.Add($"{path}: invalid path: {e.Message} ({source})");
                return 0;
            }
            if (!tried.Add(full))
                return 0;
            if (!File.Exists(full))
            {
                attempts.Add($"{full}: not found ({source})");
                return 0;
            }
            try
            {
                nint h = NativeLibrary.Load(full);
                attempts.Add($"{full}: loaded ({source})");
                return h;
            }
            catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
            {
                attempts.Add($"{full}: load error: {OneLine(e.Message)} ({source})");
                return 0;
            }
        }

        nint handle;
        if (!string.IsNullOrWhiteSpace(explicitPath) &&
            (handle = TryPath(explicitPath, "explicit path from MiniCpmNative.SetLibraryPath")) != 0)
        {
            return new NativeLibrarySearch(handle, CandidateFile(Path.GetFullPath(explicitPath)), attempts);
        }
        if (!string.IsNullOrWhiteSpace(environmentValue) &&
            (handle = TryPath(environmentValue, $"${EnvironmentVariable}")) != 0)
        {
            return new NativeLibrarySearch(handle, CandidateFile(Path.GetFullPath(environmentValue)), attempts);
        }

        IReadOnlyList<string> bases = baseDirectories ?? DefaultBaseDirectories();
        foreach (string dir in bases)
        {
            foreach (string rid in RuntimeIdentifiers())
            {
                string path = Path.Combine(dir, "runtimes", rid, "native", PlatformFileName);
                if ((handle = TryPath(path, $"runtimes/{rid}/native")) != 0)
                    return new NativeLibrarySearch(handle, Path.GetFullPath(path), attempts);
            }
        }
        foreach (string dir in bases)
        {
            string path = Path.Combine(dir, PlatformFileName);
            if ((handle = TryPath(path, "application directory")) != 0)
                return new NativeLibrarySearch(handle, Path.GetFullPath(path), attempts);
        }

        if (includeDefaultSearch)
        {
            string what = $"'{NativeMethods.LibraryName}' via the default OS library search";
            try
            {
                handle = NativeLibrary.Load(NativeMethods.LibraryName, typeof(NativeMethods).Assembly, null);
                attempts.Add($"{what}: loaded");
                return new NativeLibrarySearch(handle, NativeMethods.LibraryName, attempts);
            }
            catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
            {
                attempts.Add($"{what}: {OneLine(e.Message)}");
            }
        }
        return new NativeLibrarySearch(0, null, attempts);
    }

    /// <summary>The NuGet package with the CPU engine for this process's platform, or null where none is
    /// published.</summary>
    internal static string? RuntimePackage()
    {
        if (!OperatingSystem.IsLinux()
            || RuntimeInformation.RuntimeIdentifier.Contains("musl", StringComparison.Ordinal))
            return null;
        return RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => "MiniCPM4.Runtime.linux-x64",
            Architecture.Arm64 => "MiniCPM4.Runtime.linux-arm64",
            _ => null,
        };
    }

    /// <summary>The runtime's RID and its portable form (e.g. linux-x64), without duplicates.</summary>
    internal static IReadOnlyList<string> RuntimeIdentifiers()
    {
        var rids = new List<string> { RuntimeInformation.RuntimeIdentifier };
        string os = OperatingSystem.IsWindows() ? "win"
            : OperatingSystem.IsMacOS() ? "osx"
            : OperatingSystem.IsFreeBSD() ? "freebsd"
            : RuntimeInformation.RuntimeIdentifier.Contains("musl", StringComparison.Ordinal) ? "linux-musl"
            : "linux";
        string arch = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        string portable = os + "-" + arch;
        if (!rids.Contains(portable))
            rids.Add(portable);
        return rids;
    }

    [UnconditionalSuppressMessage("SingleFile",
        "IL3000:Avoid accessing Assembly file path when publishing as a single file",
        Justification =
            "An empty Location (single-file or AOT) is skipped; AppContext.BaseDirectory covers those cases.")]
    private static IReadOnlyList<string> DefaultBaseDirectories()
    {
        var dirs = new List<string>();
        if (!string.IsNullOrEmpty(AppContext.BaseDirectory))
            dirs.Add(AppContext.BaseDirectory);
        string location = typeof(NativeMethods).Assembly.Location;
        if (!string.IsNullOrEmpty(location) && Path.GetDirectoryName(location) is { Length: > 0 } assemblyDir)
            dirs.Add(assemblyDir);
        return dirs;
    }

    /// <summary>A directory stands for the library file inside it.</summary>
    private static string CandidateFile(string fullPath) =>
        Directory.Exists(fullPath) ? Path.Combine(fullPath, PlatformFileName) : fullPath;

    private static bool PathsEqual(string a, string? b) =>
        b is not null && string.Equals(
            Path.GetFullPath(a).TrimEnd(Path.DirectorySeparatorChar),
            Path.GetFullPath(b).TrimEnd(Path.DirectorySeparatorChar),
            OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase
                : StringComparison.Ordinal);

    private static string OneLine(string s) => s.Replace("\r", "").Replace('\n', ' ').Trim();
}
