using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using MiniCPM4.Checkpoints;
using NUnit.Framework;

namespace MiniCPM4.Tests.Checkpoints;

/// <summary>
/// Feeds ≥ 1,000 corrupted variants of a small valid checkpoint's safetensors file to <see cref="Checkpoint.Open"/>:
/// each must either open (some mutations leave the file valid) or throw <see cref="CheckpointException"/>, and no
/// file handle, mapping or <see cref="SafetensorsFile"/> may outlive the call.
/// </summary>
[NonParallelizable]
public class CorruptionFuzzTests : TempDirTest
{
    private const int Iterations = 1200;

    [Test]
    public void RandomCorruptions_OnlyEverThrowCheckpointException_AndLeakNothing()
    {
        string path = CheckpointFixtures.WriteMicro(Dir, CheckpointFixtures.MicroConfig(layers: 2));
        byte[] original = File.ReadAllBytes(path);
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(original);
        string headerJson = Encoding.UTF8.GetString(original, 8, headerLength);
        byte[] data = original[(8 + headerLength)..];

        var rng = new Random(20240601);
        int baselineLive = SafetensorsFile.LiveCount;
        int opened = 0, rejected = 0;
        var kinds = new int[6];
        bool linux = OperatingSystem.IsLinux();
        if (linux)
        {
            // The leak check below must be able to see an open mapping.
            var probe = SafetensorsFile.Open(path);
            Assert.That(File.ReadAllText("/proc/self/maps"), Does.Contain(path));
            Assert.That(SafetensorsFile.LiveCount, Is.EqualTo(baselineLive + 1));
            probe.Dispose();
            AssertNotOpen(path, -1, "probe");
        }

        for (int iter = 0; iter < Iterations; iter++)
        {
            int kind = iter % 6;
            kinds[kind]++;
            var (bytes, description) = kind switch
            {
                0 => Truncate(original, rng),
                1 => FlipHeaderBytes(original, headerLength, rng),
                2 => RandomHeaderLength(original, headerLength, rng),
                3 => BogusOffsets(headerJson, data, rng),
                4 => BogusFields(headerJson, data, rng),
                _ => FlipAnywhere(original, rng),
            };
            File.WriteAllBytes(path, bytes);
            try
            {
                using var ck = Checkpoint.Open(Dir);
                foreach (var t in ck.Tensors) _ = t.GetBytes().Length; // touch every tensor's span
                opened++;
            }
            catch (CheckpointException e)
            {
                Assert.That(e.Message, Does.Contain(Dir),
                    $"iteration {iter} ({description}): message must name the file");
                rejected++;
            }
            catch (Exception e)
            {
                Assert.Fail(
                    $"iteration {iter} ({description}) threw {e.GetType().Name} instead of CheckpointException: {e}");
            }

            Assert.That(SafetensorsFile.LiveCount, Is.EqualTo(baselineLive),
                $"iteration {iter} ({description}) leaked a SafetensorsFile");
            if (linux) AssertNotOpen(path, iter, description);
        }

        TestContext.Out.WriteLine($"{Iterations} mutations: {opened} opened, {rejected} rejected");
        Assert.That(rejected, Is.GreaterThan(Iterations / 2));
        Assert.That(opened, Is.GreaterThan(0), "byte flips in the data section leave the file valid");
    }

