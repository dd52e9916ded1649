using MiniCPM4.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Api;

/// <summary>Corrupt weights (a NaN in the final norm) make every logit NaN: generation fails with a typed error
/// naming the step instead of sampling garbage.</summary>
[TestFixture]
public class NonFiniteLogitsTests
{
    private string _dir = null!;

    [OneTimeSetUp]
    public void WriteCorruptCheckpoint()
    {
        _dir = Directory.CreateTempSubdirectory("minicpm4-nan-").FullName;
        CheckpointWriter.CreateRandomModel(_dir, ModelPreset.Tiny, seed: 3, dtype: TensorDType.BF16);
        string file = Path.Combine(_dir, "model.safetensors");
        var tensors = new List<(string, TensorDType, long[], ReadOnlyMemory<byte>)>();
        using (var st = SafetensorsFile.Open(file))
        {
            foreach (var t in st.Tensors.Values.OrderBy(t => t.DataOffset))
            {
                var bytes = st.GetBytes(t).ToArray();
                if (t.Name == "model.norm.weight")
                {
                    Assert.That(t.DType, Is.EqualTo(TensorDType.BF16));
                    bytes[0] = 0xC0;   // bf16 0x7FC0: a quiet NaN
                    bytes[1] = 0x7F;
                }
                tensors.Add((t.Name, t.DType, t.Shape, bytes));
            }
        }
        CheckpointWriter.WriteSafetensors(file, tensors);
    }

    [OneTimeTearDown]
    public void Delete() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task GenerationFailsNamingTheStep()
    {
        using var model = MiniCpmModel.Load(_dir, new MiniCpmLoadOptions { Device = ComputeDevice.Cpu, Threads = 2 });
        using var session = model.CreateSession(new SessionOptions { ContextLength = 64 });
        var e = await Assert.ThrowsAsync<MiniCpmNonFiniteLogitsException>(async () =>
        {
            await foreach (var _ in session.GenerateAsync("Hello", new GenerationOptions { MaxTokens = 4 })) { }
        });
        Assert.That(e!.Message, Does.Contain("generation step 1").And.Contain("NaN or an infinity"));
        Assert.That(e.Status, Is.EqualTo(9), "MCPM_ERR_NONFINITE");
        Assert.That(e, Is.InstanceOf<MiniCpmException>());
        // The session is still usable: a rewind and another try fail the same way.
        session.Reset();
        await Assert.ThrowsAsync<MiniCpmNonFiniteLogitsException>(async () =>
            await session.GenerateTextAsync("Hello", new GenerationOptions { MaxTokens = 2, Temperature = 0.7f }));
    }
}
