using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using MiniCPM4.Checkpoints;

namespace MiniCPM4.Speculative;

/// <summary>The on-disk formats of an FR-Spec token-id list.</summary>
internal enum FrSpecFileFormat
{
    /// <summary><c>torch.save(list_of_ints)</c>: PyTorch's zip container with a pickled list.</summary>
    TorchZip,
    /// <summary>NumPy <c>.npy</c>, a 1-D little-endian int32 or int64 array.</summary>
    Npy,
    /// <summary>safetensors with exactly one 1-D I32 or I64 tensor.</summary>
    Safetensors,
}

/// <summary>Readers and writers of the FR-Spec token-id file formats. Every read problem is an
/// <see cref="FrSpecFormatException"/> naming the file.</summary>
internal static class FrSpecFiles
{
    /// <summary>Largest <c>data.pkl</c> accepted (uncompressed).</summary>
    public const long MaxPickleBytes = 64L << 20;

    /// <summary>Largest file accepted in any format (16M int64 ids plus headers fit well below it).</summary>
    public const long MaxFileBytes = 256L << 20;

    /// <summary>Most entries a torch zip may have (a list needs 2 to 6).</summary>
    public const int MaxZipEntries = 1024;

    private const int MaxNpyHeaderBytes = 1 << 16;

    private const string SafetensorsTensorName = "token_id_remap";

    private static ReadOnlySpan<byte> NpyMagic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    public static string FormatName(FrSpecFileFormat format) => format switch
    {
        FrSpecFileFormat.TorchZip => "torch.save zip (pickled list)",
        FrSpecFileFormat.Npy => "NumPy .npy",
        _ => "safetensors",
    };

    // ------------------------------------------------------------------------------------------------ reading

    /// <summary>Reads the token ids of a file, detecting its format from its first bytes.</summary>
    public static int[] Read(string path, out FrSpecFileFormat format)
    {
        FileStream fs;
        try
        {
            fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
        }
        catch (Exception e) when (CheckpointException.IsIoError(e))
        {
            throw new FrSpecFormatException(path, "cannot read the file: " + e.Message, e);
        }
        using (fs)
        {
            try
            {
                long length = fs.Length;
                if (length == 0) throw new FrSpecFormatException(path, "the file is empty");
                if (length > MaxFileBytes)
                    throw new FrSpecFormatException(path,
                        $"the file is {length} bytes, over the {MaxFileBytes >> 20} MiB limit for a token-id list");
                Span<byte> head = stackalloc byte[16];
                int n = fs.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
                head = head[..n];
                fs.Position = 0;
                if (head.StartsWith("PK\x03\x04"u8) || head.StartsWith("PK\x05\x06"u8))
                {
                    format = FrSpecFileFormat.TorchZip;
                    return ReadTorchZip(path, fs);
                }
                if (head.StartsWith(NpyMagic))
                {
                    format = FrSpecFileFormat.Npy;
                    return ReadNpy(path, ReadAll(fs, length));
                }
                if (n >= 9 && head[8] == (byte)'{')
                {
                    format = FrSpecFileFormat.Safetensors;
                    fs.Dispose();
                    return ReadSafetensors(path);
                }
                if (head[0] == 0x80)
                    throw new FrSpecFormatException(path,
                        "a bare pickle or the legacy (pre-1.6) torch.save format: not supported; " +
                        "save the list with a current torch.save (zip container), or as .npy");
                throw new FrSpecFormatException(path,
                    "not an FR-Spec token-id file: expected a torch.save zip (.pt), a NumPy .npy " +
                    $"or a .safetensors file (first bytes: {Convert.ToHexString(head[..Math.Min(n, 8)])})");
            }
            catch (Exception e) when (e is not FrSpecFormatException
                && (CheckpointException.IsIoError(e) || e is InvalidDataException))
            {
                throw new FrSpecFormatException(path, "cannot read the file: " + e.Message, e);
            }
        }
    }

