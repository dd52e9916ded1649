using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using MiniCPM4.Speculative;
using MiniCPM4.Tests.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Speculative;

/// <summary>
/// FR-Spec token-id files: the torch.save / .npy / .safetensors readers and writers, validation, building from a
/// corpus, and the safe pickle reader against malicious and malformed input.
/// </summary>
/// <remarks>
/// The fixtures in TestData/FrSpec were written by real PyTorch 1.13 and NumPy (Debian python3-torch, see
/// make_frspec_fixtures.py). The reverse direction — <c>torch.load(f, weights_only=True)</c> reading a file that
/// <see cref="FrSpecVocabulary.Save"/> wrote — was checked by hand with the same PyTorch (the list came back
/// equal). What keeps that true without PyTorch at test time: our data.pkl is byte-identical to torch.save's for the
/// same list (checked below against the committed torch-made fixtures), and the zip records are those torch reads.
/// </remarks>
public class FrSpecVocabularyTests : TempDirTest
{
    private const int Vocab = 32002;
    private static readonly int[] Eos = [32001, 2];
    private static readonly int[] Freq8 = [29871, 13, 278, 29889, 29892, 310, 322, 32001];

    private static string Fixture(string name) =>
        Path.Combine(TestContext.CurrentContext.TestDirectory, "TestData", "FrSpec", name);

    private string TempFile(string name) => Path.Combine(Dir, name);

    // ------------------------------------------------------------------------------------------------ fixtures

    [Test]
    public void TorchMadeFile_Loads()
    {
        var v = FrSpecVocabulary.Load(Fixture("freq_8.pt"), Vocab, Eos, 8);
        Assert.That(v.TokenIds, Is.EqualTo(Freq8));
        Assert.That(v.Count, Is.EqualTo(8));
        Assert.That(v.AsSpan().ToArray(), Is.EqualTo(Freq8));
    }

