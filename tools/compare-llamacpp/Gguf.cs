using System.Globalization;
using System.Text;

namespace MiniCPM4.CompareLlamaCpp;

/// <summary>ggml tensor types this tool writes or reports (ids from ggml.h).</summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
    BF16 = 30,
}

/// <summary>GGUF metadata value types (gguf.h).</summary>
public enum GgufValueType : uint
{
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11,
        F64 = 12,
}

/// <summary>Sizes of the ggml types this tool knows.</summary>
public static class GgmlTypes
{
    /// <summary>Bytes of a row of <paramref name="elements"/> values, or null for a type this tool does not
    /// size.</summary>
    public static long? RowBytes(uint type, long elements) => (GgmlType)type switch
    {
        GgmlType.F32 => elements * 4,
        GgmlType.F16 or GgmlType.BF16 => elements * 2,
        // Blocks of 32 values: an fp16 scale and 16 bytes of nibbles (Q4_0) or 32 int8 (Q8_0).
        GgmlType.Q4_0 when elements % 32 == 0 => elements / 32 * 18,
        GgmlType.Q8_0 when elements % 32 == 0 => elements / 32 * 34,
        _ => null,
    };

    public static string Name(uint type) => Enum.IsDefined(typeof(GgmlType), type) ? ((GgmlType)type).ToString()
        : $"type{type}";
}

/// <summary>
/// Writes a GGUF version 3 file: the header, metadata key/values, tensor infos, then the tensor data, each tensor
/// starting on an <see cref="Alignment"/>-byte boundary of the data section. Tensors are written by callbacks so that
/// a model never has to be in memory at once.
/// </summary>
public sealed class GgufWriter
{
    public const uint Magic = 0x46554747;  // "GGUF" read as a little-endian uint32
    public const uint Version = 3;
    /// <summary>llama.cpp's default alignment (general.alignment is not written, so readers use this).</summary>
    public const int Alignment = 32;

    private readonly List<(string Key, GgufValueType Type, object Value)> _metadata = [];
    private readonly List<Tensor> _tensors = [];

    private sealed record Tensor(string Name, long[] Dims, GgmlType Type, long ByteLength, Action<Stream> WriteData);

    public IReadOnlyList<string> Keys => _metadata.Select(m => m.Key).ToList();

    public void Add(string key, string value) => AddValue(key, GgufValueType.String, value);
    public void Add(string key, uint value) => AddValue(key, GgufValueType.U32, value);
    public void Add(string key, int value) => AddValue(key, GgufValueType.I32, value);
    public void Add(string key, float value) => AddValue(key, GgufValueType.F32, value);
    public void Add(string key, bool value) => AddValue(key, GgufValueType.Bool, value);
    public void Add(string key, string[] values) => AddValue(key, GgufValueType.Array, values);
    public void Add(string key, float[] values) => AddValue(key, GgufValueType.Array, values);
    public void Add(string key, int[] values) => AddValue(key, GgufValueType.Array, values);

    private void AddValue(string key, GgufValueType type, object value)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        if (_metadata.Any(m => m.Key == key)) throw new ArgumentException($"duplicate GGUF key '{key}'", nameof(key));
        _metadata.Add((key, type, value));
    }

    /// <summary>
    /// Adds a tensor. <paramref name="dims"/> are in ggml order, innermost first: a Hugging Face [out, in] matrix is
    /// {in, out}. <paramref name="writeData"/> must write exactly the type's bytes for that shape.
    /// </summary>
    public void AddTensor(string name, long[] dims, GgmlType type, Action<Stream> writeData)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (dims.Length is < 1 or > 4 || dims.Any(d => d < 1)) throw new ArgumentException(
            $"tensor {name}: bad dims [{string.Join(", ", dims)}]");
        if (_tensors.Any(t => t.Name == name)) throw new ArgumentException($"duplicate tensor '{name}'", nameof(name));
        long rows = dims.Skip(1).Aggregate(1L, (a, b) => a * b);
        long bytes =
            (GgmlTypes.RowBytes((uint)type, dims[0])
            ?? throw new ArgumentException($"tensor {name}: {type} rows of {dims[0]} cannot be written")) * rows;
        _tensors.Add(new Tensor(name, dims, type, bytes, writeData));
    }

    public void Write(string path)
    {
        string temp = path + ".partial";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
                Write(stream);
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    public void Write(Stream stream)
    {
        var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);  // little-endian on every platform
        w.Write(Magic);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, type, value) in _metadata)
        {
            WriteString(w, key);
            w.Write((uint)type);
            WriteValue(w, type, value);
        }
        long offset = 0;
        var offsets = new long[_tensors.Count];
        for (int i = 0; i < _tensors.Count; i++)
        {
            var t = _tensors[i];
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (long d in t.Dims) w.Write((ulong)d);
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offsets[i] = offset;
            offset = AlignUp(offset + t.ByteLength);
        }
        w.Flush();
        Pad(stream);
        long dataStart = stream.Position;
        for (int i = 0; i < _tensors.Count; i++)
        {
            var t = _tensors[i];
            long before = stream.Position;
            if (before - dataStart != offsets[i]) throw new InvalidOperationException(
                $"tensor {t.Name}: data at {before - dataStart}, info says {offsets[i]}");
            t.WriteData(stream);
            long written = stream.Position - before;
            if (written != t.ByteLength) throw new InvalidOperationException(
                $"tensor {t.Name}: wrote {written} bytes, expected {t.ByteLength}");
            Pad(stream);
        }
    }

    public static long AlignUp(long n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void Pad(Stream stream)
    {
        long pad = AlignUp(stream.Position) - stream.Position;
        if (pad > 0) stream.Write(new byte[pad]);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value)
    {
        switch (value)
        {
            case string s: WriteString(w, s); break;
            case uint u: w.Write(u); break;
            case int i: w.Write(i); break;
            case float f: w.Write(f); break;
            case bool b: w.Write((byte)(b ? 1 : 0)); break;
            case string[] strings:
                w.Write((uint)GgufValueType.String);
                w.Write((ulong)strings.Length);
                foreach (var s in strings) WriteString(w, s);
                break;
            case float[] floats:
                w.Write((uint)GgufValueType.F32);
                w.Write((ulong)floats.Length);
                foreach (var f in floats) w.Write(f);
                break;
            case int[] ints:
                w.Write((uint)GgufValueType.I32);
                w.Write((ulong)ints.Length);
                foreach (var i in ints) w.Write(i);
                break;
            default: throw new ArgumentException($"unsupported GGUF value {value.GetType()} as {type}");
        }
    }
}

