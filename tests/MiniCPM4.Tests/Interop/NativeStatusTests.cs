using MiniCPM4.Interop;
using NUnit.Framework;

namespace MiniCPM4.Tests.Interop;

/// <summary>Native failures become typed exceptions carrying the engine's message.</summary>
[TestFixture]
public unsafe class NativeStatusTests
{
    private static mcpm_model_config TinyConfig()
    {
        var c = new mcpm_model_config { struct_size = (uint)sizeof(mcpm_model_config) };
        NativeStatus.Check(NativeMethods.mcpm_model_config_default(&c));
        c.vocab_size = 32;
        c.hidden_size = 16;
        c.num_layers = 1;
        c.num_heads = 2;
        c.num_kv_heads = 1;
        c.head_dim = 8;
        c.intermediate_size = 32;
        c.max_position_embeddings = 64;
        c.original_max_position_embeddings = 64;
        return c;
    }

    [Test]
    public void ModelCreateWithNullConfigThrowsInvalidArgument()
    {
        int status = NativeMethods.mcpm_model_create(null, null, out ModelHandle model);
        using (model)
        {
            Assert.That(status, Is.EqualTo(NativeConstants.MCPM_ERR_INVALID_ARGUMENT));
            Assert.That(model.IsInvalid, "a failing call leaves the out-parameter untouched");
            var ex = Assert.Throws<MiniCpmInvalidArgumentException>(() => NativeStatus.Check(status));
            Assert.That(ex!.Message, Is.EqualTo("mcpm_model_config is NULL"));
            Assert.That(ex.Status, Is.EqualTo(NativeConstants.MCPM_ERR_INVALID_ARGUMENT));
        }
    }

    [Test]
    public void WrongStructSizeNamesBothSizes()
    {
        var config = new mcpm_model_config { struct_size = 4 };
        int status = NativeMethods.mcpm_model_config_default(&config);
        var ex = Assert.Throws<MiniCpmInvalidArgumentException>(() => NativeStatus.Check(status));
        Assert.That(ex!.Message,
            Does.StartWith($"mcpm_model_config->struct_size is 4, expected {sizeof(mcpm_model_config)}"));
    }

    [Test]
    public void InvalidModelConfigNamesTheField()
    {
        mcpm_model_config config = TinyConfig();
        config.num_kv_heads = 3;
        var ex = Assert.Throws<MiniCpmInvalidArgumentException>(() =>
        {
            mcpm_model_config c = config;
            NativeStatus.Check(NativeMethods.mcpm_model_create(&c, null, out ModelHandle h));
            h.Dispose();
        });
        Assert.That(ex!.Message, Does.Contain("num_kv_heads"));
    }

    [Test]
    public void UnavailableBackendThrowsBackendUnavailable()
    {
        Assume.That(MiniCpmNative.GetBuildInfo().Backends, Does.Not.Contain("cuda"), "this build has CUDA");
        mcpm_model_config config = TinyConfig();
        var options = new mcpm_model_options { struct_size = (uint)sizeof(mcpm_model_options) };
        NativeStatus.Check(NativeMethods.mcpm_model_options_default(&options));
        options.backend = NativeConstants.MCPM_BACKEND_CUDA;

        int status = NativeMethods.mcpm_model_create(&config, &options, out ModelHandle model);
        model.Dispose();
        var ex = Assert.Throws<MiniCpmBackendUnavailableException>(() => NativeStatus.Check(status));
        Assert.That(ex!.Status, Is.EqualTo(NativeConstants.MCPM_ERR_BACKEND_UNAVAILABLE));
        Assert.That(ex.Message, Does.Contain("CUDA"));
    }

    [Test]
    public void HandlesStringsAndErrorsRoundTripThroughARealModel()
    {
        mcpm_model_config config = TinyConfig();
        NativeStatus.Check(NativeMethods.mcpm_model_create(&config, null, out ModelHandle model));
        using (model)
        {
            Assert.That(model.IsInvalid, Is.False);

            // UTF-8 marshalling of string parameters: the engine echoes the name back in its message.
            const string name = "model.layers.0.ünknown_ß.weight";
            long shape = 4;
            float* data = stackalloc float[4];
            var ex = Assert.Throws<MiniCpmInvalidArgumentException>(() =>
            {
                long s = shape;
                NativeStatus.Check(
                    NativeMethods.mcpm_model_set_tensor(model, name, NativeConstants.MCPM_DTYPE_F32, &s, 1, data, 16));
            });
            Assert.That(ex!.Message, Is.EqualTo($"unknown tensor '{name}' for this MiniCPM4 config"));

            ulong bytes = 123;
            NativeStatus.Check(NativeMethods.mcpm_model_weight_bytes(model, &bytes));
            Assert.That(bytes, Is.Zero);

            var sessionEx = Assert.Throws<MiniCpmInvalidArgumentException>(() =>
            {
                NativeStatus.Check(NativeMethods.mcpm_session_create(model, null, out SessionHandle session));
                session.Dispose();
            });
            Assert.That(sessionEx!.Message, Does.Contain("not finalized"));
        }
        Assert.That(model.IsClosed, "Dispose releases the native model");
    }