    [Test]
    public void Directory_ResolvesFreqFile()
    {
        string dir = Path.GetDirectoryName(Fixture("freq_8.pt"))!;
        Assert.That(FrSpecVocabulary.Load(dir, Vocab, Eos, 8).TokenIds, Is.EqualTo(Freq8));
        Assert.That(FrSpecVocabulary.Load(dir, Vocab, Eos).TokenIds, Is.EqualTo(Freq8), "the only freq_*.pt");
        var e = Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(dir, Vocab, Eos, 16))!;
        Assert.That(e.Message, Does.Contain("no freq_16.pt").And.Contain("freq_8.pt").And.Contain(dir));
    }

    [Test]
    public void Directory_WithSeveralFreqFilesNeedsTheSize()
    {
        var a = FrSpecVocabulary.FromTokenIds(Freq8, Vocab, Eos);
        var b = FrSpecVocabulary.FromTokenIds(Freq8[4..], Vocab, Eos);
        a.Save(TempFile("freq_8.pt"));
        b.Save(TempFile("freq_4.pt"));
        var e = Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(Dir, Vocab, Eos))!;
        Assert.That(e.Message, Does.Contain("several").And.Contain("freq_4.pt, freq_8.pt"));
        Assert.That(FrSpecVocabulary.Load(Dir, Vocab, Eos, 4).TokenIds, Is.EqualTo(Freq8[4..]));

        string empty = Directory.CreateDirectory(TempFile("empty")).FullName;
        Assert.That(Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(empty, Vocab, Eos))!.Message,
            Does.Contain("no freq_<r>.pt"));
        Assert.That(
            Assert.Throws<FrSpecFormatException>(() =>
            FrSpecVocabulary.Load(TempFile("missing.pt"), Vocab, Eos))!.Message,
            Does.Contain("does not exist").And.Contain("missing.pt"));
    }

    [Test]
    public void NumpyMadeFile_Loads()
    {
        Assert.That(FrSpecVocabulary.Load(Fixture("freq_8.npy"), Vocab, Eos, 8).TokenIds, Is.EqualTo(Freq8));
    }

    [Test]
    public void TorchMadeProtocol4File_WithFramesAndBatches_Reads()
    {
        int[] expected =
            File.ReadAllText(Fixture("ints_1500_protocol4.txt")).Trim().Split(',').Select(int.Parse).ToArray();
        Assert.That(FrSpecVocabulary.ReadTokenIds(Fixture("ints_1500_protocol4.pt")), Is.EqualTo(expected));
    }

    [Test]
    public void TorchMadeTensorFile_IsRejectedWithAHint()
    {
        var e = Assert.Throws<FrSpecFormatException>(() =>
            FrSpecVocabulary.Load(Fixture("tensor_not_list.pt"), Vocab, Eos))!;
        Assert.That(e.Message, Does.Contain("tensor storage").And.Contain("tolist()"));
        Assert.That(e.FilePath, Is.EqualTo(Fixture("tensor_not_list.pt")));
    }

    // ------------------------------------------------------------------------------------------------ writing

    private static int[] SampleIds(int count, int seed)
    {
        // Values in all three BININT ranges (< 256, < 65536, larger), unique, EOS last.
        var rng = new Random(seed);
        var set = new HashSet<int> { 32001 };
        var ids = new List<int>();
        while (ids.Count < count - 1)
        {
            // (At most 200 draws from the small range: it holds only 256 ids.)
            int id = (ids.Count % 3) switch
            {
                0 when ids.Count < 600 => rng.Next(256),
                1 => rng.Next(256, 65536),
                _ => rng.Next(65536, 100_000),
            };
            if (set.Add(id)) ids.Add(id);
        }
        ids.Add(32001);
        return ids.ToArray();
    }

    [TestCase(".pt", 1)]
    [TestCase(".pt", 2)]
    [TestCase(".pt", 1000)]
    [TestCase(".pt", 1001)]
    [TestCase(".pt", 2500)]
    [TestCase(".npy", 1)]
    [TestCase(".npy", 2500)]
    [TestCase(".safetensors", 1)]
    [TestCase(".safetensors", 2500)]
    public void SaveThenLoad_RoundTrips(string extension, int count)
    {
        int[] ids = SampleIds(count, count);
        var v = FrSpecVocabulary.FromTokenIds(ids, 100_000, Eos, count);
        string path = TempFile("freq_" + count + extension);
        v.Save(path);
        Assert.That(FrSpecVocabulary.Load(path, 100_000, Eos, count).TokenIds, Is.EqualTo(ids));

        // The format comes from the content, not the name.
        string renamed = TempFile("renamed.bin");
        File.Copy(path, renamed);
        Assert.That(FrSpecVocabulary.Load(renamed, 100_000, Eos, count).TokenIds, Is.EqualTo(ids));
        Assert.That(Directory.GetFiles(Dir, "*.tmp-*"), Is.Empty, "no temporary file left behind");
    }

    [Test]
    public void SavedTorchFile_HasTorchLayout_AndTorchsExactPickle()
    {
        string path = TempFile("freq_8.pt");
        FrSpecVocabulary.FromTokenIds(Freq8, Vocab, Eos).Save(path);
        using var ours = ZipFile.OpenRead(path);
        Assert.That(ours.Entries.Select(e => e.FullName),
            Is.EqualTo(
                new[] { "freq_8/data.pkl", "freq_8/byteorder", "freq_8/version", "freq_8/.data/serialization_id" }));
        Assert.That(Read(ours, "freq_8/version"), Is.EqualTo("3\n"u8.ToArray()));
        Assert.That(Read(ours, "freq_8/byteorder"), Is.EqualTo("little"u8.ToArray()));
        Assert.That(Encoding.ASCII.GetString(Read(ours, "freq_8/.data/serialization_id")), Does.Match("^[0-9]{40}$"));
        foreach (var entry in ours.Entries) Assert.That(entry.CompressedLength, Is.EqualTo(entry.Length),
            $"{entry.FullName} is stored");

        // The pickle is byte for byte what torch.save wrote for the same list.
        using var torch = ZipFile.OpenRead(Fixture("freq_8.pt"));
        Assert.That(Read(ours, "freq_8/data.pkl"), Is.EqualTo(Read(torch, "freq_8/data.pkl")));

        // Saving is deterministic.
        string again = TempFile("again/freq_8.pt");
        Directory.CreateDirectory(Path.GetDirectoryName(again)!);
        FrSpecVocabulary.FromTokenIds(Freq8, Vocab, Eos).Save(again);
        Assert.That(File.ReadAllBytes(again), Is.EqualTo(File.ReadAllBytes(path)));

        static byte[] Read(ZipArchive zip, string name)
        {
            using var s = zip.GetEntry(name)!.Open();
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            return ms.ToArray();
        }
    }

    [Test]
    public void PickleWriter_MatchesPythonsBatching()
    {
        // Python's C pickler: no items -> nothing; one -> APPEND; otherwise MARK ... APPENDS batches of 1000, the
        // last one possibly of a single item.
        Assert.That(PickleIntListReader.Write([]), Is.EqualTo(B(@"\x80\x02]q\x00.")));
        Assert.That(PickleIntListReader.Write([7]), Is.EqualTo(B(@"\x80\x02]q\x00K\x07a.")));
        Assert.That(PickleIntListReader.Write([1, 300, 70000]),
            Is.EqualTo(B(@"\x80\x02]q\x00(K\x01M\x2c\x01J\x70\x11\x01\x00e.")));
        byte[] ones = [.. Enumerable.Repeat((byte[])[(byte)'K', 1], 1000).SelectMany(x => x)];
        Assert.That(PickleIntListReader.Write(Enumerable.Repeat(1, 1001).ToArray()),
            Is.EqualTo(B(@"\x80\x02]q\x00(", ones, "e(K", 1, "e.")));
        Assert.That(PickleIntListReader.Read(PickleIntListReader.Write(Enumerable.Repeat(1, 1001).ToArray())),
            Has.Length.EqualTo(1001));
    }

    // ------------------------------------------------------------------------------------------------ building

    [Test]
    public void Build_RanksByCount_TiesToLowerId_EosLast()
    {
        // counts: 5 x3, 7 x2, 9 x2, 3 x1, 11 x1, EOS 2 x5 (excluded from the ranking), 32001 never.
        int[][] corpus = [[9, 5, 2, 2, 7], [5, 11, 2, 9], [3, 7, 5, 2, 2]];
        var v = FrSpecVocabularyBuilder.Build(corpus, 5, Vocab, [2, 32001]);
        Assert.That(v.TokenIds, Is.EqualTo(new[] { 5, 7, 9, 3, 2 }));
        Assert.That(v.Count, Is.EqualTo(5));
        Assert.That(v.TokenIds.Distinct().Count(), Is.EqualTo(v.Count));

        // The first EOS id goes last even when the corpus never has it; the other EOS ids are left out.
        var w = FrSpecVocabularyBuilder.Build(corpus, 4, Vocab, [32001, 2]);
        Assert.That(w.TokenIds, Is.EqualTo(new[] { 5, 7, 9, 32001 }));
        Assert.That(FrSpecVocabularyBuilder.Build(corpus, 1, Vocab, [32001, 2]).TokenIds, Is.EqualTo(new[] { 32001 }));
    }

    [Test]
    public void Build_WithTooFewDistinctTokens_GivesAShorterList()
    {
        int[][] corpus = [[4, 4, 8, 2]];
        var v = FrSpecVocabularyBuilder.Build(corpus, 10, Vocab, Eos);
        Assert.That(v.TokenIds, Is.EqualTo(new[] { 4, 8, 32001 }), "ids never seen are not invented");
    }

    [Test]
    public void Build_FromCounter_AndCoverage()
    {
        var counter = new TokenFrequencyCounter(Vocab);
        counter.Add([1, 1, 1, 1, 6, 6, 6, 8, 8, 32001]);
        counter.Add(9);
        Assert.That(counter.TotalTokens, Is.EqualTo(11));
        Assert.That(counter.DistinctTokens, Is.EqualTo(5));
        Assert.That(counter[1], Is.EqualTo(4));
        var v = FrSpecVocabularyBuilder.Build(counter, 3, Eos);
        Assert.That(v.TokenIds, Is.EqualTo(new[] { 1, 6, 32001 }));
        Assert.That(counter.Coverage(v.TokenIds), Is.EqualTo(8 / 11.0).Within(1e-12));
        Assert.That(counter.Coverage([1, 1, 1]), Is.EqualTo(4 / 11.0).Within(1e-12), "each id once");
        Assert.Throws<ArgumentOutOfRangeException>(() => counter.Add(Vocab));
        Assert.Throws<ArgumentOutOfRangeException>(() => counter.Add(-1));
    }

    [Test]
    public void Build_RejectsBadArguments()
    {
        int[][] corpus = [[1, 2, 3]];
        Assert.Throws<ArgumentOutOfRangeException>(() => FrSpecVocabularyBuilder.Build(corpus, 0, Vocab, Eos));
        Assert.Throws<ArgumentException>(() => FrSpecVocabularyBuilder.Build(corpus, 4, Vocab, []));
        Assert.Throws<ArgumentOutOfRangeException>(() => FrSpecVocabularyBuilder.Build(corpus, 4, Vocab, [Vocab]));
        Assert.Throws<ArgumentOutOfRangeException>(() => FrSpecVocabularyBuilder.Build([[Vocab]], 4, Vocab, Eos));
    }

    // ------------------------------------------------------------------------------------------------ validation

    /// <summary>Writes <paramref name="pickle"/> as the data.pkl of an otherwise well-formed torch zip.</summary>
    private string WriteTorchZip(string name, byte[] pickle, params (string Name, byte[] Content)[] extra)
    {
        string path = TempFile(name);
        using var fs = File.Create(path);
        using var zip = new ZipArchive(fs, ZipArchiveMode.Create);
        string archive = Path.GetFileNameWithoutExtension(name);
        foreach (
            var (entryName, content) in new[] { (archive + "/data.pkl", pickle) }.Concat(extra).Append(
            (archive + "/version", "3\n"u8.ToArray())))
        {
            using var s = zip.CreateEntry(entryName, CompressionLevel.NoCompression).Open();
            s.Write(content);
        }
        return path;
    }

    private static readonly object[] InvalidLists =
    [
        new object[] { new[] { 5, 6, 5, 32001 }, 4, "token id 5 appears twice (indexes 0 and 2)" },
        new object[] { new[] { 5, 32002, 32001 }, 3,
            "token id 32002 at index 1 is outside the model's vocabulary [0, 32002)" },
        new object[] { new[] { 5, -3, 32001 }, 3, "token id -3 at index 1 is outside" },
        new object[] { new[] { 5, 6, 7 }, 3, "none of the model's EOS token ids (32001, 2) is in the list" },
        new object[] { new[] { 5, 6, 32001 }, 4, "the list holds 3 token ids but the draft vocabulary size is 4" },
        new object[] { Array.Empty<int>(), null!, "the token-id list is empty" },
    ];

    [TestCaseSource(nameof(InvalidLists))]
    public void InvalidList_IsRejected_WithTheProblem(int[] ids, int? size, string problem)
    {
        string path = WriteTorchZip("freq_bad.pt", PickleIntListReader.Write(ids));
        var e = Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(path, Vocab, Eos, size))!;
        Assert.That(e.Message, Does.StartWith(path + ": ").And.Contain(problem));
        Assert.That(e.FilePath, Is.EqualTo(path));
        var a = Assert.Throws<ArgumentException>(() => FrSpecVocabulary.FromTokenIds(ids, Vocab, Eos, size))!;
        Assert.That(a.Message, Does.Contain(problem));
    }

    [Test]
    public void AnyOneEosIdIsEnough()
    {
        Assert.That(FrSpecVocabulary.FromTokenIds([4, 2], Vocab, Eos).Count, Is.EqualTo(2));
        Assert.That(FrSpecVocabulary.FromTokenIds([32001, 4], Vocab, Eos).Count, Is.EqualTo(2));
    }

    // ------------------------------------------------------------------------------------------------ hostile pickles

    private static byte[] B(params object[] parts)
    {
        var ms = new MemoryStream();
        foreach (var part in parts)
        {
            switch (part)
            {
                case string s: ms.Write(Unescape(s)); break;
                case byte b: ms.WriteByte(b); break;
                case int i: ms.WriteByte(checked((byte)i)); break;
                case byte[] a: ms.Write(a); break;
                default: throw new ArgumentException(part.GetType().Name);
            }
        }
        return ms.ToArray();
    }

    /// <summary>Bytes of a Python-style escaped string: \xHH (exactly two hex digits), \n, \\; other chars as
    /// Latin-1.</summary>
    private static byte[] Unescape(string s)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] != '\\')
            {
                bytes.Add(checked((byte)s[i]));
                continue;
            }
            char c = s[++i];
            if (c == 'x')
            {
                bytes.Add(Convert.ToByte(s.Substring(i + 1, 2), 16));
                i += 2;
            }
            else
            {
                bytes.Add(
                    c switch { 'n' => (byte)'\n', '\\' => (byte)'\\', _ =>
                    throw new ArgumentException($"escape \\{c}") });
            }
        }
        return bytes.ToArray();
    }

    private static byte[] ManyMemoEntries()
    {
        var parts = new List<object> { @"\x80\x02]" };
        for (int i = 0; i < PickleIntListReader.MaxMemoEntries + 1; i++)
        {
            var index = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(index, i);
            parts.Add("r");
            parts.Add(index);
        }
        parts.Add(".");
        return B([.. parts]);
    }

    private static readonly object[] HostilePickles =
    [
        new object[] { "GLOBAL os.system + REDUCE",
            B(@"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03."), "GLOBAL" },
        new object[] { "GLOBAL builtins.eval", B(@"cbuiltins\neval\n(S'1'\ntR."), "GLOBAL" },
        new object[] { "STACK_GLOBAL", B(@"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00\x93."), "STACK_GLOBAL" },
        new object[] { "strings for STACK_GLOBAL", B(@"\x80\x04\x8c\x02os\x8c\x06system\x93."), "SHORT_BINUNICODE" },
        new object[] { "REDUCE", B(@"\x80\x02](K\x01eR."), "REDUCE" },
        new object[] { "BUILD", B(@"\x80\x02](K\x01e}b."), "EMPTY_DICT" },
        new object[] { "BUILD alone", B(@"\x80\x02]b."), "BUILD" },
        new object[] { "INST", B(@"\x80\x02(ios\nsystem\n."), "INST" },
        new object[] { "OBJ", B(@"\x80\x02](o."), "OBJ" },
        new object[] { "NEWOBJ", B(@"\x80\x02]]\x81."), "second list" },
        new object[] { "NEWOBJ alone", B(@"\x80\x02]\x81."), "NEWOBJ" },
        new object[] { "BINPERSID (a tensor)", B(@"\x80\x02](K\x01eQ."), "BINPERSID" },
        new object[] { "PERSID", B(@"\x80\x02P0\n."), "PERSID" },
        new object[] { "a dict", B(@"\x80\x02}q\x00(K\x01K\x02u."), "EMPTY_DICT" },
        new object[] { "a tuple", B(@"\x80\x02K\x01K\x02\x86."), "TUPLE2" },
        new object[] { "nested list by APPEND", B(@"\x80\x02]q\x00]q\x01a."), "second list" },
        new object[] { "nested list by APPENDS", B(@"\x80\x02](K\x01]e."), "second list" },
        new object[] { "list appended to itself", B(@"\x80\x02]q\x00h\x00a."), "nested lists are not supported" },
        new object[] { "a string item", B(@"\x80\x02]q\x00X\x01\x00\x00\x00aa."), "BINUNICODE" },
        new object[] { "a float item", B(@"\x80\x02]G?\xf0\x00\x00\x00\x00\x00\x00a."), "BINFLOAT" },
        new object[] { "None item", B(@"\x80\x02]Na."), "NONE" },
        new object[] { "True item", B(@"\x80\x02]\x88a."), "NEWTRUE" },
        new object[] { "huge LONG1", B(@"\x80\x02]\x8a\x09", new byte[9], "a."), "LONG1 integer of 9 bytes" },
        new object[] { "LONG1 beyond 32 bits", B(@"\x80\x02]\x8a\x08\x00\x00\x00\x00\x01\x00\x00\x00a."),
            "does not fit in 32 bits" },
        new object[] { "LONG1 length past the end", B(@"\x80\x02]\x8a\x04\x01\x02"), "truncated" },
        new object[] { "LONG4", B(@"\x80\x02]\x8b\xff\xff\xff\x7f"), "LONG4" },
        new object[] { "protocol-0 INT", B(@"]I1\na."), "INT" },
        new object[] { "memo index not defined", B(@"\x80\x02]q\x00h\x05a."), "memo index 5" },
        new object[] { "LONG_BINGET not defined", B(@"\x80\x02]q\x00j\xff\xff\xff\xffa."), "memo index 4294967295" },
        new object[] { "memo store on an empty stack", B(@"\x80\x02q\x00]."), "memo store with nothing on the stack" },
        new object[] { "too many memo entries", ManyMemoEntries(), "memo entries" },
        new object[] { "truncated BININT2", B(@"\x80\x02](K\x01M\x02"), "truncated" },
        new object[] { "truncated PROTO", B(@"\x80"), "truncated" },
        new object[] { "missing STOP", B(@"\x80\x02]q\x00(K\x01e"), "without a STOP" },
        new object[] { "trailing garbage", B(@"\x80\x02]q\x00(K\x01K\x02e.XYZ"), "3 trailing byte(s) after STOP" },
        new object[] { "open MARK at STOP", B(@"\x80\x02](K\x01."), "open MARK" },
        new object[] { "APPENDS without MARK", B(@"\x80\x02]K\x01e."), "APPENDS without a MARK" },
        new object[] { "APPEND without a list", B(@"\x80\x02K\x01K\x02a."), "not the list" },
        new object[] { "nested MARK", B(@"\x80\x02]((K\x01ee."), "MARK inside MARK" },
        new object[] { "an int, not a list", B(@"\x80\x02K\x05."), "holds an int" },
        new object[] { "two items at STOP", B(@"\x80\x02]K\x05."), "2 items on the stack" },
        new object[] { "protocol 6", B(@"\x80\x06]."), "protocol 6" },
        new object[] { "PROTO not first", B(@"]\x80\x02."), "PROTO is only allowed as the first opcode" },
        new object[] { "FRAME past the end", B(@"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00]."), "FRAME" },
        new object[] { "unknown opcode", B(@"\x80\x02]\xfe."), "0xfe" },
        new object[] { "empty pickle", Array.Empty<byte>(), "the pickle is empty" },
    ];

    [TestCaseSource(nameof(HostilePickles))]
    public void HostileOrMalformedPickle_IsRejected(string description, byte[] pickle, string problem)
    {
        string path = WriteTorchZip("freq_8.pt", pickle);
        var e = Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(path, Vocab, Eos), description)!;
        Assert.That(e.Message, Does.StartWith(path + ": ").And.Contain("data.pkl").And.Contain(problem), description);
        Assert.That(e.InnerException, Is.InstanceOf<InvalidDataException>());
    }

    [Test]
    public void PickleReader_BoundsTheListLength()
    {
        byte[] pickle = PickleIntListReader.Write([1, 2, 3, 4]);
        Assert.That(PickleIntListReader.Read(pickle, maxLength: 4), Has.Length.EqualTo(4));
        var e = Assert.Throws<InvalidDataException>(() => PickleIntListReader.Read(pickle, maxLength: 3))!;
        Assert.That(e.Message, Does.Contain("more than 3 items"));
        Assert.Throws<InvalidDataException>(() =>
            PickleIntListReader.Read(PickleIntListReader.Write([1, 2, 3, 4, 5, 6, 7, 8]), maxLength: 3));
    }

    [Test]
    public void PickleReader_AcceptsTheOptionalForms()
    {
        // Protocol 4 with FRAME and MEMOIZE, a memo read of an int, LONG1 (positive, negative, zero-length), no PROTO.
        byte[] p = B(@"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00]\x94(K\x07\x94h\x01\x8a\x02\x00\x01\x8a\x00e.");
        Assert.That(PickleIntListReader.Read(p), Is.EqualTo(new[] { 7, 7, 256, 0 }));
        Assert.That(PickleIntListReader.Read(B(@"]\x8a\x01\xffa.")), Is.EqualTo(new[] { -1 }));
        Assert.That(PickleIntListReader.Read(B(@"]q\x00.")), Is.Empty);
    }

    // ------------------------------------------------------------------------------------------------ hostile files

    [Test]
    public void ZipWithStorageEntry_IsRejected()
    {
        string path = WriteTorchZip("freq_8.pt", PickleIntListReader.Write(Freq8), ("freq_8/data/0", new byte[32]));
        Assert.That(Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(path, Vocab, Eos))!.Message,
            Does.Contain("tensor storage 'freq_8/data/0'"));
    }

    [Test]
    public void ZipWithTwoPickles_IsRejected()
    {
        string path =
            WriteTorchZip("freq_8.pt", PickleIntListReader.Write(Freq8),
            ("other/data.pkl", PickleIntListReader.Write(Freq8)));
        Assert.That(Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(path, Vocab, Eos))!.Message,
            Does.Contain("2 data.pkl entries"));
    }

    [Test]
    public void ZipWithoutPickle_IsRejected()
    {
        string path = TempFile("freq_8.pt");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create)) zip.CreateEntry("freq_8/version").Open().Dispose();
        Assert.That(Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(path, Vocab, Eos))!.Message,
            Does.Contain("no '<archive>/data.pkl' entry"));
    }

    [Test]
    public void ZipBomb_IsRejectedByItsDeclaredSize()
    {
        // 65 MiB of zeros deflate to about 64 KiB; the declared size alone must stop the reader.
        string path = TempFile("freq_8.pt");
        using (var fs = File.Create(path))
        using (var zip = new ZipArchive(fs, ZipArchiveMode.Create))
        {
            using var s = zip.CreateEntry("freq_8/data.pkl", CompressionLevel.SmallestSize).Open();
            var zeros = new byte[1 << 20];
            for (int i = 0; i < 65; i++) s.Write(zeros);
        }
        Assert.That(new FileInfo(path).Length, Is.LessThan(1 << 20));
        var e = Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(path, Vocab, Eos))!;
        Assert.That(e.Message, Does.Contain("declares 68157440 bytes uncompressed, over the 64 MiB limit"));
    }

    [Test]
    public void ZipEntryHoldingMoreThanItDeclares_IsRejected()
    {
        // A deflated data.pkl whose headers claim 16 bytes: the read stops at the declared size.
        string path = TempFile("freq_8.pt");
        byte[] pickle = PickleIntListReader.Write(Enumerable.Range(0, 5000).ToArray());
        using (var fs = File.Create(path))
        using (var zip = new ZipArchive(fs, ZipArchiveMode.Create))
        {
            using var s = zip.CreateEntry("freq_8/data.pkl", CompressionLevel.Optimal).Open();
            s.Write(pickle);
        }
        byte[] bytes = File.ReadAllBytes(path);
        PatchUInt32(bytes, "PK\x03\x04"u8, 22, 16);
        PatchUInt32(bytes, "PK\x01\x02"u8, 24, 16);
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.Load(path, Vocab, Eos))!;
        Assert.That(e.Message, Does.Contain("freq_8.pt"));

        static void PatchUInt32(byte[] data, ReadOnlySpan<byte> signature, int offset, uint value)
        {
            int at = data.AsSpan().IndexOf(signature);
            Assert.That(at, Is.GreaterThanOrEqualTo(0));
            BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(at + offset), value);
        }
    }

    private static readonly object[] BadFiles =
    [
        new object[] { "empty file", Array.Empty<byte>(), "the file is empty" },
        new object[] { "text", "hello, world\n"u8.ToArray(), "not an FR-Spec token-id file" },
        new object[] { "one byte", new byte[] { 0x50 }, "not an FR-Spec token-id file" },
        new object[] { "bare pickle", PickleIntListReader.Write([1, 2]), "bare pickle" },
        new object[] { "zip magic only", "PK\x03\x04"u8.ToArray(), "zip" },
        new object[] { "npy, big-endian", Npy("{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }", new byte[8]),
            "'>i4' is not supported" },
        new object[] { "npy, float", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", new byte[8]),
            "'<f4' is not supported" },
        new object[] { "npy, 2-D", Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 1), }", new byte[8]),
            "shape (2, 1)" },
        new object[] { "npy, truncated data",
            Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", new byte[8]), "truncated or trailing" },
        new object[] { "npy, trailing data",
            Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", new byte[8]), "truncated or trailing" },
        new object[] { "npy, int64 beyond 32 bits",
            Npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", BitConverter.GetBytes(1L << 40)),
            "does not fit in 32 bits" },
        new object[] { "npy, bad header",
            Npy("{'descr': '<i4', 'shape': (1,), 'evil': __import__('os'), }", new byte[4]), "malformed .npy header" },
        new object[] { "npy, header past the end", B(@"\x93NUMPY\x01\x00\xff\xff{"), "runs past the end" },
        new object[] { "npy, version 9", B(@"\x93NUMPY\x09\x00\x00\x00"), "version 9.0" },
        new object[] { "safetensors, F32",
            Safetensors("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8), "is F32" },
        new object[] { "safetensors, 2-D",
            Safetensors("{\"t\":{\"dtype\":\"I32\",\"shape\":[2,1],\"data_offsets\":[0,8]}}", 8), "shape [2, 1]" },
        new object[]
        {
            "safetensors, two tensors",
            Safetensors("{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}," +
                        "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8),
            "2 tensors (a, b)",
        },
        new object[] { "safetensors, bad offsets",
            Safetensors("{\"t\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8),
            "invalid safetensors file" },
    ];

    private static byte[] Npy(string header, byte[] data)
    {
        header += new string(' ', (64 - (10 + header.Length + 1) % 64) % 64) + "\n";
        var prefix = new byte[10];
        B(@"\x93NUMPY\x01\x00").CopyTo(prefix, 0);
        BinaryPrimitives.WriteUInt16LittleEndian(prefix.AsSpan(8), (ushort)header.Length);
        return [.. prefix, .. Encoding.ASCII.GetBytes(header), .. data];
    }

    private static byte[] Safetensors(string json, int dataBytes)
    {
        var prefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)json.Length);
        return [.. prefix, .. Encoding.ASCII.GetBytes(json), .. new byte[dataBytes]];
    }

    [TestCaseSource(nameof(BadFiles))]
    public void BadFile_IsRejected(string description, byte[] content, string problem)
    {
        string path = TempFile("freq_2.pt");
        File.WriteAllBytes(path, content);
        var e = Assert.Throws<FrSpecFormatException>(() => FrSpecVocabulary.ReadTokenIds(path), description)!;
        Assert.That(e.Message, Does.StartWith(path + ": ").And.Contain(problem), description);
    }

    [Test]
    public void RandomCorruptions_OnlyEverThrowFrSpecFormatException()
    {
        int[] ids = SampleIds(1200, 3);
        var v = FrSpecVocabulary.FromTokenIds(ids, 100_000, Eos);
        var originals = new[] { ".pt", ".npy", ".safetensors" }.Select(ext =>
        {
            string p = TempFile("orig" + ext);
            v.Save(p);
            return File.ReadAllBytes(p);
        }).Append(File.ReadAllBytes(Fixture("freq_8.pt"))).Append(File.ReadAllBytes(Fixture("ints_1500_protocol4.pt")))
            .ToArray();
        var rng = new Random(20250607);
        string path = TempFile("fuzz.pt");
        int loaded = 0, rejected = 0;
        for (int iter = 0; iter < 1500; iter++)
        {
            byte[] bytes = (byte[])originals[iter % originals.Length].Clone();
            switch (rng.Next(3))
            {
                case 0:
                    bytes = bytes[..rng.Next(bytes.Length)];
                    break;
                case 1:
                    for (int k = rng.Next(1, 4); k > 0; k--) bytes[rng.Next(bytes.Length)] ^= (byte)rng.Next(1, 256);
                    break;
                default:
                    // Corrupt the region where headers and the pickle's opcodes live.
                    int start = rng.Next(Math.Min(bytes.Length, 200));
                    for (int k = 0; k < 4 && start + k < bytes.Length; k++) bytes[start + k] = (byte)rng.Next(256);
                    break;
            }
            File.WriteAllBytes(path, bytes);
            try
            {
                FrSpecVocabulary.Load(path, 100_000, Eos);
                loaded++;
            }
            catch (FrSpecFormatException e)
            {
                Assert.That(e.Message, Does.StartWith(path + ": "));
                rejected++;
            }
            catch (Exception e)
            {
                Assert.Fail($"iteration {iter}: {e.GetType().Name}: {e.Message}");
            }
        }
        Assert.That(rejected, Is.GreaterThan(1000), $"loaded {loaded}");
    }
}
