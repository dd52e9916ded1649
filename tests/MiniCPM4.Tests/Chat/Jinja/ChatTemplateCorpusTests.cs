using MiniCPM4.Chat.Jinja;
using NUnit.Framework;

namespace MiniCPM4.Tests.Chat.Jinja;

/// <summary>Every corpus template over every conversation, byte for byte against Python's Jinja2.</summary>
[TestFixture]
public class ChatTemplateCorpusTests
{
    private static IEnumerable<string> Templates() => ChatTemplateCorpus.TemplateNames();

    [Test]
    public void TheCorpusHasAtLeastThirtyTemplatesWithExpectations()
    {
        var names = Templates().ToList();
        Assert.That(names, Has.Count.GreaterThanOrEqualTo(30));
        foreach (var name in names)
            Assert.That(File.Exists(Path.Combine(ChatTemplateCorpus.Root, "expected", name + ".json")), Is.True, name);
        var sources = File.ReadAllText(Path.Combine(ChatTemplateCorpus.Root, "SOURCES.md"));
        foreach (var name in names)
            Assert.That(sources, Does.Contain($"`{name}.jinja`"), $"{name} is not listed in SOURCES.md");
    }

    [TestCaseSource(nameof(Templates))]
    public void RendersLikeJinja2(string name)
    {
        var spec = ChatTemplateCorpus.LoadSpec();
        var expected = ChatTemplateCorpus.LoadExpected(name);
        var template = JinjaTemplate.Parse(ChatTemplateCorpus.TemplateSource(name));
        var options = new JinjaRenderOptions { Now = spec.Now };
        var failures = new List<string>();
        Assert.That(expected.Keys, Is.EquivalentTo(spec.Cases.Select(c => c.Name)),
            "expected/ is stale: rerun render_expected.py");
        foreach (var c in spec.Cases)
        {
            var want = expected[c.Name];
            string? output = null;
            Exception? error = null;
            try
            {
                output = template.Render(ChatTemplateCorpus.Variables(spec, c), options);
            }
            catch (TemplateException e)
            {
                error = e;
            }

            if (want.Output is not null)
            {
                if (error is not null) failures.Add(
                    $"{c.Name}: Jinja2 rendered, we threw {error.GetType().Name}: {error.Message}");
                else if (output != want.Output) failures.Add(
                    $"{c.Name}: {ChatTemplateCorpus.Difference(want.Output, output!)}");
            }
            else if (want.Error == "raise_exception")
            {
                if (error is not TemplateRaisedException raised)
                    failures.Add(
                        $"{c.Name}: Jinja2 raised '{want.Message}', we " +
                        $"{(error is null ? "rendered" : "threw " + error.Message)}");
                else if (raised.Message != want.Message)
                    failures.Add($"{c.Name}: raised '{raised.Message}', Jinja2 raised '{want.Message}'");
            }
            else if (error is not TemplateRenderException)
            {
                failures.Add(
                    $"{c.Name}: Jinja2 failed with {want.Error}: {want.Message}; we " +
                    $"{(error is null ? "rendered" : "threw " + error.GetType().Name)}");
            }
        }
        Assert.That(failures, Is.Empty, string.Join("\n", failures));
    }
}
