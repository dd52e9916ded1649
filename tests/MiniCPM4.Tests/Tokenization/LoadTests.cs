using MiniCPM4.Chat;
using MiniCPM4.Tokenization;
using NUnit.Framework;

namespace MiniCPM4.Tests.Tokenization;

public class LoadTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "minicpm4-tokenizer-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private void WriteModel() => File.Copy(TestModel.ModelPath, Path.Combine(_dir, "tokenizer.model"));

    private void Write(string name, string content) => File.WriteAllText(Path.Combine(_dir, name), content);

    // A tokenizer_config.json in the shape MiniCPM4 checkpoints ship (ids moved into the 32k test model's range).
    private const string MiniCpmStyleConfig = """
        {
          "add_bos_token": true,
          "add_eos_token": false,
          "added_tokens_decoder": {
            "0": { "content": "<unk>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true },
            "1": { "content": "<s>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true },
            "2": { "content": "</s>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true },
            "32000": { "content": "<|im_end|>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true },
            "32001": { "content": "<|im_start|>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true },
            "32002": { "content": "<think>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": false }
          },
          "bos_token": "<s>",
          "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
          "clean_up_tokenization_spaces": false,
          "eos_token": { "__type": "AddedToken", "content": "<|im_end|>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false },
          "legacy": true,
          "model_max_length": 1000000000000000019884624838656,
          "pad_token": null,
          "sp_model_kwargs": {},
          "tokenizer_class": "LlamaTokenizer",
          "unk_token": "<unk>",
          "use_default_system_prompt": false
        }
        """;

    [Test]
    public void Load_ReadsTokenizerConfig()
    {
        WriteModel();
        Write("tokenizer_config.json", MiniCpmStyleConfig);
        var t = MiniCpmTokenizer.Load(_dir);
        Assert.Multiple(() =>
        {
            Assert.That(t.VocabSize, Is.EqualTo(32003));
            Assert.That(t.BosId, Is.EqualTo(1));
            Assert.That(t.EosId, Is.EqualTo(32000), "eos_token names <|im_end|>");
            Assert.That(t.UnkId, Is.EqualTo(0));
            Assert.That(t.AddBosByDefault, Is.True);
            Assert.That(t.TokenToId("<|im_start|>"), Is.EqualTo(32001));
            Assert.That(t.AddedTokens, Has.Count.EqualTo(6));
            Assert.That(t.ChatTemplate, Does.StartWith("{% for message in messages %}"));
            Assert.That(ChatTemplate.IsCompatible(t.ChatTemplate), Is.True);
            Assert.That(t.Encode("<|im_start|>user\nHi<|im_end|>", addBos: true), Is.EqualTo(new[]
            {
                1, 32001, t.TokenToId("▁user")!.Value, 13, t.TokenToId("Hi")!.Value, 32000,
            }));
            // <think> is not special: kept when special tokens are skipped.
            int[] ids = t.Encode("<think>ok<|im_end|>");
            Assert.That(t.Decode(ids, skipSpecialTokens: true), Is.EqualTo("<think>ok"));
        });
    }

    [Test]
    public void Load_ReadsAddedTokensJson_AndAddBosFalse()
    {
        WriteModel();
        Write("tokenizer_config.json", """{ "add_bos_token": false, "eos_token": "<|im_end|>" }""");
        Write("added_tokens.json", """{ "<|im_start|>": 32001, "<|im_end|>": 32000 }""");
        var t = MiniCpmTokenizer.Load(_dir);
        Assert.Multiple(() =>
        {
            Assert.That(t.AddBosByDefault, Is.False);
            Assert.That(t.AddedTokens,
                Is.EquivalentTo(new Dictionary<string, int> { ["<|im_start|>"] = 32001, ["<|im_end|>"] = 32000 }));
            Assert.That(t.EosId, Is.EqualTo(32000));
            Assert.That(t.BosId, Is.EqualTo(1));
            Assert.That(t.ChatTemplate, Is.Null);
        });
    }

    [Test]
    public void Load_ReadsTokenizerJsonAddedTokens_AsAUnion()
    {
        WriteModel();
        Write("tokenizer_config.json", MiniCpmStyleConfig);
        Write("added_tokens.json", """{ "<|im_start|>": 32001, "<|tool_call|>": 32003 }""");
        Write("tokenizer.json", """
            { "version": "1.0", "added_tokens": [
                { "id": 32000, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true },
                { "id": 32004, "content": "<|fim_prefix|>", "special": true } ],
              "normalizer": null, "model": { "type": "BPE", "vocab": { "a": 0 }, "merges": [] } }
            """);
        var t = MiniCpmTokenizer.Load(_dir);
        Assert.Multiple(() =>
        {
            Assert.That(t.VocabSize, Is.EqualTo(32005));
            Assert.That(t.TokenToId("<|tool_call|>"), Is.EqualTo(32003));
            Assert.That(t.TokenToId("<|fim_prefix|>"), Is.EqualTo(32004));
            Assert.That(t.AddedTokens, Has.Count.EqualTo(8));
        });
    }

    [Test]
    public void Load_OnlyTheModel()
    {
        WriteModel();
        var t = MiniCpmTokenizer.Load(_dir);
        Assert.That(t.VocabSize, Is.EqualTo(32000));
        Assert.That(t.Encode("Hello world!"), Is.EqualTo(new[] { 15043, 3186, 29991 }));
    }

    [Test]
    public void Load_ChatTemplateList_UsesDefault()
    {
        WriteModel();
        Write("tokenizer_config.json", """{ "chat_template": [ { "name": "tool_use", "template": "T" }, { "name": "default", "template": "D" } ] }""");
        Assert.That(MiniCpmTokenizer.Load(_dir).ChatTemplate, Is.EqualTo("D"));
    }

    [Test]
    public void Load_MissingModel_ThrowsFileNotFound()
    {
        Write("tokenizer_config.json", MiniCpmStyleConfig);
        var ex = Assert.Throws<FileNotFoundException>(() => MiniCpmTokenizer.Load(_dir));
        Assert.That(ex!.FileName, Is.EqualTo(Path.Combine(_dir, "tokenizer.model")));
        Assert.That(ex.Message, Does.Contain(Path.Combine(_dir, "tokenizer.model")));
    }

    [Test]
    public void Load_MissingDirectory_Throws()
    {
        Assert.Throws<DirectoryNotFoundException>(() => MiniCpmTokenizer.Load(Path.Combine(_dir, "nope")));
    }

    [TestCase("tokenizer_config.json", """{ "add_bos_token": true, """)]
    [TestCase("tokenizer_config.json", """{ "added_tokens_decoder": { "x": { "content": "<a>" } } }""")]
    [TestCase("tokenizer_config.json", """{ "added_tokens_decoder": { "32000": { "special": true } } }""")]
    [TestCase("tokenizer_config.json", """{ "added_tokens_decoder": [] }""")]
    [TestCase("tokenizer_config.json", """{ "add_bos_token": "yes" }""")]
    [TestCase("tokenizer_config.json", """[1, 2]""")]
    [TestCase("added_tokens.json", """{ "<|im_start|>": "32001" }""")]
    [TestCase("added_tokens.json", """{ "<|im_start|>": -1 }""")]
    [TestCase("added_tokens.json", """{ "<|im_start|>": 2000000000 }""")]
    [TestCase("added_tokens.json", """{ "<|im_start|>": 32001 """)]
    [TestCase("tokenizer.json", """{ "added_tokens": [ { "content": "<a>" } ] }""")]
    [TestCase("tokenizer.json", """{ "added_tokens": { } }""")]
    [TestCase("tokenizer.json", """not json""")]
    public void Load_MalformedJson_ThrowsInvalidDataNamingTheFile(string file, string content)
    {
        WriteModel();
        Write(file, content);
        var ex = Assert.Throws<InvalidDataException>(() => MiniCpmTokenizer.Load(_dir));
        Assert.That(ex!.Message, Does.Contain(Path.Combine(_dir, file)));
        TestContext.Out.WriteLine(ex.Message);
    }

    [Test]
    public void Load_ConflictingIds_Throw()
    {
        WriteModel();
        Write("tokenizer_config.json", MiniCpmStyleConfig);
        Write("added_tokens.json", """{ "<|im_start|>": 32005 }""");
        var ex = Assert.Throws<InvalidDataException>(() => MiniCpmTokenizer.Load(_dir));
        Assert.That(ex!.Message, Does.Contain("<|im_start|>").And.Contain("32005").And.Contain("32001"));
    }

    [Test]
    public void Load_OneIdForTwoTokens_Throws()
    {
        WriteModel();
        Write("added_tokens.json", """{ "<a>": 32000, "<b>": 32000 }""");
        Assert.Throws<InvalidDataException>(() => MiniCpmTokenizer.Load(_dir));
    }

    [Test]
    public void Load_CorruptModel_ThrowsInvalidData()
    {
        File.WriteAllBytes(Path.Combine(_dir, "tokenizer.model"), TestModel.ModelBytes.AsSpan(0, 1000).ToArray());
        var ex = Assert.Throws<InvalidDataException>(() => MiniCpmTokenizer.Load(_dir));
        Assert.That(ex!.Message, Does.Contain("tokenizer.model"));
    }

    [Test]
    public void FromSentencePiece_GarbageStream_ThrowsInvalidData()
    {
        Assert.Throws<InvalidDataException>(() =>
            MiniCpmTokenizer.FromSentencePiece(new MemoryStream([0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])));
        Assert.Throws<InvalidDataException>(() => MiniCpmTokenizer.FromSentencePiece(new MemoryStream([])));
    }
}
