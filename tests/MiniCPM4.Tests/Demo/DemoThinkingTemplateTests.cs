using System.Text.Json;
using MiniCPM4.Chat;
using MiniCPM4.Tests.Chat.Jinja;
using MiniCPM4.Tests.Cli;
using NUnit.Framework;

namespace MiniCPM4.Tests.Demo;

/// <summary>
/// MiniCPM4.1-style thinking on and off end to end: the demo model with the corpus' 4.1-style template as its
/// chat_template.jinja (the weights are the demo's; only the template differs).
/// </summary>
[TestFixture]
public class DemoThinkingTemplateTests
{
    private const string ThinkOff = "<think>\n\n</think>\n\n";
    private string _dir = null!;
    private MiniCpmModel _model = null!;

    [OneTimeSetUp]
    public void Setup()
    {
        var demo = DemoModelDirectory.Find();
        _dir = Directory.CreateTempSubdirectory("minicpm4-demo41-").FullName;
        foreach (var file in Directory.GetFiles(demo)) File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)));
        File.Copy(ChatTemplateCorpus.TemplatePath("minicpm4.1-style"),
            Path.Combine(_dir, ModelChatTemplate.TemplateFileName));
        _model = MiniCpmModel.Load(_dir, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2 });
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        _model.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Test]
    public void TheCheckpointsTemplateIsUsed()
    {
        Assert.That(_model.ChatTemplate.Origin, Is.EqualTo(ModelChatTemplate.TemplateFileName));
        Assert.That(_model.ChatTemplate.OutputFormat.ThinkTags, Is.True);
    }

    [Test]
    public void ThinkingOffAppendsAnEmptyThinkBlockToThePrompt()
    {
        var conversation = new[] { new ChatMessage("user", "Tell me a story.") };
        var on = _model.EncodeChat(conversation);
        var off = _model.EncodeChat(conversation, new ChatTemplateOptions { EnableThinking = false });
        Assert.That(_model.Tokenizer.Decode(on), Does.EndWith("<|im_start|>assistant\n"));
        Assert.That(_model.Tokenizer.Decode(off), Does.EndWith("<|im_start|>assistant\n" + ThinkOff));
        Assert.That(off.Take(on.Length), Is.EqualTo(on), "the think block only extends the prompt");
        Assert.That(off.Length, Is.GreaterThan(on.Length));
        Assert.That(on[0], Is.EqualTo(_model.Tokenizer.BosId), "BOS as the tokenizer asks (the template writes none)");
    }

    [Test]
    public async Task ChatGeneratesWithThinkingOffAndOn()
    {
        var greedy = new GenerationOptions { MaxTokens = 12, Temperature = 0 };
        using var session = _model.CreateSession(new SessionOptions { ContextLength = 512 });
        var off = new MiniCpmChat(session, templateOptions: new ChatTemplateOptions { EnableThinking = false });
        var offTokens = new List<int>();
        await foreach (var t in off.SendAsync("Once upon a time", greedy)) offTokens.Add(t.Id);
        Assert.That(_model.Tokenizer.Decode(session.Tokens), Does.Contain("<|im_start|>assistant\n" + ThinkOff));
        Assert.That(offTokens, Is.Not.Empty);

        using var session2 = _model.CreateSession(new SessionOptions { ContextLength = 512 });
        var on = new MiniCpmChat(session2);
        var onTokens = new List<int>();
        await foreach (var t in on.SendAsync("Once upon a time", greedy)) onTokens.Add(t.Id);
        Assert.That(_model.Tokenizer.Decode(session2.Tokens), Does.Not.Contain("<think>"));
        Assert.That(onTokens, Is.Not.Empty);

        // A second turn: this template drops the empty think block of earlier assistant turns (as Qwen3-style templates
        // do), so the cached tokens diverge at the first reply; the session keeps the common prefix and prefills the
        // rest.
        var firstTurnTokens = session.Tokens;
        long before = session.Statistics.PrefillTokens;
        await foreach (var _ in off.SendAsync("And then?", greedy)) { }
        long prefilled = session.Statistics.PrefillTokens - before;
        var secondPrompt = _model.EncodeChat(off.History.Take(3), new ChatTemplateOptions { EnableThinking = false });
        int common = 0;
        while (common < firstTurnTokens.Length && firstTurnTokens[common] == secondPrompt[common]) common++;
        Assert.That(common, Is.GreaterThan(0));
        Assert.That(prefilled, Is.EqualTo(secondPrompt.Length - common),
            "only the tokens after the common prefix are prefilled");
    }

    [Test]
    public void GenerateChatArgSwitchesThinkingOff()
    {
        string[] common =
            ["generate", "-m", _dir, "-p", "Hello", "--chat", "--max-tokens", "4", "--temperature", "0", "--json",
            "--device", "cpu"];
        var (code, on, err) = CliTests.Run(common);
        Assert.That(code, Is.EqualTo(0), err);
        var (code2, off, err2) = CliTests.Run([.. common, "--chat-arg", "enable_thinking=false"]);
        Assert.That(code2, Is.EqualTo(0), err2);
        int onTokens = JsonDocument.Parse(on).RootElement.GetProperty("prompt_tokens").GetInt32();
        int offTokens = JsonDocument.Parse(off).RootElement.GetProperty("prompt_tokens").GetInt32();
        var conversation = new[] { new ChatMessage("user", "Hello") };
        Assert.That(onTokens, Is.EqualTo(_model.EncodeChat(conversation).Length));
        Assert.That(offTokens,
            Is.EqualTo(_model.EncodeChat(conversation, new ChatTemplateOptions { EnableThinking = false }).Length));
        Assert.That(offTokens, Is.GreaterThan(onTokens));
        var (code3, _, err3) =
            CliTests.Run(["generate", "-m", _dir, "-p", "Hello", "--chat-arg", "enable_thinking=false"]);
        Assert.That(code3, Is.EqualTo(2), "--chat-arg without --chat is a usage error");
        Assert.That(err3, Does.Contain("--chat-arg needs --chat"));
    }
}
