using MiniCPM4.Interop;
using NUnit.Framework;

namespace MiniCPM4.Tests.Interop;

[TestFixture]
public class AbiTests
{
    [Test]
    public void TheLibraryHasTheAbiVersionTheBindingsWereGeneratedFor()
    {
        // A direct P/Invoke: NativeMethods' static constructor routes it through the resolver.
        Assert.That(NativeMethods.mcpm_abi_version(), Is.EqualTo((uint)NativeConstants.MCPM_ABI_VERSION));
    }

    [Test]
    public void BuildInfoDescribesACpuBuild()
    {
        MiniCpmBuildInfo info = MiniCpmNative.GetBuildInfo();
        Assert.Multiple(() =>
        {
            Assert.That(info.AbiVersion, Is.EqualTo((uint)NativeConstants.MCPM_ABI_VERSION));
            Assert.That(info.Backends, Does.Contain("cpu"));
            Assert.That(info.Version, Does.Match(@"^\d+\.\d+\.\d+"));
            Assert.That(info.CpuFeatures, Does.Contain("(selected)"));
            Assert.That(info.Compiler, Is.Not.Empty);
            if (!info.Backends.Contains("cuda"))
            {
                Assert.That(info.CudaVersion, Is.Zero);
                Assert.That(info.CudaArchitectures, Is.Empty);
            }
        });
        Assert.That(MiniCpmNative.LoadedLibraryPath, Is.Not.Null);
    }
}
