using System.Buffers.Binary;

namespace MiniCPM4.Speculative;

/// <summary>
/// Reads a pickled Python <c>list</c> of <c>int</c> — the <c>data.pkl</c> of <c>torch.save(list_of_ints)</c> — and
/// nothing else.
/// </summary>
/// <remarks>
/// <para>This is not an unpickler. It is a tiny stack machine that knows only the opcodes a list of ints needs:
/// PROTO, FRAME, EMPTY_LIST, MARK, BININT, BININT1, BININT2, LONG1, APPEND, APPENDS, BINPUT, LONG_BINPUT, MEMOIZE,
/// BINGET, LONG_BINGET and STOP. Its stack holds only ints, the one list and a mark; it never names, imports or
/// calls anything, so there is no path from the input to code execution. Every other opcode (GLOBAL,
/// STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, PERSID, BINPERSID, strings, dicts, tuples, floats, …) is
/// rejected with its name and offset.</para>
/// <para>Bounds: the list holds at most <see cref="MaxListLength"/> ints, each of which must fit in 32 bits (LONG1
/// payloads of at most 8 bytes); memo indices must be defined before they are read and there are at most
/// <see cref="MaxMemoEntries"/> of them; a second list (a nested list) is rejected; operands running past the end,
/// a missing STOP and bytes after STOP are rejected.</para>
/// <para>Python's C pickler writes a list of n ints (protocol 2, as torch.save uses) as
/// <c>PROTO 2, EMPTY_LIST, BINPUT 0</c>, then for n = 1 the int and <c>APPEND</c>, otherwise batches of up to 1000
/// ints each between <c>MARK</c> and <c>APPENDS</c>, then <c>STOP</c>; ints in [0, 256) are BININT1, in
/// [256, 65536) BININT2, other 32-bit values BININT.</para>
/// </remarks>
internal static class PickleIntListReader
{
    /// <summary>Most ints a list may hold (16M, far above any vocabulary).</summary>
    public const int MaxListLength = 1 << 24;

    /// <summary>Most memo entries a pickle may define (a list of ints needs one: the list).</summary>
    public const int MaxMemoEntries = 1024;

    /// <summary>Highest pickle protocol this reader accepts in a PROTO opcode.</summary>
    public const int MaxProtocol = 5;

    // The opcodes that are accepted.
    private const byte Proto = 0x80, Frame = 0x95, EmptyList = (byte)']', Mark = (byte)'(', BinInt = (byte)'J',
        BinInt1 = (byte)'K', BinInt2 = (byte)'M', Long1 = 0x8a, Append = (byte)'a', Appends = (byte)'e',
        BinPut = (byte)'q', LongBinPut = (byte)'r', Memoize = 0x94, BinGet = (byte)'h', LongBinGet = (byte)'j',
        Stop = (byte)'.';

    private enum Kind : byte { Int, List }

    private readonly record struct Item(Kind Kind, int Value);