    private static byte[] ReadAll(Stream s, long length)
    {
        var bytes = new byte[length];
        int n = s.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
        if (n != length) throw new IOException("the file changed while it was read");
        return bytes;
    }

    private static int[] ReadTorchZip(string path, FileStream fs)
    {
        ZipArchive zip;
        try
        {
            zip = new ZipArchive(fs, ZipArchiveMode.Read, leaveOpen: true);
        }
        catch (Exception e) when (
            e is InvalidDataException or IOException or ArgumentException or NotSupportedException)
        {
            throw new FrSpecFormatException(path, "not a valid zip archive (the torch.save container): " + e.Message,
                e);
        }
        using (zip)
        {
            byte[] pickle;
            string pickleName;
            try
            {
                var entries = zip.Entries;
                if (entries.Count > MaxZipEntries)
                    throw new FrSpecFormatException(path,
                        $"the zip has {entries.Count} entries, more than the {MaxZipEntries} a token-id list can need");
                var pickles = new List<ZipArchiveEntry>();
                foreach (var entry in entries)
                {
                    string name = entry.FullName;
                    int slash = name.IndexOf('/');
                    if (slash <= 0) continue;
                    string rest = name[(slash + 1)..];
                    if (rest == "data.pkl") pickles.Add(entry);
                    else if (rest.StartsWith("data/", StringComparison.Ordinal))
                        throw new FrSpecFormatException(path,
                            $"the zip holds tensor storage '{name}': this is a saved tensor (or holds one), " +
                            "but an FR-Spec file is torch.save(list_of_ints); re-save it with " +
                                "torch.save(ids.tolist(), path)");
                }
                if (pickles.Count == 0)
                    throw new FrSpecFormatException(path,
                        "the zip has no '<archive>/data.pkl' entry: not a torch.save file");
                if (pickles.Count > 1)
                    throw new FrSpecFormatException(path,
                        $"the zip has {pickles.Count} data.pkl entries " +
                        $"({string.Join(", ", pickles.Select(p => p.FullName))}): ambiguous");
                var pkl = pickles[0];
                pickleName = pkl.FullName;
                // The declared size is checked before anything is decompressed, and the read below is bounded by it.
                if (pkl.Length > MaxPickleBytes)
                    throw new FrSpecFormatException(path,
                        $"'{pickleName}' declares {pkl.Length} bytes uncompressed, over the {MaxPickleBytes >> 20} " +
                        $"MiB limit");
                pickle = new byte[pkl.Length];
                using var stream = pkl.Open();
                int n = stream.ReadAtLeast(pickle, pickle.Length, throwOnEndOfStream: false);
                if (n != pickle.Length)
                    throw new FrSpecFormatException(path,
                        $"'{pickleName}' holds {n} bytes but declares {pickle.Length} (corrupt zip)");
                if (stream.ReadByte() >= 0)
                    throw new FrSpecFormatException(path,
                        $"'{pickleName}' holds more bytes than the {pickle.Length} it declares (corrupt zip)");
            }
            catch (Exception e) when (
                e is InvalidDataException or IOException or ArgumentException or NotSupportedException)
            {
                throw new FrSpecFormatException(path, "corrupt zip archive (the torch.save container): " + e.Message,
                    e);
            }
            try
            {
                return PickleIntListReader.Read(pickle);
            }
            catch (InvalidDataException e)
            {
                throw new FrSpecFormatException(path, $"'{pickleName}' is not a pickled list of ints: {e.Message}", e);
            }
        }
    }

