using System.Text.Json;
using MiniCPM4.Chat;
using MiniCPM4.Chat.Jinja;
using MiniCPM4.Tests.Chat.Jinja;
using NUnit.Framework;

namespace MiniCPM4.Tests.Chat;

/// <summary>Where a checkpoint's template comes from, and what its renders tell the output parser.</summary>
[TestFixture]
public class ModelChatTemplateTests
{
    private string _temp = null!;

    [SetUp]
    public void Setup() => _temp = Directory.CreateTempSubdirectory("minicpm4-template-").FullName;

    [TearDown]
    public void Cleanup() => Directory.Delete(_temp, recursive: true);

    private static ModelChatTemplate Corpus(string name) =>
        ModelChatTemplate.Parse(ChatTemplateCorpus.TemplateSource(name), "<s>", "</s>");

    [Test]
    public void ChatTemplateJinjaWinsOverTokenizerConfigWhichWinsOverChatMl()
    {
        var fromConfig = ModelChatTemplate.Load(_temp, "{{ 'config' }}", "<s>", "</s>");
        Assert.That((fromConfig.Origin, fromConfig.IsFallback), Is.EqualTo(("tokenizer_config.json", false)));
        Assert.That(fromConfig.Render([]), Is.EqualTo("config"));

        File.WriteAllText(Path.Combine(_temp, "chat_template.jinja"), "{{ 'file' }}\n");
        var fromFile = ModelChatTemplate.Load(_temp, "{{ 'config' }}", "<s>", "</s>");
        Assert.That(fromFile.Origin, Is.EqualTo("chat_template.jinja"));
        Assert.That(fromFile.Render([]), Is.EqualTo("file"));

        var fallback = ModelChatTemplate.Load(Path.Combine(_temp, "nothing-here"), null, "<s>", "</s>");
        Assert.That((fallback.Origin, fallback.IsFallback), Is.EqualTo(("built-in ChatML", true)));
        Assert.That(fallback.Render([new ChatMessage("user", "hi")]),
            Is.EqualTo(ChatTemplate.Format([new ChatMessage("user", "hi")])));
    }

    [Test]
    public void ABrokenTemplateFileIsASyntaxErrorWithItsPosition()
    {
        File.WriteAllText(Path.Combine(_temp, "chat_template.jinja"), "{% for m in messages %}\n{{ m.content }");
        var e = Assert.Throws<TemplateSyntaxException>(() => ModelChatTemplate.Load(_temp, null, null, null))!;
        Assert.That(e.Line, Is.EqualTo(2));
    }

    [Test]
    public void MiniCpm41StyleThinkingSwitch()
    {
        var t = Corpus("minicpm4.1-style");
        var conversation = new[] { new ChatMessage("user", "2+2?") };
        Assert.That(t.Render(conversation), Is.EqualTo("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"),
            "thinking on by default");
        Assert.That(t.Render(conversation, new ChatTemplateOptions { EnableThinking = false }),
            Is.EqualTo("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"));
        var viaArguments =
            new ChatTemplateOptions { EnableThinking = true, Arguments = new Dictionary<string,
            object?> { ["enable_thinking"] = false } };
        Assert.That(t.Render(conversation, viaArguments), Does.EndWith("<think>\n\n</think>\n\n"),
            "Arguments win over EnableThinking");
        Assert.That(t.OutputFormat,
            Is.EqualTo(new ChatOutputFormat { ToolCalls = ToolCallSyntax.McpBlock, ThinkTags = true }));
        Assert.That(t.RendersTools, Is.True);
        Assert.That(t.EndOfTurn, Is.EqualTo("<|im_end|>"));
    }