    /// <summary>Parses <paramref name="pickle"/> and returns the ints of its list, in order.</summary>
    /// <exception cref="InvalidDataException">Anything but a well-formed pickled list of 32-bit ints; the message
    /// names the problem and the byte offset.</exception>
    public static int[] Read(ReadOnlySpan<byte> pickle, int maxLength = MaxListLength)
    {
        if (pickle.IsEmpty) throw new InvalidDataException("the pickle is empty");
        var list = new List<int>();
        bool haveList = false;
        var stack = new List<Item>();
        int mark = -1; // stack index where the open MARK sits, or -1
        var memo = new Dictionary<uint, Item>();
        int pos = 0;

        while (pos < pickle.Length)
        {
            int at = pos;
            byte op = pickle[pos++];
            switch (op)
            {
                case Proto:
                {
                    if (at != 0) throw Bad(at, "PROTO is only allowed as the first opcode");
                    int version = Operand(pickle, ref pos, 1, at, op)[0];
                    if (version < 2 || version > MaxProtocol)
                        throw Bad(at, $"pickle protocol {version} is not supported (2 to {MaxProtocol} are)");
                    break;
                }
                case Frame:
                {
                    ulong frameLength = BinaryPrimitives.ReadUInt64LittleEndian(Operand(pickle, ref pos, 8, at, op));
                    if (frameLength > (ulong)(pickle.Length - pos))
                        throw Bad(at,
                            $"FRAME of {frameLength} bytes runs past the end of the pickle ({pickle.Length - pos} " +
                            $"bytes left; truncated)");
                    break;
                }
                case EmptyList:
                    if (haveList) throw Bad(at,
                        "a second list: nested lists are not supported, only a flat list of ints");
                    haveList = true;
                    Push(stack, new Item(Kind.List, 0), maxLength, at);
                    break;
                case Mark:
                    if (mark >= 0) throw Bad(at, "MARK inside MARK: only a flat list of ints is supported");
                    mark = stack.Count;
                    break;
                case BinInt:
                    Push(stack,
                        new Item(Kind.Int, BinaryPrimitives.ReadInt32LittleEndian(Operand(pickle, ref pos, 4, at, op))),
                        maxLength, at);
                    break;
                case BinInt1:
                    Push(stack, new Item(Kind.Int, Operand(pickle, ref pos, 1, at, op)[0]), maxLength, at);
                    break;
                case BinInt2:
                    Push(stack,
                        new Item(Kind.Int,
                        BinaryPrimitives.ReadUInt16LittleEndian(Operand(pickle, ref pos, 2, at, op))), maxLength, at);
                    break;
                case Long1:
                {
                    int n = Operand(pickle, ref pos, 1, at, op)[0];
                    if (n > 8) throw Bad(at, $"LONG1 integer of {n} bytes is too large (token ids fit in 32 bits)");
                    var bytes = Operand(pickle, ref pos, n, at, op);
                    long value = 0;
                    for (int i = n - 1; i >= 0; i--) value = (value << 8) | bytes[i];
                    if (n > 0 && n < 8 && (bytes[n - 1] & 0x80) != 0) value -= 1L << (8 * n); // two's complement sign
                    if (value < int.MinValue || value > int.MaxValue)
                        throw Bad(at, $"LONG1 integer {value} does not fit in 32 bits");
                    Push(stack, new Item(Kind.Int, (int)value), maxLength, at);
                    break;
                }
                case Append:
                {
                    if (stack.Count - (mark >= 0 ? mark : 0) < 2 || stack.Count < 2)
                        throw Bad(at, "APPEND needs a list and an item on the stack");
                    var item = stack[^1];
                    if (stack[^2].Kind != Kind.List) throw Bad(at, "APPEND to something that is not the list");
                    if (item.Kind != Kind.Int) throw Bad(at,
                        "APPEND of a list to a list: nested lists are not supported");
                    if (list.Count >= maxLength) throw TooLong(at, maxLength);
                    list.Add(item.Value);
                    stack.RemoveAt(stack.Count - 1);
                    break;
                }
                case Appends:
                {
                    if (mark < 0) throw Bad(at, "APPENDS without a MARK");
                    if (mark == 0 || stack[mark - 1].Kind != Kind.List) throw Bad(at,
                        "APPENDS to something that is not the list");
                    int count = stack.Count - mark;
                    if (count > maxLength - list.Count) throw TooLong(at, maxLength);
                    for (int i = mark; i < stack.Count; i++)
                    {
                        if (stack[i].Kind != Kind.Int) throw Bad(at,
                            "APPENDS of a list to a list: nested lists are not supported");
                        list.Add(stack[i].Value);
                    }
                    stack.RemoveRange(mark, count);
                    mark = -1;
                    break;
                }
                case BinPut:
                    Put(memo, stack, mark, Operand(pickle, ref pos, 1, at, op)[0], at);
                    break;
                case LongBinPut:
                    Put(memo, stack, mark, BinaryPrimitives.ReadUInt32LittleEndian(Operand(pickle, ref pos, 4, at, op)),
                        at);
                    break;
                case Memoize:
                    Put(memo, stack, mark, (uint)memo.Count, at);
                    break;
                case BinGet:
                    Push(stack, Get(memo, Operand(pickle, ref pos, 1, at, op)[0], at), maxLength, at);
                    break;
                case LongBinGet:
                    Push(stack,
                        Get(memo, BinaryPrimitives.ReadUInt32LittleEndian(Operand(pickle, ref pos, 4, at, op)), at),
                        maxLength, at);
                    break;
                case Stop:
                {
                    if (mark >= 0) throw Bad(at, "STOP with an open MARK");
                    if (stack.Count != 1)
                        throw Bad(at, $"STOP with {stack.Count} items on the stack (expected exactly one list)");
                    if (stack[0].Kind != Kind.List) throw Bad(at, "the pickle holds an int, not a list of ints");
                    if (pos != pickle.Length)
                        throw Bad(at, $"{pickle.Length - pos} trailing byte(s) after STOP");
                    return list.ToArray();
                }
                default:
                    throw Bad(at,
                        $"opcode {Describe(op)} is not allowed: only a pickled list of ints is accepted{Hint(op)}");
            }
        }
        throw new InvalidDataException(
            $"the pickle ends without a STOP opcode after {pickle.Length} bytes (truncated)");
    }

