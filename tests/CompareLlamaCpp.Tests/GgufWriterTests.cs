using System.Buffers.Binary;
using System.Text;
using MiniCPM4.CompareLlamaCpp;
using NUnit.Framework;

namespace CompareLlamaCpp.Tests;

public class GgufWriterTests
{
    private static byte[] WriteToBytes(GgufWriter writer)
    {
        using var stream = new MemoryStream();
        writer.Write(stream);
        return stream.ToArray();
    }

    [Test]
    public void HeaderIsMagicVersionThenTensorAndKeyCounts()
    {
        var w = new GgufWriter();
        w.Add("general.architecture", "minicpm");
        w.Add("minicpm.block_count", 2u);
        w.AddTensor("x", [3], GgmlType.F32, s => s.Write(new byte[12]));
        byte[] bytes = WriteToBytes(w);

        Assert.That(Encoding.ASCII.GetString(bytes, 0, 4), Is.EqualTo("GGUF"));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(4)), Is.EqualTo(3u));
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(8)), Is.EqualTo(1ul), "tensor count");
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(16)), Is.EqualTo(2ul), "metadata count");
        // First key: u64 length, the bytes, u32 type 8 (string), then the value as u64 length + bytes.
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(24)),
            Is.EqualTo((ulong)"general.architecture".Length));
        Assert.That(Encoding.ASCII.GetString(bytes, 32, 20), Is.EqualTo("general.architecture"));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(52)), Is.EqualTo(8u));
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(56)), Is.EqualTo(7ul));
        Assert.That(Encoding.ASCII.GetString(bytes, 64, 7), Is.EqualTo("minicpm"));
        // Second key: "minicpm.block_count", type 4 (u32), value 2.
        int second = 71;
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(second)), Is.EqualTo(19ul));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(second + 8 + 19)), Is.EqualTo(4u));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(second + 8 + 19 + 4)), Is.EqualTo(2u));
    }

    [Test]
    public void EveryKeyTypeIsWrittenWithItsTypeIdAndReadsBack()
    {
        var w = new GgufWriter();
        w.Add("s", "text");
        w.Add("u", 7u);
        w.Add("i", -5);
        w.Add("f", 1.5f);
        w.Add("b", true);
        w.Add("as", ["a", "bc"]);
        w.Add("af", [0.25f, -2f]);
        w.Add("ai", [1, -1, 3]);
        var r = GgufReader.Read(new MemoryStream(WriteToBytes(w)));

        Assert.That(r.Metadata["s"], Is.EqualTo((GgufValueType.String, (object)"text")));
        Assert.That(r.Metadata["u"], Is.EqualTo((GgufValueType.U32, (object)7u)));
        Assert.That(r.Metadata["i"], Is.EqualTo((GgufValueType.I32, (object)-5)));
        Assert.That(r.Metadata["f"], Is.EqualTo((GgufValueType.F32, (object)1.5f)));
        Assert.That(r.Metadata["b"], Is.EqualTo((GgufValueType.Bool, (object)true)));
        Assert.That(r.Metadata["as"].Type, Is.EqualTo(GgufValueType.Array));
        Assert.That((object[])r.Metadata["as"].Value, Is.EqualTo(new object[] { "a", "bc" }));
        Assert.That((object[])r.Metadata["af"].Value, Is.EqualTo(new object[] { 0.25f, -2f }));
        Assert.That((object[])r.Metadata["ai"].Value, Is.EqualTo(new object[] { 1, -1, 3 }));
    }

    [Test]
    public void ArraysCarryTheirElementTypeAndCount()
    {
        var w = new GgufWriter();
        w.Add("ai", [1, 2]);
        byte[] bytes = WriteToBytes(w);
        int value = 24 + 8 + 2 + 4;  // header, key length + "ai", array type
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(value - 4)), Is.EqualTo(9u), "array");
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(value)), Is.EqualTo(5u), "element type i32");
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(value + 4)), Is.EqualTo(2ul));
        Assert.That(BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(value + 12)), Is.EqualTo(1));
        Assert.That(BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(value + 16)), Is.EqualTo(2));
    }

    [Test]
    public void TensorInfosHoldGgmlDimsAndAlignedOffsets()
    {
        var w = new GgufWriter();
        w.Add("k", 1u);
        byte[] a = Enumerable.Range(1, 12).Select(i => (byte)i).ToArray();
        byte[] b = Enumerable.Range(101, 10).Select(i => (byte)i).ToArray();
        byte[] c = Enumerable.Range(201, 32).Select(i => (byte)i).ToArray();
        w.AddTensor("a", [3], GgmlType.F32, s => s.Write(a));
        w.AddTensor("b", [5], GgmlType.BF16, s => s.Write(b));
        w.AddTensor("c", [4, 2], GgmlType.F32, s => s.Write(c));  // an HF [2, 4] matrix: innermost dim first
        byte[] bytes = WriteToBytes(w);
        var r = GgufReader.Read(new MemoryStream(bytes));

        Assert.That(r.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "a", "b", "c" }));
        Assert.That(r.Tensors.Select(t => t.Offset), Is.EqualTo(new long[] { 0, 32, 64 }),
            "each tensor starts on a 32-byte boundary");
        Assert.That(r.Tensors[2].Dims, Is.EqualTo(new long[] { 4, 2 }));
        Assert.That(r.Tensors.Select(t => t.Type), Is.EqualTo(new uint[] { 0, 30, 0 }));
        Assert.That(r.DataStart % 32, Is.EqualTo(0));
        Assert.That(bytes.AsSpan((int)r.DataStart, 12).ToArray(), Is.EqualTo(a));
        Assert.That(bytes.AsSpan((int)r.DataStart + 12, 20).ToArray(), Is.All.EqualTo((byte)0), "padding");
        Assert.That(bytes.AsSpan((int)r.DataStart + 32, 10).ToArray(), Is.EqualTo(b));
        Assert.That(bytes.AsSpan((int)r.DataStart + 64, 32).ToArray(), Is.EqualTo(c));
        Assert.That(bytes.Length, Is.EqualTo(r.DataStart + 96));
    }

    [Test]
    public void ACallbackThatWritesTheWrongByteCountFails()
    {
        var w = new GgufWriter();
        w.AddTensor("a", [3], GgmlType.F32, s => s.Write(new byte[8]));
        Assert.That(() => WriteToBytes(w), Throws.InvalidOperationException.With.Message.Contains("expected 12"));
    }

    [Test]
    public void DuplicateKeysAndTensorsAreRejected()
    {
        var w = new GgufWriter();
        w.Add("k", 1u);
        w.AddTensor("t", [1], GgmlType.F32, s => s.Write(new byte[4]));
        Assert.That(() => w.Add("k", 2u), Throws.ArgumentException);
        Assert.That(() => w.AddTensor("t", [1], GgmlType.F32, s => { }), Throws.ArgumentException);
        Assert.That(() => w.AddTensor("q", [31], GgmlType.Q4_0, s => { }), Throws.ArgumentException,
            "Q4_0 rows come in blocks of 32");
    }

    [Test]
    public void ReaderRejectsANonGgufFile()
    {
        Assert.That(() => GgufReader.Read(new MemoryStream(Encoding.ASCII.GetBytes("GGML\x03\0\0\0"))),
            Throws.TypeOf<InvalidDataException>());
    }

    [Test]
    public void QkRowsArePermutedFromRotateHalfToAdjacentPairs()
    {
        // Two heads of dimension 4: HF rows per head are [x0, x1 | y0, y1] (first halves, then second halves);
        // llama.cpp wants the rotation pairs adjacent: [x0, y0, x1, y1].
        long[] rows = Enumerable.Range(0, 8).Select(r => CheckpointToGguf.PermutedSourceRow(r, 8, heads: 2)).ToArray();
        Assert.That(rows, Is.EqualTo(new long[] { 0, 2, 1, 3, 4, 6, 5, 7 }));
        // One head of dimension 8: [0, 4, 1, 5, 2, 6, 3, 7].
        rows = Enumerable.Range(0, 8).Select(r => CheckpointToGguf.PermutedSourceRow(r, 8, heads: 1)).ToArray();
        Assert.That(rows, Is.EqualTo(new long[] { 0, 4, 1, 5, 2, 6, 3, 7 }));
    }
}
