using System.Buffers.Binary;
using MiniCPM4.Checkpoints;
using NUnit.Framework;
using static MiniCPM4.Tests.Checkpoints.CheckpointFixtures;

namespace MiniCPM4.Tests.Checkpoints;

public class SafetensorsTests : TempDirTest
{
    private string FilePath => Path.Combine(Dir, "x.safetensors");

    private void Write(byte[] bytes) => File.WriteAllBytes(FilePath, bytes);

    private void Write(string header, int dataBytes, ulong? headerLength = null) =>
        Write(RawSafetensors(header, new byte[dataBytes], headerLength));

    private CheckpointException Fails(params string[] fragments)
    {
        var e = AssertFails(() => SafetensorsFile.Open(FilePath).Dispose(), fragments);
        Assert.That(e.FilePath, Is.EqualTo(FilePath));
        Assert.That(e.Message, Does.StartWith(FilePath + ": "));
        return e;
    }

    [Test]
    public void WriteThenOpen_RoundTripsBytesAndMetadata()
    {
        var rng = new Random(5);
        var tensors = new[]
        {
            Tensor("a", TensorDType.F32, new long[] { 3, 5 }, rng),
            Tensor("b", TensorDType.BF16, new long[] { 7 }, rng),
            Tensor("scalar", TensorDType.F16, Array.Empty<long>(), rng),
            Tensor("empty", TensorDType.F32, new long[] { 0, 4 }, rng),
            Tensor("ids", TensorDType.I64, new long[] { 2, 2 }, rng),
        };
        CheckpointWriter.WriteSafetensors(FilePath, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(File.ReadAllBytes(FilePath));
        Assert.That(headerLength % 8, Is.Zero);

        using var f = SafetensorsFile.Open(FilePath);
        Assert.That(f.Metadata["format"], Is.EqualTo("pt"));
        Assert.That(f.Tensors.Count, Is.EqualTo(tensors.Length));
        long expectedOffset = 8 + headerLength;
        foreach (var (name, dtype, shape, data) in tensors)
        {
            var t = f.Tensors[name];
            Assert.That(t.DType, Is.EqualTo(dtype));
            Assert.That(t.Shape, Is.EqualTo(shape));
            Assert.That(t.DataOffset, Is.EqualTo(expectedOffset), "tensors are written in the given order");
            Assert.That(f.GetBytes(t).SequenceEqual(data.Span), Is.True, name);
            expectedOffset += data.Length;
        }
    }

    [Test]
    public void WriteSafetensors_RejectsWrongDataLength()
    {
        Assert.Throws<ArgumentException>(() => CheckpointWriter.WriteSafetensors(FilePath,
            new[] { ("a", TensorDType.F32, new long[] { 2 }, (ReadOnlyMemory<byte>)new byte[7]) }));
    }

    [Test]
    public void RecognisedNonWeightDtypes_Open()
    {
        Write("""{"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[8,11]},"c":{"dtype":"BOOL","shape":[1],"data_offsets":[11,12]}}""", 12);
        using var f = SafetensorsFile.Open(FilePath);
        Assert.That(f.Tensors["a"].DType, Is.EqualTo(TensorDType.I32));
        Assert.That(f.Tensors["b"].DType.IsSupportedForWeights(), Is.False);
    }

    [Test]
    public void MissingFile_Fails()
    {
        var e = Fails("cannot read");
        Assert.That(e.InnerException, Is.InstanceOf<IOException>());
    }

    [Test]
    public void Unreadable_IsWrappedIoError()
    {
        // Opening a directory as a file fails with an I/O / access error, which must surface as CheckpointException.
        var e = Assert.Throws<CheckpointException>(() => SafetensorsFile.Open(Dir))!;
        Assert.That(e.InnerException, Is.InstanceOf<IOException>().Or.InstanceOf<UnauthorizedAccessException>());
    }

    [Test]
    public void Truncated_ShorterThan8Bytes_Fails()
    {
        Write(new byte[] { 1, 2, 3 });
        Fails("too short", "3 bytes");
    }

    [Test]
    public void Truncated_HeaderCut_Fails()
    {
        var full = RawSafetensors("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", new byte[4]);
        Write(full[..30]);
        Fails("runs past the end of the file");
    }

    [Test]
    public void HeaderLengthBeyondFile_Fails()
    {
        Write("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 4, headerLength: 5000);
        Fails("header length 5000 runs past the end of the file");
    }

    [Test]
    public void HeaderLengthHuge_Fails()
    {
        Write("{}", 0, headerLength: 1UL << 60);
        Fails($"header length {1UL << 60} exceeds");
    }

    [Test]
    public void InvalidHeaderJson_Fails()
    {
        Write("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]""", 4);
        Fails("invalid JSON header");
    }

    [Test]
    public void HeaderNotAnObject_Fails()
    {
        Write("[1, 2, 3]", 0);
        Fails("not a JSON object");
    }

    [Test]
    public void DataOffsetsOutOfBounds_Fails()
    {
        Write("""{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8);
        Fails("'a'", "beyond the data section");
    }

    [Test]
    public void DataOffsetsNegative_Fails()
    {
        Write("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}""", 8);
        Fails("non-negative integers");
    }

    [Test]
    public void DataOffsetsReversed_Fails()
    {
        Write("""{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}""", 8);
        Fails("begin after end");
    }

    [Test]
    public void OverlappingDataOffsets_Fails()
    {
        Write("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12);
        Fails("overlap", "'a'", "'b'");
    }

    [Test]
    public void HeaderLengthOneByteShort_Fails()
    {
        var rng = new Random(3);
        CheckpointWriter.WriteSafetensors(FilePath, new[]
        {
            Tensor("a", TensorDType.F32, new long[] { 3, 5 }, rng),
                Tensor("b", TensorDType.BF16, new long[] { 7 }, rng),
        });
        var bytes = File.ReadAllBytes(FilePath);
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.That(bytes[8 + (int)length - 1], Is.EqualTo((byte)' '), "the writer pads the header with spaces");
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, length - 1);   // the trailing space becomes data
        Write(bytes);
        Fails("data section has", "tensors end at", "last tensor 'b'");
    }

    // The reference implementation's layout rule: in offset order the tensors start at 0, follow each other with no
    // gap, and end where the data section ends.
    [TestCase("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""",
        12, "tensor 'b' starts at data offset 8 but tensor 'a' ends at 4: the tensors must be contiguous")]
    [TestCase("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8,
        "tensor 'a' starts at data offset 4, not 0")]
    [TestCase("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 5,
        "data section has 5 bytes but the tensors end at 4 (last tensor 'a')")]
    [TestCase("""{"__metadata__":{"format":"pt"}}""", 3,
        "the header lists no tensors but the data section has 3 bytes")]
    public void DataSectionThatIsNotTheTensorsExtent_Fails(string header, int dataBytes, string problem)
    {
        Write(header, dataBytes);
        Fails(problem);
    }

    [Test]
    public void UnknownDtype_Fails()
    {
        Write("""{"a":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,4]}}""", 4);
        Fails("unknown dtype 'Q4_K'");
    }

    [Test]
    public void ShapeByteSizeMismatch_Fails()
    {
        Write("""{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8);
        Fails("'a'", "12 bytes", "span 8 bytes");
    }

    [Test]
    public void ShapeOverflow_Fails()
    {
        Write("""{"a":{"dtype":"F32","shape":[4611686018427387904, 4],"data_offsets":[0,8]}}""", 8);
        Fails("overflows");
    }

    [Test]
    public void DuplicateTensor_Fails()
    {
        Write("""{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}""", 2);
        Fails("appears twice");
    }

    [Test]
    public void BadMetadata_Fails()
    {
        Write("""{"__metadata__":{"format":1}}""", 0);
        Fails("__metadata__");
    }

    [Test]
    public void NulPaddedHeader_IsAccepted()
    {
        Write("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}\0\0\0   ", 1);
        using var f = SafetensorsFile.Open(FilePath);
        Assert.That(f.Tensors, Has.Count.EqualTo(1));
    }

    [Test]
    public void Disposed_File_RejectsAccess()
    {
        Write("""{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}""", 1);
        var f = SafetensorsFile.Open(FilePath);
        var t = f.Tensors["a"];
        f.Dispose();
        f.Dispose();
        Assert.Throws<ObjectDisposedException>(() => f.GetBytes(t));
    }
}
