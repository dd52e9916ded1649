using System.CommandLine;
using System.Text;

namespace MiniCPM4.Cli;

/// <summary>`minicpm4 logits`: write the logits at every position as a float32 NumPy array [n, vocab].</summary>
internal static class LogitsCommand
{
    private static readonly Option<string> Tokens =
        new("--tokens") { Description = "Comma-separated token ids", Required = true };
    private static readonly Option<string> Out = new("--out") { Description = "Output .npy file", Required = true };
    private static readonly Option<string> Mode =
        new("--mode") { Description = "prefill (all at once) or decode (one at a time)", DefaultValueFactory = _ =>
        "prefill" };

    public static Command Create()
    {
        var command = new Command("logits", "Write the logits of every position to a .npy file");
        Cli.AddModelOptions(command);
        command.Options.Add(Tokens);
        command.Options.Add(Out);
        command.Options.Add(Mode);
        command.SetAction((parse, ct) => Cli.Guard(parse, () => RunAsync(parse, ct)));
        return command;
    }

    private static async Task RunAsync(ParseResult parse, CancellationToken ct)
    {
        var ids = ParseIds(parse.GetValue(Tokens)!);
        var mode = parse.GetValue(Mode)!;
        if (mode is not ("prefill" or "decode")) throw new UsageException(
            $"unknown --mode '{mode}' (expected prefill or decode)");
        using var model = await Cli.LoadModelAsync(parse, ct);
        foreach (var id in ids)
            if (id < 0 || id >= model.Config.VocabSize)
                throw new UsageException($"token id {id} is outside the vocabulary [0, {model.Config.VocabSize})");
        var sessionOptions = Cli.SessionOptionsFrom(parse);
        if (sessionOptions.ContextLength == 0)
            sessionOptions =
                sessionOptions with { ContextLength =
                Math.Min(model.Config.MaxPositionEmbeddings, Math.Max(ids.Length, 1)) };
        using var session = Cli.CreateSession(parse, model, sessionOptions);
        int vocab = model.Config.VocabSize;
        float[] logits = await Task.Run(() =>
        {
            if (mode == "prefill") return session.PrefillWithLogits(ids, allPositions: true, ct);
            var all = new float[checked(ids.Length * vocab)];
            for (int i = 0; i < ids.Length; i++)
            {
                ct.ThrowIfCancellationRequested();
                session.Decode(ids[i]).CopyTo(all, i * vocab);
            }
            return all;
        }, ct);
        NpyWriter.WriteFloat32(parse.GetValue(Out)!, logits, ids.Length, vocab);
    }

    private static int[] ParseIds(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new UsageException("--tokens needs at least one id");
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ids[i])) throw new UsageException(
                $"--tokens: '{parts[i]}' is not an integer");
        return ids;
    }
}

/// <summary>Writes NumPy .npy version 1.0 files (little-endian float32, C order).</summary>
internal static class NpyWriter
{
    public static void WriteFloat32(string path, ReadOnlySpan<float> data, int rows, int cols)
    {
        if ((long)rows * cols != data.Length) throw new ArgumentException("shape does not match the data length");
        var header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}";
        int total = 10 + header.Length + 1;
        header += new string(' ', (64 - total % 64) % 64) + "\n";
        using var stream = File.Create(path);
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        stream.Write(BitConverter.GetBytes((ushort)header.Length));
        stream.Write(Encoding.ASCII.GetBytes(header));
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("big-endian hosts are not supported");
        stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data));
    }
}
