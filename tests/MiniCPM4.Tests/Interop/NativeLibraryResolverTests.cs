using System.Runtime.InteropServices;
using MiniCPM4.Interop;
using NUnit.Framework;

namespace MiniCPM4.Tests.Interop;

/// <summary>
/// The search is exercised through NativeLibraryResolver.Search, which has no process-wide effects;
/// the process-wide resolver is only observed (it has loaded the library by the time these run).
/// </summary>
[TestFixture]
public class NativeLibraryResolverTests
{
    private string _scratch = null!;

    [SetUp]
    public void CreateScratch()
    {
        _scratch = Path.Combine(Path.GetTempPath(), "minicpm4-resolver-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_scratch);
    }

    [TearDown]
    public void DeleteScratch() => Directory.Delete(_scratch, recursive: true);

    private static string LoadedLibrary()
    {
        NativeLibraryResolver.EnsureLoaded();
        string? path = NativeLibraryResolver.LoadedPath;
        Assert.That(path, Is.Not.Null);
        Assert.That(File.Exists(path), path);
        return path!;
    }

    [Test]
    public void AFailedSearchListsEveryPathWithItsReasonAndHowToFixIt()
    {
        string explicitPath = Path.Combine(_scratch, "explicit", "libnothere.so");
        string envDir = Path.Combine(_scratch, "from-env");
        Directory.CreateDirectory(envDir);
        string[] bases = [Path.Combine(_scratch, "app"), Path.Combine(_scratch, "assembly")];

        NativeLibrarySearch search =
            NativeLibraryResolver.Search(explicitPath, envDir, bases, includeDefaultSearch: false);
        Assert.That(search.Succeeded, Is.False);
        Assert.That(search.Handle, Is.EqualTo((nint)0));

        string file = NativeLibraryResolver.PlatformFileName;
        IReadOnlyList<string> rids = NativeLibraryResolver.RuntimeIdentifiers();
        var expectedPaths = new List<string> { explicitPath, Path.Combine(envDir, file) };
        foreach (string dir in bases)
            foreach (string rid in rids)
                expectedPaths.Add(Path.Combine(dir, "runtimes", rid, "native", file));
        foreach (string dir in bases)
            expectedPaths.Add(Path.Combine(dir, file));

        Assert.That(search.Attempts, Has.Count.EqualTo(expectedPaths.Count));
        for (int i = 0; i < expectedPaths.Count; i++)
            Assert.That(search.Attempts[i], Does.StartWith(expectedPaths[i] + ": not found"));
        Assert.That(search.Attempts[0], Does.Contain("SetLibraryPath"));
        Assert.That(search.Attempts[1], Does.Contain(NativeLibraryResolver.EnvironmentVariable));

        MiniCpmNativeLibraryException ex = search.CreateException();
        Assert.Multiple(() =>
        {
            Assert.That(ex.Status, Is.EqualTo(-1));
            Assert.That(ex.Attempts, Is.EqualTo(search.Attempts));
            foreach (string attempt in search.Attempts)
                Assert.That(ex.Message, Does.Contain(attempt));
            Assert.That(ex.Message, Does.Contain("./build.sh"));
            Assert.That(ex.Message, Does.Contain(NativeLibraryResolver.EnvironmentVariable));
            // A new user's first question is which package they lack: the message starts with it.
            string firstLine = ex.Message.Split('\n')[0];
            if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64)
                Assert.That(firstLine, Does.Contain("dotnet add package MiniCPM4.Runtime.linux-x64 "));
            else if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.Arm64)
                Assert.That(firstLine, Does.Contain("dotnet add package MiniCPM4.Runtime.linux-arm64 "));
        });
    }

    [Test]
    public void TheDefaultOsSearchIsTriedLast()
    {
        NativeLibrarySearch search = NativeLibraryResolver.Search(
            Path.Combine(_scratch, "a.so"), null, [Path.Combine(_scratch, "app")], includeDefaultSearch: true);
        try
        {
            Assert.That(search.Attempts[^1], Does.StartWith("'minicpm4' via the default OS library search: "));
        }
        finally
        {
            if (search.Succeeded)
                NativeLibrary.Free(search.Handle);
        }
    }

    [Test]
    public void AFileThatIsNotALibraryReportsTheLoadError()
    {
        string bogus = Path.Combine(_scratch, NativeLibraryResolver.PlatformFileName);
        File.WriteAllText(bogus, "not a shared library");

        NativeLibrarySearch search = NativeLibraryResolver.Search(bogus, null, [], includeDefaultSearch: false);
        Assert.That(search.Succeeded, Is.False);
        Assert.That(search.Attempts, Has.Count.EqualTo(1));
        Assert.That(search.Attempts[0], Does.StartWith(bogus + ": load error: "));
    }

    [Test]
    public void TheEnvironmentVariableMayNameTheDirectoryOrTheFile()
    {
        string real = LoadedLibrary();
        foreach (string envValue in new[] { Path.GetDirectoryName(real)!, real })
        {
            NativeLibrarySearch search = NativeLibraryResolver.Search(
                Path.Combine(_scratch, "missing.so"), envValue, [], includeDefaultSearch: false);
            try
            {
                Assert.That(search.Succeeded, envValue);
                Assert.That(search.LoadedPath, Is.EqualTo(real));
                Assert.That(search.Attempts, Has.Count.EqualTo(2));
                Assert.That(search.Attempts[0], Does.Contain(": not found"));
                Assert.That(search.Attempts[1], Does.StartWith(real + ": loaded"));
            }
            finally
            {
                if (search.Succeeded)
                    NativeLibrary.Free(search.Handle);
            }
        }
    }

    [Test]
    public void TheExplicitPathComesFirst()
    {
        string real = LoadedLibrary();
        NativeLibrarySearch search =
            NativeLibraryResolver.Search(real, Path.Combine(_scratch, "ignored"), [], includeDefaultSearch: false);
        try
        {
            Assert.That(search.Succeeded);
            Assert.That(search.LoadedPath, Is.EqualTo(real));
            Assert.That(search.Attempts, Has.Count.EqualTo(1));
        }
        finally
        {
            NativeLibrary.Free(search.Handle);
        }
    }

    [Test]
    public void TheApplicationsRuntimesFolderIsSearched()
    {
        string real = LoadedLibrary();
        string rid = NativeLibraryResolver.RuntimeIdentifiers()[^1];
        string app = Path.Combine(_scratch, "app");
        string target = Path.Combine(app, "runtimes", rid, "native", NativeLibraryResolver.PlatformFileName);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        File.Copy(real, target);

        NativeLibrarySearch search = NativeLibraryResolver.Search(null, null, [app], includeDefaultSearch: false);
        try
        {
            Assert.That(search.Succeeded, string.Join("\n", search.Attempts));
            Assert.That(search.LoadedPath, Is.EqualTo(target));
        }
        finally
        {
            if (search.Succeeded)
                NativeLibrary.Free(search.Handle);
        }
    }

    [Test]
    public void RuntimeIdentifiersIncludeThePortableRid()
    {
        IReadOnlyList<string> rids = NativeLibraryResolver.RuntimeIdentifiers();
        Assert.That(rids[0], Is.EqualTo(RuntimeInformation.RuntimeIdentifier));
        Assert.That(rids, Is.Unique);
        if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64)
            Assert.That(rids, Does.Contain("linux-x64"));
    }

    [Test]
    public void AnAbiMismatchNamesBothVersionsAndThePath()
    {
        string real = LoadedLibrary();
        nint handle = NativeLibrary.Load(real);
        try
        {
            var ex =
                Assert.Throws<MiniCpmNativeLibraryException>(() => NativeLibraryResolver.CheckAbi(handle, real, 999));
            Assert.That(ex!.Message, Does.Contain($"ABI version {NativeConstants.MCPM_ABI_VERSION}"));
            Assert.That(ex.Message, Does.Contain("999"));
            Assert.That(ex.Message, Does.Contain(real));
            Assert.That(ex.Status, Is.EqualTo(-1));
            Assert.DoesNotThrow(() =>
                NativeLibraryResolver.CheckAbi(handle, real, (uint)NativeConstants.MCPM_ABI_VERSION));
        }
        finally
        {
            NativeLibrary.Free(handle);
        }
    }

    [Test]
    public void ALibraryWithoutTheAbiExportIsRejected()
    {
        Assume.That(OperatingSystem.IsLinux(), "uses libc as a library that is not the engine");
        nint libc = NativeLibrary.Load("libc.so.6");
        try
        {
            var ex =
                Assert.Throws<MiniCpmNativeLibraryException>(() =>
                NativeLibraryResolver.CheckAbi(libc, "libc.so.6", 1));
            Assert.That(ex!.Message, Does.Contain("does not export mcpm_abi_version"));
        }
        finally
        {
            NativeLibrary.Free(libc);
        }
    }

    [Test]
    public void TheProcessWideResolverLoadedTheLibraryOnce()
    {
        string real = LoadedLibrary();
        Assert.That(MiniCpmNative.LoadedLibraryPath, Is.EqualTo(real));
        Assert.DoesNotThrow(NativeLibraryResolver.EnsureLoaded);
        Assert.That(NativeLibraryResolver.LoadedPath, Is.EqualTo(real));
        if (Environment.GetEnvironmentVariable(NativeLibraryResolver.EnvironmentVariable) is not { Length: > 0 })
        {
            string expectedSuffix = Path.Combine("native", NativeLibraryResolver.PlatformFileName);
            Assert.That(real, Does.EndWith(expectedSuffix), "found in runtimes/<rid>/native of the test output");
        }
    }

    [Test]
    public void SetLibraryPathAfterLoadingOnlyAcceptsTheLoadedPath()
    {
        string real = LoadedLibrary();
        Assert.DoesNotThrow(() => MiniCpmNative.SetLibraryPath(real));
        Assert.DoesNotThrow(() => MiniCpmNative.SetLibraryPath(Path.GetDirectoryName(real)!));
        var ex =
            Assert.Throws<InvalidOperationException>(() =>
            MiniCpmNative.SetLibraryPath(Path.Combine(_scratch, "other.so")));
        Assert.That(ex!.Message, Does.Contain(real));
        Assert.That(MiniCpmNative.LoadedLibraryPath, Is.EqualTo(real));
        Assert.Throws<ArgumentNullException>(() => MiniCpmNative.SetLibraryPath(null!));
        Assert.Throws<ArgumentException>(() => MiniCpmNative.SetLibraryPath("  "));
    }
}