    /// <summary>Linux: neither a file descriptor nor a memory mapping of <paramref name="path"/> survives.</summary>
    private static void AssertNotOpen(string path, int iter, string description)
    {
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(fd).LinkTarget;
            }
            catch (IOException)
            {
                continue; // the descriptor used for the enumeration itself, or one closed meanwhile
            }
            if (target != null && target.StartsWith(path, StringComparison.Ordinal))
                Assert.Fail($"iteration {iter} ({description}) leaked a file descriptor on {target}");
        }
        if (File.ReadAllText("/proc/self/maps").Contains(path, StringComparison.Ordinal))
            Assert.Fail($"iteration {iter} ({description}) leaked a memory mapping of {path}");
    }

    private static (byte[], string) Truncate(byte[] original, Random rng)
    {
        int len = rng.Next(original.Length);
        return (original[..len], $"truncated to {len}");
    }

    private static (byte[], string) FlipHeaderBytes(byte[] original, int headerLength, Random rng)
    {
        var b = (byte[])original.Clone();
        int n = rng.Next(1, 5);
        var sb = new StringBuilder("header flips");
        for (int i = 0; i < n; i++)
        {
            int pos = rng.Next(8 + headerLength);
            byte value = rng.Next(3) switch
            {
                0 => (byte)(b[pos] ^ (1 << rng.Next(8))),
                1 => (byte)"{}[],:\"0123456789-. e"[rng.Next(21)],
                _ => (byte)rng.Next(256),
            };
            b[pos] = value;
            sb.Append($" @{pos}={value}");
        }
        return (b, sb.ToString());
    }

    private static (byte[], string) RandomHeaderLength(byte[] original, int headerLength, Random rng)
    {
        var b = (byte[])original.Clone();
        ulong value = rng.Next(7) switch
        {
            0 => (ulong)rng.NextInt64() * 2 + (ulong)rng.Next(2),
            1 => (ulong)rng.Next(2 * headerLength),
            2 => (ulong)(headerLength + rng.Next(-16, 17)),
            3 => ulong.MaxValue - (ulong)rng.Next(16),
            4 => 1UL << rng.Next(64),
            5 => (ulong)rng.Next(16),
            _ => (ulong)(original.Length - 8 + rng.Next(-4, 5)),
        };
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return (b, $"header length {value}");
    }

    private static byte[] Assemble(JsonObject header, byte[] data, Random rng, out ulong lengthWritten)
    {
        var text = Encoding.UTF8.GetBytes(header.ToJsonString());
        int pad = rng.Next(2) == 0 ? (8 - text.Length % 8) % 8 : rng.Next(4);
        var bytes = new byte[8 + text.Length + pad + data.Length];
        lengthWritten = (ulong)(text.Length + pad);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, lengthWritten);
        text.CopyTo(bytes, 8);
        bytes.AsSpan(8 + text.Length, pad).Fill((byte)' ');
        data.CopyTo(bytes, 8 + text.Length + pad);
        return bytes;
    }

    private static readonly JsonNode?[] Garbage =
    {
        null, -1, -9223372036854775807L, 9223372036854775807L, ulong.MaxValue, 1.5, 1e300, "7", true,
        new JsonArray(), new JsonObject(), 0, int.MaxValue, 4611686018427387904L,
    };

    private static JsonNode? Pick(Random rng) => Garbage[rng.Next(Garbage.Length)]?.DeepClone();

    private static (byte[], string) BogusOffsets(string headerJson, byte[] data, Random rng)
    {
        var header = JsonNode.Parse(headerJson)!.AsObject();
        var names = header.Select(p => p.Key).Where(k => k != "__metadata__").ToList();
        string name = names[rng.Next(names.Count)];
        var tensor = header[name]!.AsObject();
        var offs = tensor["data_offsets"]!.AsArray();
        long begin = offs[0]!.GetValue<long>(), end = offs[1]!.GetValue<long>();
        string other = names[rng.Next(names.Count)];
        var otherOffs = header[other]!["data_offsets"]!.AsArray();
        JsonNode newOffsets = rng.Next(8) switch
        {
            0 => new JsonArray(end, begin),
            1 => new JsonArray(begin + rng.Next(-8, 9), end + rng.Next(-8, 9)),
            2 => new JsonArray(otherOffs[0]!.GetValue<long>(), otherOffs[0]!.GetValue<long>() + (end - begin)),
            3 => new JsonArray(rng.NextInt64(), rng.NextInt64()),
            4 => new JsonArray(begin, data.Length + rng.Next(1, 1000)),
            5 => new JsonArray(Pick(rng), Pick(rng)),
            6 => new JsonArray(begin),
            _ => new JsonArray(begin, end, end),
        };
        tensor["data_offsets"] = newOffsets;
        var bytes = Assemble(header, data, rng, out _);
        return (bytes, $"data_offsets of {name} = {newOffsets.ToJsonString()}");
    }

    private static (byte[], string) BogusFields(string headerJson, byte[] data, Random rng)
    {
        var header = JsonNode.Parse(headerJson)!.AsObject();
        var names = header.Select(p => p.Key).Where(k => k != "__metadata__").ToList();
        string name = names[rng.Next(names.Count)];
        var tensor = header[name]!.AsObject();
        string what;
        switch (rng.Next(7))
        {
            case 0:
                string[] dtypes = { "F32", "F16", "BF16", "I32", "U8", "F64", "Q4_0", "", "f32", "F8_E5M2" };
                tensor["dtype"] = dtypes[rng.Next(dtypes.Length)];
                what = "dtype " + tensor["dtype"];
                break;
            case 1:
                var shape = new JsonArray();
                int dims = rng.Next(4);
                for (int i = 0; i < dims; i++) shape.Add(rng.Next(3) == 0 ? Pick(rng) : rng.Next(0, 20));
                tensor["shape"] = shape;
                what = "shape " + shape.ToJsonString();
                break;
            case 2:
                string field = new[] { "dtype", "shape", "data_offsets" }[rng.Next(3)];
                tensor.Remove(field);
                what = "removed " + field;
                break;
            case 3:
                header[name] = Pick(rng);
                what = "tensor replaced by " + (header[name]?.ToJsonString() ?? "null");
                break;
            case 4:
                header["__metadata__"] = rng.Next(2) == 0 ? new JsonObject { ["x"] = Pick(rng) } : Pick(rng);
                what = "metadata " + (header["__metadata__"]?.ToJsonString() ?? "null");
                break;
            case 5:
                header.Remove(name);
                what = "removed tensor " + name;
                break;
            default:
                JsonNode deep = 1;
                for (int i = 0; i < 100; i++) deep = new JsonArray(deep);
                tensor["extra"] = deep;
                what = "deeply nested extra field";
                break;
        }
        var bytes = Assemble(header, data, rng, out _);
        return (bytes, $"{name}: {what}");
    }

    private static (byte[], string) FlipAnywhere(byte[] original, Random rng)
    {
        var b = (byte[])original.Clone();
        int pos = rng.Next(b.Length);
        b[pos] ^= (byte)(1 << rng.Next(8));
        return (b, $"bit flip at {pos}");
    }
}
