using System.Runtime.CompilerServices;
using MiniCPM4.Checkpoints;
using MiniCPM4.Speculative;
using NUnit.Framework;

namespace MiniCPM4.Tests.Api;

/// <summary>Tool types live in MiniCPM4.Tools, so the CLI and tools use public API instead of the core's
/// internals.</summary>
public class AssemblyLayoutTests
{
    [Test]
    public void TheCoreGrantsItsInternalsToNoToolOrCli()
    {
        var friends = typeof(MiniCpmModel).Assembly.GetCustomAttributes(typeof(InternalsVisibleToAttribute), false)
            .Cast<InternalsVisibleToAttribute>().Select(a => a.AssemblyName).ToList();
        Assert.That(friends, Does.Not.Contain("minicpm4").And.Not.Contain("compare-llamacpp")
            .And.Not.Contain("CompareLlamaCpp.Tests").And.Not.Contain("MiniCPM4.AI"));
    }

    [Test]
    public void ToolTypesArePublicInTheToolsAssembly()
    {
        foreach (var type in new[]
                 {
                     typeof(CheckpointWriter), typeof(TokenFrequencyCounter), typeof(FrSpecVocabularyBuilder),
                     typeof(CheckpointInspection), typeof(MiniCPM4.Constraints.ConstraintChecker),
                 })
        {
            Assert.That(type.Assembly.GetName().Name, Is.EqualTo("MiniCPM4.Tools"), type.Name);
            Assert.That(type.IsPublic, type.Name);
        }
    }
}