    private static ReadOnlySpan<byte> Operand(ReadOnlySpan<byte> pickle, ref int pos, int count, int at, byte op)
    {
        if (count > pickle.Length - pos)
            throw Bad(at,
                $"opcode {Describe(op)} needs {count} operand byte(s) but only {pickle.Length - pos} remain " +
                $"(truncated)");
        var span = pickle.Slice(pos, count);
        pos += count;
        return span;
    }

    private static void Push(List<Item> stack, Item item, int maxLength, int at)
    {
        // The stack never needs more than the list, a batch of ints and a little slack.
        if (stack.Count > maxLength) throw TooLong(at, maxLength);
        stack.Add(item);
    }

    private static void Put(Dictionary<uint, Item> memo, List<Item> stack, int mark, uint index, int at)
    {
        if (stack.Count == 0 || stack.Count == mark) throw Bad(at, "memo store with nothing on the stack");
        if (!memo.ContainsKey(index) && memo.Count >= MaxMemoEntries)
            throw Bad(at, $"more than {MaxMemoEntries} memo entries");
        memo[index] = stack[^1];
    }

    private static Item Get(Dictionary<uint, Item> memo, uint index, int at) =>
        memo.TryGetValue(index, out var item) ? item
            : throw Bad(at, $"memo index {index} is read before it is defined");

    private static InvalidDataException TooLong(int at, int maxLength) =>
        Bad(at, $"the list has more than {maxLength} items");

    private static InvalidDataException Bad(int offset, string problem) =>
        new($"pickle offset {offset}: {problem}");

    private static string Describe(byte op)
    {
        string name = Name(op);
        string shown = op is >= 0x20 and < 0x7f ? $" '{(char)op}'" : "";
        return name.Length > 0 ? $"0x{op:x2}{shown} ({name})" : $"0x{op:x2}{shown} (not a pickle opcode)";
    }

    private static string Hint(byte op) => Name(op) switch
    {
        "GLOBAL" or "STACK_GLOBAL" or "INST" or "OBJ" or "NEWOBJ" or "NEWOBJ_EX" or "REDUCE" or "BUILD" or "EXT1"
            or "EXT2" or "EXT4"
            => " (this opcode imports or calls Python objects; it is never executed here)",
        "PERSID" or "BINPERSID" =>
            " (a persistent id references tensor storage: save token_ids.tolist(), not a tensor)",
        _ => "",
    };