    [Test]
    public void AnInvalidHandleIsPassedAsNull()
    {
        using var nullModel = new ModelHandle();
        int status = NativeMethods.mcpm_session_create(nullModel, null, out SessionHandle session);
        session.Dispose();
        var ex = Assert.Throws<MiniCpmInvalidArgumentException>(() => NativeStatus.Check(status));
        Assert.That(ex!.Message, Is.EqualTo("model is NULL"));
    }

    [Test]
    public void FreeFunctionsAcceptNull()
    {
        Assert.DoesNotThrow(() =>
        {
            NativeMethods.mcpm_model_free(0);
            NativeMethods.mcpm_session_free(0);
        });
    }

    [Test]
    public void CheckOfOkDoesNotThrow() => Assert.DoesNotThrow(() => NativeStatus.Check(NativeConstants.MCPM_OK));

    [TestCase(NativeConstants.MCPM_ERR_INVALID_ARGUMENT, typeof(MiniCpmInvalidArgumentException))]
    [TestCase(NativeConstants.MCPM_ERR_OUT_OF_MEMORY, typeof(MiniCpmOutOfMemoryException))]
    [TestCase(NativeConstants.MCPM_ERR_UNSUPPORTED, typeof(MiniCpmUnsupportedException))]
    [TestCase(NativeConstants.MCPM_ERR_CONTEXT_FULL, typeof(MiniCpmContextFullException))]
    [TestCase(NativeConstants.MCPM_ERR_BACKEND_UNAVAILABLE, typeof(MiniCpmBackendUnavailableException))]
    [TestCase(NativeConstants.MCPM_ERR_INTERNAL, typeof(MiniCpmInternalException))]
    [TestCase(NativeConstants.MCPM_ERR_NONFINITE, typeof(MiniCpmNonFiniteLogitsException))]
    [TestCase(NativeConstants.MCPM_ERR_CANCELLED, typeof(OperationCanceledException))]
    [TestCase(42, typeof(MiniCpmException))]
    public void EachStatusMapsToItsExceptionType(int status, Type expected)
    {
        Exception ex = NativeStatus.CreateException(status, "the native message");
        Assert.That(ex.GetType(), Is.EqualTo(expected));
        Assert.That(ex.Message, Is.EqualTo("the native message"));
        if (ex is MiniCpmException mce)
            Assert.That(mce.Status, Is.EqualTo(status));
        else if (ex is MiniCpmInvalidArgumentException invalid)
            Assert.That(invalid.Status, Is.EqualTo(status));
        else
            Assert.That(ex, Is.InstanceOf<OperationCanceledException>());
    }

    [Test]
    public void AnEmptyNativeMessageFallsBackToTheStatusName()
    {
        Assert.That(NativeStatus.CreateException(NativeConstants.MCPM_ERR_CONTEXT_FULL, "").Message,
            Is.EqualTo("context full (status 4)"));
        Assert.That(NativeStatus.CreateException(42, "").Message, Is.EqualTo("unknown status (status 42)"));
    }

    [Test]
    public void StatusStringsAndNullPointers()
    {
        Assert.That(NativeStatus.StatusName(NativeConstants.MCPM_OK), Is.EqualTo("ok"));
        Assert.That(NativeStatus.StatusName(NativeConstants.MCPM_ERR_INVALID_ARGUMENT), Is.EqualTo("invalid argument"));
        Assert.That(NativeStatus.ToManagedString(null), Is.EqualTo(string.Empty));
    }

    [Test]
    public void LastErrorIsPerThread()
    {
        Assert.That(NativeMethods.mcpm_model_create(null, null, out ModelHandle model), Is.Not.Zero);
        model.Dispose();
        Assert.That(NativeStatus.LastError(), Is.EqualTo("mcpm_model_config is NULL"));

        string? other = null;
        var thread = new Thread(() => other = NativeStatus.LastError());
        thread.Start();
        thread.Join();
        Assert.That(other, Is.EqualTo(string.Empty), "a thread that made no failing call has no error");
    }
}
