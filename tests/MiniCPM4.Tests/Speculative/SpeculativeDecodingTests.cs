using System.Text.Json;
using MiniCPM4.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Speculative;

/// <summary>
/// Speculative decoding through the managed API and the loader: a random EAGLE draft for the tiny checkpoint
/// changes nothing in the output (greedy and seeded sampling), reports its rounds in the statistics, and bad
/// drafts are rejected with a message naming the problem.
/// </summary>
[TestFixture]
public class SpeculativeDecodingTests
{
    private string _draft = null!;
    private MiniCpmModel _plain = null!;
    private MiniCpmModel _spec = null!;

    [OneTimeSetUp]
    public void CreateDraft()
    {
        _draft = Path.Combine(Path.GetTempPath(), $"minicpm4-tests-{Environment.ProcessId}", "tiny-draft");
        var target = MiniCpmConfig.Load(Path.Combine(TinyModelFixture.Directory, "config.json"));
        CheckpointWriter.CreateRandomDraft(_draft, target, seed: 9, TensorDType.BF16);
        _plain = TinyModelFixture.Load();
        _spec = MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, DraftDirectory = _draft });
    }

    [OneTimeTearDown]
    public void Dispose()
    {
        _plain.Dispose();
        _spec.Dispose();
    }

    private static async Task<(List<int> Ids, string Text, SessionStatistics Stats)> Generate(MiniCpmModel model,
        GenerationOptions options)
    {
        using var s = model.CreateSession(new SessionOptions { ContextLength = 256 });
        var ids = new List<int>();
        var text = new System.Text.StringBuilder();
        await foreach (var t in s.GenerateAsync("Once upon a time", options))
        {
            if (t.Id >= 0) ids.Add(t.Id);
            text.Append(t.Text);
        }
        return (ids, text.ToString(), s.Statistics);
    }

    [Test]
    public void DraftIsDescribed()
    {
        Assert.That(_plain.Draft, Is.Null);
        Assert.That(_spec.Draft, Is.Not.Null);
        Assert.That(_spec.Draft!.Layers, Is.EqualTo(1));
        Assert.That(_spec.Draft.VocabularySize, Is.EqualTo(_spec.Config.VocabSize));
        Assert.That(_spec.Draft.WeightBytes, Is.GreaterThan(0));
    }

    [Test]
    public async Task GreedyOutputIsTheSameWithAndWithoutTheDraft()
    {
        var options = new GenerationOptions { MaxTokens = 40, StopTokenIds = [], RepetitionPenalty = 1.3f };
        var plain = await Generate(_plain, options);
        var spec = await Generate(_spec, options);
        Assert.That(spec.Ids, Is.EqualTo(plain.Ids));
        Assert.That(spec.Text, Is.EqualTo(plain.Text));
        Assert.That(spec.Ids, Has.Count.EqualTo(40));
        Assert.That(spec.Stats.SpeculativeSteps, Is.GreaterThan(0));
        Assert.That(spec.Stats.MeanAcceptedTokens, Is.GreaterThanOrEqualTo(1.0));
        Assert.That(plain.Stats.SpeculativeSteps, Is.Zero);

        // The default is adaptive: it measured plain steps and tried at least one round.
        Assert.That(spec.Stats.AdaptivePlainTokens, Is.GreaterThan(0));
        Assert.That(spec.Stats.TreeSize, Is.AnyOf(0, 4, 8, 16, 32));

        // Turning speculation off per generation gives plain decoding on the same model.
        var off = await Generate(_spec, options with { Speculative = SpeculativeOptions.Off });
        Assert.That(off.Ids, Is.EqualTo(plain.Ids));
        Assert.That(off.Stats.SpeculativeSteps, Is.Zero);
    }

    [Test]
    public async Task ADraftAttentionWindowKeepsTheOutput()
    {
        using var windowed = MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2, DraftDirectory = _draft,
                DraftAttentionWindow = 3 });
        Assert.That(windowed.Draft!.AttentionWindow, Is.EqualTo(3));
        var options = new GenerationOptions { MaxTokens = 40, StopTokenIds = [], RepetitionPenalty = 1.3f };
        var plain = await Generate(_plain, options);
        var spec = await Generate(windowed, options);
        Assert.That(spec.Ids, Is.EqualTo(plain.Ids));
        Assert.That(spec.Stats.SpeculativeSteps, Is.GreaterThan(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, DraftDirectory = _draft, DraftAttentionWindow = -1 })
                .Dispose());
    }

    [Test]
    public async Task SeededSamplingGivesTheSameTokensWithAndWithoutTheDraft()
    {
        var options =
            new GenerationOptions { MaxTokens = 30, Temperature = 0.9f, TopP = 0.95f, Seed = 17, StopTokenIds = [] };
        var plain = await Generate(_plain, options);
        var spec =
            await Generate(_spec,
            options with { Speculative = new SpeculativeOptions(NumIterations: 3, TopKPerIteration: 4, TreeSize: 16) });
        Assert.That(spec.Ids, Is.EqualTo(plain.Ids));
    }

    [Test]
    public async Task FrSpecListRestrictsTheDraftHeadWithoutChangingTheOutput()
    {
        // A list ranked from the plain model's own output, saved in the torch.save format and loaded back.
        var options = new GenerationOptions { MaxTokens = 40, StopTokenIds = [], RepetitionPenalty = 1.3f };
        var plain = await Generate(_plain, options);
        var corpus = new[] { plain.Ids.ToArray(), _plain.EncodePrompt("Once upon a time") };
        var list =
            MiniCPM4.Speculative.FrSpecVocabularyBuilder.Build(corpus, 64, _plain.Config.VocabSize,
            _plain.StopTokenIds.ToArray());
        string path = Path.Combine(Path.GetDirectoryName(_draft)!, $"freq_{list.Count}.pt");
        list.Save(path);
        using var model = MiniCpmModel.Load(TinyModelFixture.Directory, new MiniCpmLoadOptions
        {
            Device = ComputeDevice.Cpu, Threads = 2, DraftDirectory = _draft, FrSpecPath = path,
                FrSpecSize = list.Count,
        });
        Assert.That(model.Draft!.VocabularySize, Is.EqualTo(list.Count));
        Assert.That(model.Draft.FrSpecPath, Is.EqualTo(Path.GetFullPath(path)));
        var spec =
            await Generate(model,
            options with { Speculative = new SpeculativeOptions(NumIterations: 3, TopKPerIteration: 4, TreeSize: 16) });
        Assert.That(spec.Ids, Is.EqualTo(plain.Ids));
        Assert.That(spec.Stats.SpeculativeSteps, Is.GreaterThan(0));

        // A list of the wrong length is named in the error.
        var ex =
            Assert.Throws<MiniCPM4.Speculative.FrSpecFormatException>(() =>
            MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 1, DraftDirectory = _draft,
                FrSpecPath = path, FrSpecSize = 32768 }));
        Assert.That(ex!.Message, Does.Contain(path));
    }

    [Test]
    public async Task InvalidTreeIsRejectedByTheEngine()
    {
        using var s = _spec.CreateSession(new SessionOptions { ContextLength = 64 });
        var options = new GenerationOptions { MaxTokens = 4, Speculative = new SpeculativeOptions(TreeSize: 65) };
        var ex = await Assert.ThrowsAsync<MiniCpmInvalidArgumentException>(async () =>
        {
            await foreach (var _ in s.GenerateAsync("hello", options)) { }
        });
        Assert.That(ex!.Message, Does.Contain("SpeculativeOptions.TreeSize").And.Not.Contain("spec_tree_size"));
        Assert.That(ex.ParamName, Is.EqualTo("SpeculativeOptions.TreeSize"));
    }

    [Test]
    public void DraftOfAnotherModelIsRejected()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"minicpm4-tests-{Environment.ProcessId}", "tiny-draft-wrong");
        var target = MiniCpmConfig.Load(Path.Combine(TinyModelFixture.Directory, "config.json"));
        CheckpointWriter.CreateRandomDraft(dir, target with { HiddenSize = target.HiddenSize * 2 }, seed: 1,
            TensorDType.BF16);
        var ex = Assert.Throws<CheckpointException>(() => MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 1, DraftDirectory = dir }));
        Assert.That(ex!.Message, Does.Contain("hidden_size"));

        var scales = Path.Combine(Path.GetTempPath(), $"minicpm4-tests-{Environment.ProcessId}", "tiny-draft-scales");
        CheckpointWriter.CreateRandomDraft(scales, target with { ScaleEmb = target.ScaleEmb + 1 }, seed: 1,
            TensorDType.BF16);
        ex = Assert.Throws<CheckpointException>(() => MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 1, DraftDirectory = scales }));
        Assert.That(ex!.Message, Does.Contain("scale_emb"));
    }

    [Test]
    public void MissingDraftAndFrSpecWithoutDraftAreClearErrors()
    {
        var ex = Assert.Throws<CheckpointException>(() => MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 1, DraftDirectory = "/nonexistent/draft" }));
        Assert.That(ex!.Message, Does.Contain("draft directory does not exist"));
        Assert.Throws<ArgumentException>(() => MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 1, FrSpecPath = "freq_32768.pt" }));
    }

    [Test]
    public void DraftWithATruncatedTensorFileIsRejected()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"minicpm4-tests-{Environment.ProcessId}", "tiny-draft-truncated");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(_draft, "config.json"), Path.Combine(dir, "config.json"), overwrite: true);
        var bytes = File.ReadAllBytes(Path.Combine(_draft, "model.safetensors"));
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), bytes[..(bytes.Length / 2)]);
        Assert.Throws<CheckpointException>(() => MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 1, DraftDirectory = dir }));
    }
}