    [TestCase("minicpm4", ToolCallSyntax.McpBlock, false, false, "<|im_end|>")]
    [TestCase("minicpm4.1-style", ToolCallSyntax.McpBlock, true, true, "<|im_end|>")]
    [TestCase("vllm-tool_chat_template_minicpm3", ToolCallSyntax.McpBlock, false, true, "<|im_end|>")]
    [TestCase("chujiezheng-qwen2.5-instruct", ToolCallSyntax.HermesJson, false, true, "<|im_end|>")]
    [TestCase("iintothewind-qwen_fixed", ToolCallSyntax.HermesJson, true, true, "<|im_end|>")]
    [TestCase("llamacpp-phi-4-mini-instruct", ToolCallSyntax.ToolCallToken, false, true, "<|end|>")]
    [TestCase("llamacpp-deepseek-r1-distill-qwen-32b", ToolCallSyntax.McpBlock, true, false, "<｜end▁of▁sentence｜>")]
    [TestCase("chujiezheng-llama-3-instruct", ToolCallSyntax.McpBlock, false, false, "<|eot_id|>")]
    [TestCase("chujiezheng-gemma-it", ToolCallSyntax.McpBlock, false, false, "<end_of_turn>")]
    public void TheOutputFormatIsWhatTheTemplateRenders(string name, ToolCallSyntax syntax, bool think,
        bool rendersTools, string endOfTurn)
    {
        var t = Corpus(name);
        Assert.That(t.OutputFormat.ToolCalls, Is.EqualTo(syntax));
        Assert.That(t.OutputFormat.ThinkTags, Is.EqualTo(think));
        Assert.That(t.RendersTools, Is.EqualTo(rendersTools));
        Assert.That(t.EndOfTurn, Is.EqualTo(endOfTurn));
    }

    [Test]
    public void APromptThatOpensThinkStartsTheOutputInReasoning()
    {
        var r1 = Corpus("llamacpp-deepseek-r1-distill-qwen-32b");
        var prompt = r1.Render([new ChatMessage("user", "hi")]);
        Assert.That(prompt, Does.EndWith("<｜Assistant｜><think>\n"));
        Assert.That(r1.EndsInsideReasoning(prompt), Is.True);
        var m41 = Corpus("minicpm4.1-style");
        Assert.That(
            m41.EndsInsideReasoning(
            m41.Render([new ChatMessage("user", "hi")], new ChatTemplateOptions { EnableThinking = false })), Is.False);
    }

    [Test]
    public void ToolCallsAndResultsReachTheTemplateAsTransformersPassesThem()
    {
        var t = Corpus("minicpm4.1-style");
        using var tool = JsonDocument.Parse("""{"type": "function", "function": {"name": "add", "description": "Adds.", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}""");
        var prompt = t.Render(
        [
            new ChatMessage("user", "2+3?"),
            new ChatMessage("assistant",
                "") { ToolCalls =
                [new ChatToolCall("add", new Dictionary<string, object?> { ["a"] = 2, ["b"] = "x" }, "c1")] },
            new ChatMessage("tool", "5") { ToolCallId = "c1", Name = "add" },
        ], new ChatTemplateOptions { Tools = [tool.RootElement] });
        Assert.That(prompt,
            Does.Contain(
            "<tools>\n{\"name\": \"add\", \"description\": \"Adds.\", \"parameters\": {\"type\": \"object\", " +
            "\"properties\": {\"a\": {\"type\": \"integer\"}}}}\n</tools>"));
        Assert.That(prompt,
            Does.Contain(
            "<|im_start|>assistant\n<|tool_call_start|>\n```python\nadd(a=2, " +
            "b=\"x\")\n```\n<|tool_call_end|><|im_end|>\n"));
        Assert.That(prompt, Does.Contain("<|im_start|>tool\n5<|im_end|>\n"));
    }

    [Test]
    public void RaiseExceptionReachesTheCaller()
    {
        var t = Corpus("chujiezheng-llama-2-chat");
        var e = Assert.Throws<TemplateRaisedException>(() =>
            t.Render([new ChatMessage("user", "a"), new ChatMessage("user", "b")]))!;
        Assert.That(e.Message, Is.EqualTo("Conversation roles must alternate user/assistant/user/assistant/..."));
    }
}
