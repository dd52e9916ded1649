using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;

namespace MiniCPM4.Checkpoints;

/// <summary>One tensor of a safetensors file.</summary>
/// <param name="Name">Tensor name as stored in the header.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions, outermost first (empty for a scalar).</param>
/// <param name="DataOffset">Offset of the first byte of the tensor from the start of the file.</param>
/// <param name="ByteLength">Number of bytes (element count × dtype size).</param>
public sealed record TensorInfo(string Name, TensorDType DType, long[] Shape, long DataOffset, long ByteLength);

/// <summary>
/// A read-only, memory-mapped safetensors file whose header has been fully validated: every tensor has a known
/// dtype, a non-negative shape whose byte size matches its data_offsets, lies inside the data section, and no two
/// tensors overlap. Tensor bytes are served straight from the mapping and stay valid until <see cref="Dispose"/>.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the format's reference implementation uses the same bound).</summary>
    public const long MaxHeaderBytes = 100L << 20;

    private static int s_liveCount;

    private MemoryMappedFile? _mmf;
    private MemoryMappedViewAccessor? _view;
    private byte* _base;
    private readonly Dictionary<string, TensorInfo> _tensors;

    /// <summary>Full path of the file.</summary>
    public string Path { get; }

    /// <summary>Size of the file in bytes.</summary>
    public long FileLength { get; }

    /// <summary>Size of the JSON header in bytes (the value of the 8-byte prefix).</summary>
    public long HeaderLength { get; }

    /// <summary>The tensors, by name.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    /// <summary>The optional "__metadata__" string map of the header (empty if absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Number of instances not yet disposed (for leak tests).</summary>
    internal static int LiveCount => Volatile.Read(ref s_liveCount);

    private SafetensorsFile(string path, long fileLength, long headerLength, MemoryMappedFile mmf,
        MemoryMappedViewAccessor view, byte* basePtr, Dictionary<string, TensorInfo> tensors, Dictionary<string,
            string> metadata)
    {
        Path = path;
        FileLength = fileLength;
        HeaderLength = headerLength;
        _mmf = mmf;
        _view = view;
        _base = basePtr;
        _tensors = tensors;
        Metadata = metadata;
        Interlocked.Increment(ref s_liveCount);
    }

    /// <summary>Maps and validates a safetensors file.</summary>
    /// <exception cref="CheckpointException">The file cannot be read or is not a valid safetensors file; the message
    /// names the file.</exception>
    public static SafetensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = System.IO.Path.GetFullPath(path);
        FileStream? fs = null;
        MemoryMappedFile? mmf = null;
        MemoryMappedViewAccessor? view = null;
        bool acquired = false;
        try
        {
            long length;
            try
            {
                fs = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1,
                    FileOptions.None);
                length = fs.Length;
            }
            catch (Exception e) when (CheckpointException.IsIoError(e))
            {
                throw CheckpointException.Io(full, e);
            }

            if (length < 8)
                throw new CheckpointException(full,
                    $"file is too short to be a safetensors file ({length} bytes; at least 8 are needed for the " +
                    $"header length)");

            // Read the header length with an ordinary read, so that nothing is mapped or allocated before it is
            // checked.
            Span<byte> prefix = stackalloc byte[8];
            try
            {
                fs.ReadExactly(prefix);
            }
            catch (Exception e) when (CheckpointException.IsIoError(e))
            {
                throw CheckpointException.Io(full, e);
            }
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > (ulong)MaxHeaderBytes)
                throw new CheckpointException(full,
                    $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit (corrupt or not a " +
                    $"safetensors file)");
            if (8 + headerLength > (ulong)length)
                throw new CheckpointException(full,
                    $"header length {headerLength} runs past the end of the file ({length} bytes; truncated or " +
                    $"corrupt)");
            if (headerLength < 2)
                throw new CheckpointException(full, $"header length {headerLength} is too small for a JSON header");

            try
            {
                mmf = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read,
                    HandleInheritability.None, leaveOpen: false);
                fs = null; // owned by the mapping now
                view = mmf.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            }
            catch (Exception e) when (CheckpointException.IsIoError(e))
            {
                throw CheckpointException.Io(full, e);
            }
            if (view.Capacity < length)
                throw new CheckpointException(full, "the file changed while it was being opened");

            byte* ptr = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref ptr);
            acquired = true;
            ptr += view.PointerOffset;

            var header = new ReadOnlySpan<byte>(ptr + 8, (int)headerLength);
            long dataStart = 8 + (long)headerLength;
            var (tensors, metadata) = ParseHeader(header, length - dataStart, dataStart, full);
            var file = new SafetensorsFile(full, length, (long)headerLength, mmf, view, ptr, tensors, metadata);
            mmf = null;
            view = null;
            acquired = false;
            return file;
        }
        finally
        {
            if (acquired) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            mmf?.Dispose();
            fs?.Dispose();
        }
    }

    /// <summary>A pointer to the first byte of <paramref name="t"/>; valid while this file is open.</summary>
    internal byte* GetPointer(TensorInfo t)
    {
        ArgumentNullException.ThrowIfNull(t);
        byte* b = _base;
        ObjectDisposedException.ThrowIf(b == null, this);
        long dataStart = 8 + HeaderLength;
        if (t.DataOffset < dataStart || t.ByteLength < 0 || t.DataOffset > FileLength - t.ByteLength)
            throw new ArgumentException($"tensor '{t.Name}' does not belong to {Path}", nameof(t));
        return b + t.DataOffset;
    }

    /// <summary>The bytes of <paramref name="t"/>; valid while this file is open.</summary>
    /// <exception cref="CheckpointException">The tensor is larger than a span can address (2 GiB); use the pointer
    /// instead.</exception>
    public ReadOnlySpan<byte> GetBytes(TensorInfo t)
    {
        byte* p = GetPointer(t);
        if (t.ByteLength > int.MaxValue)
            throw new CheckpointException(Path,
                $"tensor '{t.Name}' is {t.ByteLength} bytes, too large for a span (limit {int.MaxValue})");
        return new ReadOnlySpan<byte>(p, (int)t.ByteLength);
    }

    /// <summary>Unmaps the file. Spans and pointers obtained from it become invalid.</summary>
    public void Dispose()
    {
        var view = Interlocked.Exchange(ref _view, null);
        if (view == null) return;
        _base = null;
        view.SafeMemoryMappedViewHandle.ReleasePointer();
        view.Dispose();
        _mmf?.Dispose();
        _mmf = null;
        Interlocked.Decrement(ref s_liveCount);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Header parsing: a streaming reader over the mapped bytes. Nothing is allocated from a size read out of the file
    // except lists that grow with the (bounded) header itself.

    private static (Dictionary<string, TensorInfo>, Dictionary<string, string>) ParseHeader(
        ReadOnlySpan<byte> header, long dataLength, long dataStart, string path)
    {
        // Writers pad the header with spaces (some with NULs); tolerate trailing padding of either kind.
        int end = header.Length;
        while (end > 0 && (header[end - 1] == (byte)' ' || header[end - 1] == 0)) end--;
        header = header[..end];

        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var ranges = new List<(long Begin, long End, string Name)>();
        try
        {
            var reader = new Utf8JsonReader(header, new JsonReaderOptions { MaxDepth = 8 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw Bad(path, "the header is not a JSON object");
            while (true)
            {
                Next(ref reader, path);
                if (reader.TokenType == JsonTokenType.EndObject) break;
                string name = reader.GetString()!;
                Next(ref reader, path);
                if (name == "__metadata__")
                {
                    ParseMetadata(ref reader, metadata, path);
                    continue;
                }
                if (tensors.ContainsKey(name)) throw Bad(path, $"tensor '{name}' appears twice in the header");
                var (dtype, shape, begin, endOffset) = ParseTensor(ref reader, name, path);

                if (endOffset > dataLength)
                    throw Bad(path,
                        $"tensor '{name}' has data_offsets [{begin}, {endOffset}] beyond the data section " +
                        $"({dataLength} bytes)");
                long count = 1;
                long bytes;
                try
                {
                    checked
                    {
                        foreach (long d in shape) count *= d;
                        bytes = count * dtype.SizeInBytes();
                    }
                }
                catch (OverflowException)
                {
                    throw Bad(path,
                        $"tensor '{name}' has shape {TensorDTypeInfo.FormatShape(shape)} whose size overflows");
                }
                if (bytes != endOffset - begin)
                    throw Bad(path,
                        $"tensor '{name}' has shape {TensorDTypeInfo.FormatShape(shape)} and dtype " +
                        $"{dtype.ToSafetensorsName()} " +
                                    $"({bytes} bytes) but data_offsets [{begin}, {endOffset}] span " +
                                        $"{endOffset - begin} bytes");
                tensors.Add(name, new TensorInfo(name, dtype, shape, dataStart + begin, bytes));
                ranges.Add((begin, endOffset, name));
            }
            if (reader.Read()) throw Bad(path, "unexpected content after the JSON header object");
        }
        catch (JsonException e)
        {
            throw new CheckpointException(path, "invalid JSON header: " + e.Message, e);
        }
        catch (InvalidOperationException e)
        {
            // Utf8JsonReader.GetString() on invalid UTF-8 or a wrong token type.
            throw new CheckpointException(path, "invalid JSON header: " + e.Message, e);
        }

        // As the reference implementation requires: in offset order, each tensor starts where the previous one ends (no
        // gap,
        // no overlap), and the data section is exactly the tensors' extent. A header length that is off by even one
        // byte
        // moves the data section and is caught here instead of loading weights shifted by that byte.
        ranges.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long extent = 0;
        string? previous = null;
        foreach (var r in ranges)
        {
            if (r.Begin != extent)
                throw Bad(path, r.Begin < extent
                    ? $"tensors '{previous}' and '{r.Name}' overlap (data_offsets ending at {extent} and starting at " +
                        $"{r.Begin})"
                    : previous is null
                        ? $"tensor '{r.Name}' starts at data offset {r.Begin}, not 0: the data section must start " +
                            $"with a tensor"
                        : $"tensor '{r.Name}' starts at data offset {r.Begin} but tensor '{previous}' ends at " +
                            $"{extent}: " +
                          "the tensors must be contiguous");
            extent = r.End;
            previous = r.Name;
        }
        if (extent != dataLength)
            throw Bad(path, previous is null
                ? $"the header lists no tensors but the data section has {dataLength} bytes"
                : $"the data section has {dataLength} bytes but the tensors end at {extent} (last tensor " +
                    $"'{previous}'): " +
                  "the header length is wrong or the file has trailing bytes");
        return (tensors, metadata);
    }

    private static CheckpointException Bad(string path, string problem) =>
        new(path, "invalid safetensors header: " + problem);

    private static void Next(ref Utf8JsonReader reader, string path)
    {
        if (!reader.Read()) throw Bad(path, "the JSON header ends early");
    }

    private static void ParseMetadata(ref Utf8JsonReader reader, Dictionary<string, string> metadata, string path)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw Bad(path, "__metadata__ must be an object of strings");
        while (true)
        {
            Next(ref reader, path);
            if (reader.TokenType == JsonTokenType.EndObject) return;
            string key = reader.GetString()!;
            Next(ref reader, path);
            if (reader.TokenType != JsonTokenType.String) throw Bad(path,
                $"__metadata__ value of '{key}' must be a string");
            metadata[key] = reader.GetString()!;
        }
    }

    private static (TensorDType, long[], long, long) ParseTensor(ref Utf8JsonReader reader, string name, string path)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw Bad(path, $"tensor '{name}' must be a JSON object");
        string? dtypeName = null;
        List<long>? shape = null;
        long begin = -1, end = -1;
        bool haveOffsets = false;
        while (true)
        {
            Next(ref reader, path);
            if (reader.TokenType == JsonTokenType.EndObject) break;
            string field = reader.GetString()!;
            Next(ref reader, path);
            switch (field)
            {
                case "dtype":
                    if (dtypeName != null) throw Bad(path, $"tensor '{name}' has two dtype fields");
                    if (reader.TokenType != JsonTokenType.String) throw Bad(path,
                        $"tensor '{name}' dtype must be a string");
                    dtypeName = reader.GetString()!;
                    break;
                case "shape":
                    if (shape != null) throw Bad(path, $"tensor '{name}' has two shape fields");
                    shape = ReadIntArray(ref reader, name, "shape", path);
                    break;
                case "data_offsets":
                    if (haveOffsets) throw Bad(path, $"tensor '{name}' has two data_offsets fields");
                    var offs = ReadIntArray(ref reader, name, "data_offsets", path);
                    if (offs.Count != 2) throw Bad(path,
                        $"tensor '{name}' data_offsets must have exactly 2 values, found {offs.Count}");
                    (begin, end, haveOffsets) = (offs[0], offs[1], true);
                    break;
                default:
                    reader.Skip();
                    break;
            }
        }
        if (dtypeName == null) throw Bad(path, $"tensor '{name}' has no dtype");
        if (shape == null) throw Bad(path, $"tensor '{name}' has no shape");
        if (!haveOffsets) throw Bad(path, $"tensor '{name}' has no data_offsets");
        if (!TensorDTypeInfo.TryParseSafetensorsName(dtypeName, out var dtype))
            throw Bad(path, $"tensor '{name}' has unknown dtype '{Truncate(dtypeName)}'");
        if (begin > end) throw Bad(path, $"tensor '{name}' has data_offsets [{begin}, {end}] with begin after end");
        return (dtype, shape.ToArray(), begin, end);
    }

    private static List<long> ReadIntArray(ref Utf8JsonReader reader, string name, string field, string path)
    {
        if (reader.TokenType != JsonTokenType.StartArray) throw Bad(path,
            $"tensor '{name}' {field} must be an array of non-negative integers");
        var list = new List<long>();
        while (true)
        {
            Next(ref reader, path);
            if (reader.TokenType == JsonTokenType.EndArray) return list;
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long v) || v < 0)
                throw Bad(path, $"tensor '{name}' {field} must be an array of non-negative integers");
            list.Add(v);
        }
    }

    private static string Truncate(string s) => s.Length <= 40 ? s : s[..40] + "...";
}