    private static int[] ReadNpy(string path, byte[] bytes)
    {
        if (bytes.Length < 10) throw new FrSpecFormatException(path, "truncated .npy header");
        int major = bytes[6];
        int headerStart;
        long headerLength;
        if (major == 1)
        {
            headerLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8));
            headerStart = 10;
        }
        else if (major is 2 or 3)
        {
            if (bytes.Length < 12) throw new FrSpecFormatException(path, "truncated .npy header");
            headerLength = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8));
            headerStart = 12;
        }
        else
        {
            throw new FrSpecFormatException(path,
                $".npy format version {major}.{bytes[7]} is not supported (1.0 to 3.0 are)");
        }
        if (headerLength > MaxNpyHeaderBytes || headerStart + headerLength > bytes.Length)
            throw new FrSpecFormatException(path,
                $".npy header length {headerLength} runs past the end of the file or is too large (truncated or " +
                $"corrupt)");
        string header = Encoding.UTF8.GetString(bytes, headerStart, (int)headerLength);
        var (descr, shape) = ParseNpyHeader(path, header);
        int itemSize = descr switch
        {
            "<i4" => 4,
            "<i8" => 8,
            _ => throw new FrSpecFormatException(path,
                $".npy dtype '{descr}' is not supported: token ids must be little-endian int32 ('<i4') or int64 " +
                $"('<i8')"),
        };
        if (shape.Length != 1)
            throw new FrSpecFormatException(path,
                $".npy array has shape ({string.Join(", ", shape)}): a 1-D array of token ids is expected");
        long count = shape[0];
        if (count > PickleIntListReader.MaxListLength)
            throw new FrSpecFormatException(path,
                $".npy array has {count} elements, more than the {PickleIntListReader.MaxListLength} limit");
        long dataStart = headerStart + headerLength;
        long dataBytes = bytes.Length - dataStart;
        if (dataBytes != count * itemSize)
            throw new FrSpecFormatException(path,
                $".npy data is {dataBytes} bytes but shape ({count},) of {descr} needs {count * itemSize} (truncated " +
                $"or trailing bytes)");
        return ToInt32(path, bytes.AsSpan((int)dataStart), itemSize, (int)count);
    }

    private static int[] ToInt32(string path, ReadOnlySpan<byte> data, int itemSize, int count)
    {
        var ids = new int[count];
        for (int i = 0; i < count; i++)
        {
            if (itemSize == 4)
            {
                ids[i] = BinaryPrimitives.ReadInt32LittleEndian(data.Slice(i * 4));
            }
            else
            {
                long v = BinaryPrimitives.ReadInt64LittleEndian(data.Slice(i * 8));
                if (v < int.MinValue || v > int.MaxValue)
                    throw new FrSpecFormatException(path,
                        $"value {v} at index {i} does not fit in 32 bits (not a token id)");
                ids[i] = (int)v;
            }
        }
        return ids;
    }

    // Parses the Python dict literal of a .npy header: {'descr': '<i4', 'fortran_order': False, 'shape': (8,), }
    private static (string Descr, long[] Shape) ParseNpyHeader(string path, string header)
    {
        int pos = 0;
        string? descr = null;
        long[]? shape = null;
        bool sawOrder = false;
        Skip();
        Expect('{');
        while (true)
        {
            Skip();
            if (Peek() == '}')
            {
                pos++;
                break;
            }
            string key = ParseString();
            Skip();
            Expect(':');
            Skip();
            switch (key)
            {
                case "descr":
                    descr = ParseString();
                    break;
                case "fortran_order":
                    if (Take("True")) sawOrder = true; // irrelevant for 1-D data
                    else if (Take("False")) sawOrder = true;
                    else throw Bad("'fortran_order' must be True or False");
                    break;
                case "shape":
                    shape = ParseTuple();
                    break;
                default:
                    throw Bad($"unexpected key '{key}'");
            }
            Skip();
            if (Peek() == ',') pos++;
            else if (Peek() != '}') throw Bad("expected ',' or '}'");
        }
        Skip();
        if (pos != header.Length) throw Bad("text after the header dict");
        if (descr is null || shape is null || !sawOrder) throw Bad(
            "the header needs 'descr', 'fortran_order' and 'shape'");
        return (descr, shape);

        char Peek() => pos < header.Length ? header[pos] : '\0';
        void Skip()
        {
            while (pos < header.Length && char.IsWhiteSpace(header[pos])) pos++;
        }
        void Expect(char c)
        {
            if (Peek() != c) throw Bad($"expected '{c}' at column {pos}");
            pos++;
        }
        bool Take(string word)
        {
            if (string.CompareOrdinal(header, pos, word, 0, word.Length) != 0) return false;
            pos += word.Length;
            return true;
        }
        string ParseString()
        {
            char quote = Peek();
            if (quote is not ('\'' or '"')) throw Bad($"expected a quoted string at column {pos}");
            int end = header.IndexOf(quote, pos + 1);
            if (end < 0) throw Bad("unterminated string");
            string s = header[(pos + 1)..end];
            pos = end + 1;
            return s;
        }
        long[] ParseTuple()
        {
            Expect('(');
            var dims = new List<long>();
            while (true)
            {
                Skip();
                if (Peek() == ')')
                {
                    pos++;
                    return dims.ToArray();
                }
                int start = pos;
                while (pos < header.Length && char.IsAsciiDigit(header[pos])) pos++;
                if (pos == start || pos - start > 12) throw Bad("bad dimension in 'shape'");
                dims.Add(
                    long.Parse(header.AsSpan(start, pos - start), NumberStyles.None, CultureInfo.InvariantCulture));
                if (dims.Count > 8) throw Bad("too many dimensions in 'shape'");
                Skip();
                if (Peek() == ',') pos++;
                else if (Peek() != ')') throw Bad("expected ',' or ')' in 'shape'");
            }
        }
        FrSpecFormatException Bad(string problem) => new(path, $"malformed .npy header ({problem}): {header.Trim()}");
    }

    private static int[] ReadSafetensors(string path)
    {
        SafetensorsFile file;
        try
        {
            file = SafetensorsFile.Open(path);
        }
        catch (CheckpointException e)
        {
            string message = e.FilePath is { } p && e.Message.StartsWith(p + ": ", StringComparison.Ordinal)
                ? e.Message[(p.Length + 2)..] : e.Message;
            throw new FrSpecFormatException(path, "invalid safetensors file: " + message, e);
        }
        using (file)
        {
            if (file.Tensors.Count != 1)
            {
                string names = string.Join(", ", file.Tensors.Keys.Order(StringComparer.Ordinal));
                throw new FrSpecFormatException(path, $"the safetensors file has {file.Tensors.Count} tensors " +
                    $"({names}): exactly one 1-D I32 or I64 tensor of token ids is expected");
            }
            var t = file.Tensors.Values.First();
            if (t.DType is not (TensorDType.I32 or TensorDType.I64))
                throw new FrSpecFormatException(path, $"tensor '{t.Name}' is {t.DType}: token ids must be I32 or I64");
            if (t.Shape.Length != 1)
                throw new FrSpecFormatException(path,
                    $"tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}]: a 1-D tensor of token ids is " +
                    $"expected");
            if (t.Shape[0] > PickleIntListReader.MaxListLength)
                throw new FrSpecFormatException(path,
                    $"tensor '{t.Name}' has {t.Shape[0]} elements, more than the {PickleIntListReader.MaxListLength} " +
                    $"limit");
            return ToInt32(path, file.GetBytes(t), t.DType.SizeInBytes(), (int)t.Shape[0]);
        }
    }

    // ------------------------------------------------------------------------------------------------ writing

    /// <summary>Writes <paramref name="ids"/> to <paramref name="path"/> through a temporary file, in the format its
    /// extension names: .npy, .safetensors, anything else the torch.save zip.</summary>
    public static void Write(string path, int[] ids)
    {
        string full = Path.GetFullPath(path);
        string ext = Path.GetExtension(full).ToLowerInvariant();
        string temp = full + ".tmp-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None))
            {
                switch (ext)
                {
                    case ".npy":
                        WriteNpy(fs, ids);
                        break;
                    case ".safetensors":
                        WriteSafetensors(fs, ids);
                        break;
                    default:
                        WriteTorchZip(fs, ArchiveName(full), ids);
                        break;
                }
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try
            {
                File.Delete(temp);
            }
            catch (Exception e) when (CheckpointException.IsIoError(e))
            {
            }
            throw;
        }
    }

    /// <summary>
    /// The layout torch.save (PyTorchStreamWriter) gives a list of ints: stored (uncompressed) entries
    /// <c>&lt;archive&gt;/data.pkl</c> (pickle protocol 2), <c>&lt;archive&gt;/byteorder</c> ("little"),
    /// <c>&lt;archive&gt;/version</c> ("3\n") and <c>&lt;archive&gt;/.data/serialization_id</c>, where the archive
    /// folder is the file name without its extension. Entries get a fixed time stamp so that the same list always
    /// gives the same bytes. (torch pads entries to 64-byte alignment for memory-mapped storages; a list has no
    /// storages, and the reader does not need it.)
    /// </summary>
    private static void WriteTorchZip(Stream stream, string archive, int[] ids)
    {
        byte[] pickle = PickleIntListReader.Write(ids);
        using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
        Add(archive + "/data.pkl", pickle);
        Add(archive + "/byteorder", "little"u8.ToArray());
        Add(archive + "/version", "3\n"u8.ToArray());
        // torch writes 40 decimal digits; derive them from the content so that saving is deterministic.
        ulong h1 = Fnv1a(pickle, 0xcbf29ce484222325UL), h2 = Fnv1a(pickle, 0x84222325cbf29ce4UL);
        Add(archive + "/.data/serialization_id",
            Encoding.ASCII.GetBytes(h1.ToString("D20", CultureInfo.InvariantCulture)
                + h2.ToString("D20", CultureInfo.InvariantCulture)));

        void Add(string name, byte[] content)
        {
            var entry = zip.CreateEntry(name, CompressionLevel.NoCompression);
            entry.LastWriteTime = new DateTimeOffset(1980, 1, 1, 0, 0, 0, TimeSpan.Zero);
            using var s = entry.Open();
            s.Write(content);
        }
    }

    private static ulong Fnv1a(ReadOnlySpan<byte> data, ulong seed)
    {
        ulong h = seed;
        foreach (byte b in data)
        {
            h ^= b;
            h *= 0x100000001b3UL;
        }
        return h;
    }

    private static string ArchiveName(string fullPath)
    {
        string name = Path.GetFileNameWithoutExtension(fullPath);
        return name.Length > 0 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.') ? name
            : "archive";
    }

    private static void WriteNpy(Stream stream, int[] ids)
    {
        string header = $"{{'descr': '<i4', 'fortran_order': False, 'shape': ({ids.Length},), }}";
        int total = 10 + header.Length + 1;
        header += new string(' ', (64 - total % 64) % 64) + "\n";
        Span<byte> prefix = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, 0, 0];
        BinaryPrimitives.WriteUInt16LittleEndian(prefix[8..], (ushort)header.Length);
        stream.Write(prefix);
        stream.Write(Encoding.ASCII.GetBytes(header));
        WriteInt32s(stream, ids);
    }

    private static void WriteSafetensors(Stream stream, int[] ids)
    {
        string json = $"{{\"{SafetensorsTensorName}\":{{\"dtype\":\"I32\",\"shape\":[{ids.Length}]," +
                      $"\"data_offsets\":[0,{(long)ids.Length * 4}]}}}}";
        json += new string(' ', (8 - json.Length % 8) % 8);
        Span<byte> prefix = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)json.Length);
        stream.Write(prefix);
        stream.Write(Encoding.ASCII.GetBytes(json));
        WriteInt32s(stream, ids);
    }

    private static void WriteInt32s(Stream stream, int[] ids)
    {
        var buffer = new byte[4096 * 4];
        for (int start = 0; start < ids.Length; start += 4096)
        {
            int n = Math.Min(4096, ids.Length - start);
            for (int i = 0; i < n; i++) BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(i * 4), ids[start + i]);
            stream.Write(buffer, 0, n * 4);
        }
    }
}