/// <summary>A tensor info read back from a GGUF file.</summary>
public sealed record GgufTensorInfo(string Name, long[] Dims, uint Type, long Offset);

/// <summary>
/// Reads a GGUF file's header, metadata and tensor infos (not the data): used to report what llama.cpp's quantizer
/// produced and by the tests. Arrays are returned as object[] of their elements.
/// </summary>
public sealed class GgufReader
{
    public uint Version { get; private init; }
    public IReadOnlyDictionary<string,
        (GgufValueType Type, object Value)> Metadata { get; private init; } = new Dictionary<string,
        (GgufValueType, object)>();
    public IReadOnlyList<GgufTensorInfo> Tensors { get; private init; } = [];
    /// <summary>File offset of the data section.</summary>
    public long DataStart { get; private init; }
    public int Alignment { get; private init; }

    public static GgufReader Read(string path)
    {
        using var stream = File.OpenRead(path);
        try
        {
            return Read(stream);
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{path}: truncated GGUF file");
        }
    }

    public static GgufReader Read(Stream stream)
    {
        var r = new BinaryReader(stream, Encoding.UTF8, leaveOpen: true);
        if (r.ReadUInt32() != GgufWriter.Magic) throw new InvalidDataException("not a GGUF file (bad magic)");
        uint version = r.ReadUInt32();
        if (version != 3) throw new InvalidDataException($"GGUF version {version}; only 3 is read");
        ulong tensorCount = r.ReadUInt64(), kvCount = r.ReadUInt64();
        if (tensorCount > 1_000_000 || kvCount > 1_000_000) throw new InvalidDataException("implausible GGUF counts");
        var metadata = new Dictionary<string, (GgufValueType, object)>();
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = ReadString(r);
            var type = (GgufValueType)r.ReadUInt32();
            metadata[key] = (type, ReadValue(r, type));
        }
        var tensors = new List<GgufTensorInfo>();
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = ReadString(r);
            uint nDims = r.ReadUInt32();
            if (nDims is < 1 or > 4) throw new InvalidDataException($"tensor {name}: {nDims} dims");
            var dims = new long[nDims];
            for (int d = 0; d < nDims; d++) dims[d] = (long)r.ReadUInt64();
            tensors.Add(new GgufTensorInfo(name, dims, r.ReadUInt32(), (long)r.ReadUInt64()));
        }
        int alignment = metadata.TryGetValue("general.alignment", out var a)
            ? Convert.ToInt32(a.Item2, CultureInfo.InvariantCulture) : GgufWriter.Alignment;
        long dataStart = (stream.Position + alignment - 1) / alignment * alignment;
        return new GgufReader { Version = version, Metadata = metadata, Tensors = tensors, DataStart = dataStart,
            Alignment = alignment };
    }

    /// <summary>How many tensors of each type, e.g. "BF16 1, F32 49, Q4_0 168".</summary>
    public string TypeSummary() =>
        string.Join(", ", Tensors.GroupBy(t => t.Type).OrderBy(g => GgmlTypes.Name(g.Key), StringComparer.Ordinal)
            .Select(g => $"{GgmlTypes.Name(g.Key)} {g.Count()}"));

    private static string ReadString(BinaryReader r)
    {
        ulong length = r.ReadUInt64();
        if (length > 1 << 24) throw new InvalidDataException($"implausible GGUF string length {length}");
        return Encoding.UTF8.GetString(r.ReadBytes((int)length));
    }

    private static object ReadValue(BinaryReader r, GgufValueType type) => type switch
    {
        GgufValueType.U8 => r.ReadByte(),
        GgufValueType.I8 => r.ReadSByte(),
        GgufValueType.U16 => r.ReadUInt16(),
        GgufValueType.I16 => r.ReadInt16(),
        GgufValueType.U32 => r.ReadUInt32(),
        GgufValueType.I32 => r.ReadInt32(),
        GgufValueType.F32 => r.ReadSingle(),
        GgufValueType.Bool => r.ReadByte() != 0,
        GgufValueType.String => ReadString(r),
        GgufValueType.U64 => r.ReadUInt64(),
        GgufValueType.I64 => r.ReadInt64(),
        GgufValueType.F64 => r.ReadDouble(),
        GgufValueType.Array => ReadArray(r),
        _ => throw new InvalidDataException($"unknown GGUF value type {(uint)type}"),
    };

    private static object[] ReadArray(BinaryReader r)
    {
        var elementType = (GgufValueType)r.ReadUInt32();
        ulong count = r.ReadUInt64();
        if (count > 1 << 24) throw new InvalidDataException($"implausible GGUF array length {count}");
        var items = new object[count];
        for (ulong i = 0; i < count; i++) items[i] = ReadValue(r, elementType);
        return items;
    }
}
