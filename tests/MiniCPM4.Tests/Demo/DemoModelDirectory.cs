using NUnit.Framework;

namespace MiniCPM4.Tests.Demo;

/// <summary>Finds the repository's bundled demo model (models/demo) above the test directory.</summary>
internal static class DemoModelDirectory
{
    public static string Find()
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
        {
            string dir = Path.Combine(d.FullName, "models", "demo");
            if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        }
        Assert.Fail("models/demo is part of the repository and must be found above the test directory");
        throw new InvalidOperationException("unreachable");
    }
}