    // The names of all pickle opcodes (protocols 0-5), for error messages.
    private static string Name(byte op) => op switch
    {
        (byte)'(' => "MARK", (byte)'.' => "STOP", (byte)'0' => "POP", (byte)'1' => "POP_MARK", (byte)'2' => "DUP",
        (byte)'F' => "FLOAT", (byte)'I' => "INT", (byte)'J' => "BININT", (byte)'K' => "BININT1", (byte)'L' => "LONG",
        (byte)'M' => "BININT2", (byte)'N' => "NONE", (byte)'P' => "PERSID", (byte)'Q' => "BINPERSID",
        (byte)'R' => "REDUCE", (byte)'S' => "STRING", (byte)'T' => "BINSTRING", (byte)'U' => "SHORT_BINSTRING",
        (byte)'V' => "UNICODE", (byte)'X' => "BINUNICODE", (byte)'a' => "APPEND", (byte)'b' => "BUILD",
        (byte)'c' => "GLOBAL", (byte)'d' => "DICT", (byte)'}' => "EMPTY_DICT", (byte)'e' => "APPENDS", (byte)'g' =>
            "GET",
        (byte)'h' => "BINGET", (byte)'i' => "INST", (byte)'j' => "LONG_BINGET", (byte)'l' => "LIST", (byte)']' =>
            "EMPTY_LIST",
        (byte)'o' => "OBJ", (byte)'p' => "PUT", (byte)'q' => "BINPUT", (byte)'r' => "LONG_BINPUT", (byte)'s' =>
            "SETITEM",
        (byte)'t' => "TUPLE", (byte)')' => "EMPTY_TUPLE", (byte)'u' => "SETITEMS", (byte)'G' => "BINFLOAT",
        0x80 => "PROTO", 0x81 => "NEWOBJ", 0x82 => "EXT1", 0x83 => "EXT2", 0x84 => "EXT4", 0x85 => "TUPLE1",
        0x86 => "TUPLE2", 0x87 => "TUPLE3", 0x88 => "NEWTRUE", 0x89 => "NEWFALSE", 0x8a => "LONG1", 0x8b => "LONG4",
        (byte)'B' => "BINBYTES", (byte)'C' => "SHORT_BINBYTES", 0x8c => "SHORT_BINUNICODE", 0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8", 0x8f => "EMPTY_SET", 0x90 => "ADDITEMS", 0x91 => "FROZENSET", 0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL", 0x94 => "MEMOIZE", 0x95 => "FRAME", 0x96 => "BYTEARRAY8", 0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "",
    };

    /// <summary>
    /// Writes <paramref name="values"/> as Python's C pickler does for a list of ints with protocol 2 (the
    /// torch.save default): PROTO 2, EMPTY_LIST, BINPUT 0, the ints (APPEND for one, MARK … APPENDS batches of
    /// 1000 otherwise), STOP.
    /// </summary>
    public static byte[] Write(ReadOnlySpan<int> values)
    {
        const int batch = 1000;
        using var ms = new MemoryStream(8 + values.Length * 3 + values.Length / batch * 2);
        ms.Write([Proto, 2, EmptyList, BinPut, 0]);
        Span<byte> buffer = stackalloc byte[5];
        if (values.Length == 1)
        {
            WriteInt(ms, values[0], buffer);
            ms.WriteByte(Append);
        }
        else
        {
            for (int start = 0; start < values.Length; start += batch)
            {
                ms.WriteByte(Mark);
                int end = Math.Min(values.Length, start + batch);
                for (int i = start; i < end; i++) WriteInt(ms, values[i], buffer);
                ms.WriteByte(Appends);
            }
        }
        ms.WriteByte(Stop);
        return ms.ToArray();
    }

    private static void WriteInt(Stream s, int value, Span<byte> buffer)
    {
        if (value is >= 0 and < 0x100)
        {
            buffer[0] = BinInt1;
            buffer[1] = (byte)value;
            s.Write(buffer[..2]);
        }
        else if (value is >= 0 and < 0x10000)
        {
            buffer[0] = BinInt2;
            BinaryPrimitives.WriteUInt16LittleEndian(buffer[1..], (ushort)value);
            s.Write(buffer[..3]);
        }
        else
        {
            buffer[0] = BinInt;
            BinaryPrimitives.WriteInt32LittleEndian(buffer[1..], value);
            s.Write(buffer[..5]);
        }
    }
}
