using MiniCPM4.Interop;
using NUnit.Framework;

namespace MiniCPM4.Tests.Interop;

/// <summary>The engine's argument errors are ArgumentExceptions naming the managed option.</summary>
[TestFixture]
public class InvalidArgumentNamesTests
{
    [Test]
    public void NativeFieldNamesBecomeManagedOptionNames()
    {
        var e = (MiniCpmInvalidArgumentException)NativeStatus.CreateException(
            NativeConstants.MCPM_ERR_INVALID_ARGUMENT, "invalid sampling params: top_p must be in (0, 1]");
        Assert.That(e.Message, Is.EqualTo("invalid sampling params: GenerationOptions.TopP must be in (0, 1]"));
        Assert.That(e.ParamName, Is.EqualTo("GenerationOptions.TopP"));
        Assert.That(e.Status, Is.EqualTo(NativeConstants.MCPM_ERR_INVALID_ARGUMENT));

        e = (MiniCpmInvalidArgumentException)NativeStatus.CreateException(
            NativeConstants.MCPM_ERR_INVALID_ARGUMENT, "context_capacity must be in [0, max_position_embeddings = 64]");
        Assert.That(e.Message, Does.StartWith("SessionOptions.ContextLength must be in [0, max_position_embeddings"));
        Assert.That(e.ParamName, Is.EqualTo("SessionOptions.ContextLength"));
    }

    [Test]
    public void MessagesWithoutOptionFieldsAreKept()
    {
        var e = (MiniCpmInvalidArgumentException)NativeStatus.CreateException(
            NativeConstants.MCPM_ERR_INVALID_ARGUMENT, "the model is not finalized: call mcpm_model_finalize first");
        Assert.That(e.Message, Is.EqualTo("the model is not finalized: call mcpm_model_finalize first"));
        Assert.That(e.ParamName, Is.Null);
        Assert.That(NativeFieldNames.Translate("invalid model config: num_layers must be in [1, 4096]", out var name),
            Is.EqualTo("invalid model config: num_layers must be in [1, 4096]"), "config.json fields keep their names");
        Assert.That(name, Is.Null);
    }

    [Test]
    public async Task AnInvalidSamplingOptionIsAnArgumentExceptionNamingTheOption()
    {
        using var model = MiniCpmModel.Load(TinyModelFixture.Directory,
            new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 1 });
        using var session = model.CreateSession(new SessionOptions { ContextLength = 64 });
        var options = new GenerationOptions { MaxTokens = 2, TopP = 1.5f };
        var e = await Assert.ThrowsAsync<MiniCpmInvalidArgumentException>(async () =>
        {
            await foreach (var _ in session.GenerateAsync("hello", options)) { }
        });
        Assert.That(e, Is.InstanceOf<ArgumentException>());
        Assert.That(e!.Message, Does.Contain("GenerationOptions.TopP").And.Not.Contain("top_p"));
        Assert.That(e.ParamName, Is.EqualTo("GenerationOptions.TopP"));
    }

    [Test]
    public void InvalidLoadOptionsCanBeCaughtAsArgumentException()
    {
        var e = Assert.Catch<ArgumentException>(() =>
            MiniCpmModel.Load(TinyModelFixture.Directory, new MiniCpmLoadOptions { Threads = -3 }).Dispose());
        Assert.That(e, Is.InstanceOf<MiniCpmInvalidArgumentException>());
        Assert.That(e!.ParamName, Is.EqualTo("MiniCpmLoadOptions.Threads"));
        Assert.That(e.Message, Does.Contain("MiniCpmLoadOptions.Threads").And.Not.Contain("(Parameter"));
    }
}
