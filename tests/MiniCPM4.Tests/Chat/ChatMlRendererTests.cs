using System.Text;
using MiniCPM4.Chat;
using NUnit.Framework;

namespace MiniCPM4.Tests.Chat;

/// <summary>The single ChatML renderer, and the renderers built on it agreeing with it.</summary>
public class ChatMlRendererTests
{
    private static readonly ChatMessage[] Conversation =
    [
        new("system", "You are a helpful assistant."),
        new("user", "Hi!\nTwo lines."),
        new("assistant", "Hello! How can I help?"),
        new("user", "写一首诗。"),
    ];

    [Test]
    public void AppendTurn_And_GenerationPrompt_WriteChatMl()
    {
        var sb = new StringBuilder();
        ChatMlRenderer.AppendTurn(sb, "user", "Hi");
        ChatMlRenderer.AppendGenerationPrompt(sb);
        Assert.That(sb.ToString(), Is.EqualTo("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    }

    [Test]
    public void JinjaTemplate_IsTheMiniCpm4CheckpointTemplate()
    {
        Assert.That(ChatMlRenderer.JinjaTemplate, Is.EqualTo(
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + " +
            "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% " +
                "endif %}"));
    }

    [TestCase(true)]
    [TestCase(false)]
    public void BuiltInJinjaChatMl_RendersWhatChatTemplateFormats(bool addGenerationPrompt)
    {
        string jinja = ModelChatTemplate.ChatMl.Render(
            Conversation, new ChatTemplateOptions { AddGenerationPrompt = addGenerationPrompt });
        Assert.That(jinja, Is.EqualTo(ChatTemplate.Format(Conversation, addGenerationPrompt)));
    }

    [Test]
    public void ChatTemplateConstants_AreTheRenderers()
    {
        Assert.That(ChatTemplate.ImStart, Is.EqualTo(ChatMlRenderer.ImStart));
        Assert.That(ChatTemplate.ImEnd, Is.EqualTo(ChatMlRenderer.ImEnd));
        Assert.That(ChatTemplate.IsCompatible(ChatMlRenderer.JinjaTemplate), Is.True);
    }
}
