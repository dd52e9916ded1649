using Microsoft.Extensions.AI;
using MiniCPM4.Chat;
using NUnit.Framework;
using CoreMessage = MiniCPM4.Chat.ChatMessage;

namespace MiniCPM4.AI.Tests;

/// <summary>The formatter writes its turns through the core's ChatML renderer.</summary>
public class PromptFormatterChatMlTests
{
    [Test]
    public void Format_PlainConversation_IsChatTemplateFormat()
    {
        var messages = new[]
        {
            new Microsoft.Extensions.AI.ChatMessage(ChatRole.System, "Be brief."),
            new Microsoft.Extensions.AI.ChatMessage(ChatRole.User, "Hi\nthere"),
            new Microsoft.Extensions.AI.ChatMessage(ChatRole.Assistant, "Hello."),
            new Microsoft.Extensions.AI.ChatMessage(ChatRole.User, "Bye"),
        };
        string expected = ChatTemplate.Format(
        [
            new CoreMessage("system", "Be brief."), new CoreMessage("user", "Hi\nthere"),
            new CoreMessage("assistant", "Hello."), new CoreMessage("user", "Bye"),
        ]);
        Assert.That(MiniCpmPromptFormatter.Format(messages), Is.EqualTo(expected));
    }
}
