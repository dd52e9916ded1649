using MiniCPM4.Chat;
using NUnit.Framework;

namespace MiniCPM4.Tests.Chat;

public class ChatTemplateTests
{
    [Test]
    public void Format_SystemUserAssistant_WithGenerationPrompt()
    {
        var messages = new[]
        {
            new ChatMessage("system", "You are a helpful assistant."),
            new ChatMessage("user", "Hi!"),
            new ChatMessage("assistant", "Hello! How can I help?"),
            new ChatMessage("user", "写一首诗。"),
        };
        Assert.That(ChatTemplate.Format(messages), Is.EqualTo(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
            "<|im_start|>user\nHi!<|im_end|>\n" +
            "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n" +
            "<|im_start|>user\n写一首诗。<|im_end|>\n" +
            "<|im_start|>assistant\n"));
    }

    [Test]
    public void Format_WithoutGenerationPrompt()
    {
        Assert.That(
            ChatTemplate.Format([new ChatMessage("user", "a\nb")], addGenerationPrompt: false),
            Is.EqualTo("<|im_start|>user\na\nb<|im_end|>\n"));
    }

    [Test]
    public void Format_NoMessages()
    {
        Assert.That(ChatTemplate.Format([]), Is.EqualTo("<|im_start|>assistant\n"));
        Assert.That(ChatTemplate.Format([], addGenerationPrompt: false), Is.EqualTo(""));
    }

    [Test]
    public void Format_RejectsInvalidMessages()
    {
        Assert.Throws<ArgumentNullException>(() => ChatTemplate.Format(null!));
        Assert.Throws<ArgumentException>(() => ChatTemplate.Format([new ChatMessage("", "x")]));
        Assert.Throws<ArgumentNullException>(() => ChatTemplate.Format([new ChatMessage("user", null!)]));
    }

    [Test]
    public void StopStrings_IsImEnd()
    {
        Assert.That(ChatTemplate.StopStrings, Is.EqualTo(new[] { "<|im_end|>" }));
    }

    // As in MiniCPM4's tokenizer_config.json (after JSON decoding: '\n' is a backslash and an n).
    private const string MiniCpm4 =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' " +
            "+ '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    private const string Llama3 =
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' " +
            "+ message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if " +
                "loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if " +
                    "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

    [Test]
    public void IsCompatible_MiniCpm4Template()
    {
        Assert.That(ChatTemplate.IsCompatible(MiniCpm4), Is.True);
    }

    [TestCase("{%- for message in messages -%}\n" +
              "  {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}\n" +
              "{%- endfor -%}\n{%- if add_generation_prompt -%}\n  {{- '<|im_start|>assistant\\n' -}}\n" +
              "{%- endif -%}")]
    [TestCase(
        "{% for message in messages %}{{ \"<|im_start|>\" + message.role + \"\\n\" + message.content + " +
        "\"<|im_end|>\\n\" }}{% endfor %}{% if add_generation_prompt %}{{ \"<|im_start|>assistant\\n\" }}{% endif %}")]
    [TestCase(
        "{% for m in messages %}{{'<|im_start|>' ~ m['role'] ~ '\n' ~ m['content'] ~ '<|im_end|>' ~ '\n'}}{% endfor " +
        "%}{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}")]
    // Extra logic around the same ChatML structure (a default system prompt, a computed content variable).
    [TestCase("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" +
              "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}" +
              "{% set content = message['content'] %}" +
              "{{'<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>' + '\\n'}}{% endfor %}" +
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")]
    public void IsCompatible_EquivalentChatMLTemplates(string template)
    {
        Assert.That(ChatTemplate.IsCompatible(template), Is.True);
    }

    [TestCase(null)]
    [TestCase("")]
    [TestCase("   ")]
    [TestCase(Llama3)]
    // ChatML without a generation prompt.
    [TestCase(
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' " +
        "+ '\\n'}}{% endfor %}")]
    // Different separators (no newline after the role).
    [TestCase(
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + ': ' + message['content'] + '<|im_end|>' " +
        "+ '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")]
    // Mistral style.
    [TestCase(
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + " +
        "message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}")]
    public void IsCompatible_OtherTemplates_False(string? template)
    {
        Assert.That(ChatTemplate.IsCompatible(template), Is.False);
    }

    [Test]
    public void Canonicalize_IgnoresWhitespaceQuotesAndTrimMarkers()
    {
        string a = ChatTemplate.Canonicalize(MiniCpm4);
        string b = ChatTemplate.Canonicalize(
            "{%- for message in messages %}\n{{ \"<|im_start|>\" + message.role + \"\\n\" + message[\"content\"] + " +
                "\"<|im_end|>\\n\" }}\n{%- endfor %}\n{%- if add_generation_prompt %}{{- '<|im_start|>' + " +
                    "'assistant\\n' }}{% endif %}");
        Assert.That(b, Is.EqualTo(a));
    }
}
