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

    [Test]
    public void CudaDevicesAreListedOrTheReasonIsGiven()
    {
        CudaDeviceList list = MiniCpmNative.GetCudaDevices();
        if (!MiniCpmNative.GetBuildInfo().Backends.Contains("cuda"))
            Assert.That(list.UnavailableReason, Does.StartWith("CUDA unavailable: ").And.Contain("not compiled"));
        if (list.UnavailableReason is not null)
        {
            Assert.That(list.Devices, Is.Empty);
            return;
        }
        Assert.That(list.Devices, Is.Not.Empty);
        foreach (CudaDeviceInfo d in list.Devices)
        {
            Assert.That(d.Name, Is.Not.Empty);
            Assert.That(d.TotalMemoryBytes, Is.GreaterThanOrEqualTo(d.FreeMemoryBytes).And.GreaterThan(0));
            Assert.That(d.Usable, Is.EqualTo(d.Problem is null));
        }
    }
}
