using System.Text.Json;
using MiniCPM4.Tests.Chat.Jinja;
using NUnit.Framework;

namespace MiniCPM4.Tests.Cli;

/// <summary>`minicpm4 template render` against the corpus' Jinja2 outputs, and its arguments and errors.</summary>
[TestFixture]
public class TemplateRenderCliTests
{
    private string _temp = null!;

    [OneTimeSetUp]
    public void Setup() => _temp = Directory.CreateTempSubdirectory("minicpm4-template-cli-").FullName;

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_temp, recursive: true);

    private string Write(string name, string text)
    {
        var path = Path.Combine(_temp, name);
        File.WriteAllText(path, text);
        return path;
    }

    private string[] CaseArgs(string template, ChatTemplateCorpus.Spec spec, ChatTemplateCorpus.Case c)
    {
        var args = new List<string>
        {
            "template", "render", "--template", ChatTemplateCorpus.TemplatePath(template),
            "--messages", Write($"{c.Name}-messages.json", c.Messages.GetRawText()),
            "--arg", $"bos_token={spec.BosToken}", "--arg", $"eos_token={spec.EosToken}",
            "--now", spec.Now.ToString("s", System.Globalization.CultureInfo.InvariantCulture),
        };
        if (c.Tools is { } tools) args.AddRange(["--tools", Write($"{c.Name}-tools.json", tools.GetRawText())]);
        if (c.AddGenerationPrompt) args.Add("--add-generation-prompt");
        if (c.Kwargs is { } kwargs)
            foreach (var p in kwargs.EnumerateObject()) args.AddRange(["--arg", $"{p.Name}={p.Value.GetRawText()}"]);
        return [.. args];
    }

    /// <summary>A sample of the corpus through the command (each case is a process; the whole corpus runs in-process in
    /// ChatTemplateCorpusTests): the output is Jinja2's, byte for byte, and raise_exception is exit code 1 with the
    /// message.</summary>
    [TestCase("minicpm4.1-style", "thinking_off")]
    [TestCase("minicpm4.1-style", "tool_call_and_result")]
    [TestCase("iintothewind-qwen_fixed", "tool_calls_string_arguments")]
    [TestCase("butanium-llama3.1_chat_template", "tools")]
    [TestCase("vllm-tool_chat_template_minicpm3", "unicode_and_escapes")]
    [TestCase("chujiezheng-mistral-instruct", "multi_turn_no_generation_prompt")]
    [TestCase("chujiezheng-gemma-it", "system_user")]
    public void RendersLikeJinja2(string template, string caseName)
    {
        var spec = ChatTemplateCorpus.LoadSpec();
        var c = spec.Cases.Single(x => x.Name == caseName);
        var expected = ChatTemplateCorpus.LoadExpected(template)[caseName];
        var (code, output, err) = CliTests.Run(CaseArgs(template, spec, c));
        if (expected.Output is not null)
        {
            Assert.That(code, Is.EqualTo(0), err);
            Assert.That(output, Is.EqualTo(expected.Output), ChatTemplateCorpus.Difference(expected.Output, output));
        }
        else
        {
            Assert.That(expected.Error, Is.EqualTo("raise_exception"));
            Assert.That(code, Is.EqualTo(1));
            Assert.That(err, Does.Contain(expected.Message!));
        }
    }

    [Test]
    public void ACheckpointDirectoryGivesTheTemplateAndItsSpecialTokens()
    {
        var dir = Path.Combine(_temp, "ckpt");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
            """{"bos_token": "<s>", "eos_token": "<|im_end|>", "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}{{ extra }}"}""");
        var messages = Write("dir-messages.json", """[{"role": "user", "content": "hi"}]""");
        var (code, output, err) = CliTests.Run("template", "render", "--template", dir, "--messages", messages);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Is.EqualTo("<s>hi<|im_end|>"));
        (code, output, err) = CliTests.Run("template", "render", "--template", dir, "--messages", messages,
            "--arg", "eos_token=</s>", "--arg", "extra=[1, \"a\"]");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Is.EqualTo("<s>hi</s>[1, 'a']"), "--arg overrides eos_token; JSON values stay JSON");
        (code, output, _) =
            CliTests.Run("template", "render", "--template", dir, "--messages", messages, "--arg", "extra=not json");
        Assert.That(output, Is.EqualTo("<s>hi<|im_end|>not json"), "a value that is not JSON is a string");
    }

    [Test]
    public void ErrorsAreOneLineWithExitCodes()
    {
        var messages = Write("e-messages.json", """[{"role": "user", "content": "hi"}]""");
        var bad = Write("bad.jinja", "{% for m in messages %}\n{{ m.content }");
        var (code, _, err) = CliTests.Run("template", "render", "--template", bad, "--messages", messages);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("template error").And.Contain("line 2"));

        (code, _, err) =
            CliTests.Run("template", "render", "--template", bad, "--messages", messages, "--arg", "novalue");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("expected key=value"));

        var notArray = Write("obj.json", """{"role": "user"}""");
        (code, _, err) =
            CliTests.Run("template", "render", "--template", ChatTemplateCorpus.TemplatePath("minicpm4"), "--messages",
            notArray);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--messages"));
    }
}
