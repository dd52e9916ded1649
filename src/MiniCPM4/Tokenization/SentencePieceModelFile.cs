using System.Text;

namespace MiniCPM4.Tokenization;

/// <summary>SentencePiece piece types (ModelProto.SentencePiece.Type).</summary>
internal enum PieceType : byte
{
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>
/// The parts of a SentencePiece <c>ModelProto</c> that Microsoft.ML.Tokenizers does not expose publicly:
/// every piece's score and type (needed for a correct BPE merge order) and the unknown-token surface.
/// </summary>
/// <remarks>
/// A deliberately small protobuf reader: the model file may come from anywhere, so every length is checked against
/// the bytes that remain, unknown fields are skipped, and any inconsistency is an <see cref="InvalidDataException"/>.
/// Only what is needed is decoded:
/// ModelProto { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2; NormalizerSpec normalizer_spec = 3; }
/// SentencePiece { string piece = 1; float score = 2; Type type = 3 [default NORMAL]; }
/// TrainerSpec { string unk_surface = 44 [default " \u2047 "]; }
/// Everything else (model type, normalizer, special ids, byte fallback) is read and validated by the library.
/// </remarks>
internal sealed class SentencePieceModelFile
{
    public const string DefaultUnknownSurface = " \u2047 ";

    public required string[] Pieces { get; init; }
    public required float[] Scores { get; init; }
    public required PieceType[] Types { get; init; }
    public string UnknownSurface { get; init; } = DefaultUnknownSurface;

    private const int WireVarint = 0, WireFixed64 = 1, WireLengthDelimited = 2, WireFixed32 = 5;

    public static SentencePieceModelFile Parse(ReadOnlySpan<byte> data)
    {
        var pieces = new List<string>();
        var scores = new List<float>();
        var types = new List<PieceType>();
        string unkSurface = DefaultUnknownSurface;

        var reader = new ProtoReader(data);
        while (reader.TryReadTag(out int field, out int wire))
        {
            if (field == 1 && wire == WireLengthDelimited)
            {
                var (piece, score, type) = ParsePiece(reader.ReadLengthDelimited(), pieces.Count);
                pieces.Add(piece);
                scores.Add(score);
                types.Add(type);
            }
            else if (field == 2 && wire == WireLengthDelimited)
            {
                var trainer = new ProtoReader(reader.ReadLengthDelimited());
                while (trainer.TryReadTag(out int tf, out int tw))
                {
                    if (tf == 44 && tw == WireLengthDelimited)
                        unkSurface = DecodeUtf8(trainer.ReadLengthDelimited(), "trainer_spec.unk_surface");
                    else
                        trainer.Skip(tw);
                }
            }
            else
            {
                reader.Skip(wire);
            }
        }

        if (pieces.Count == 0)
            throw new InvalidDataException("The SentencePiece model has no pieces.");

        return new SentencePieceModelFile
        {
            Pieces = pieces.ToArray(),
            Scores = scores.ToArray(),
            Types = types.ToArray(),
            UnknownSurface = unkSurface,
        };
    }

    private static (string Piece, float Score, PieceType Type) ParsePiece(ReadOnlySpan<byte> data, int index)
    {
        string? piece = null;
        float score = 0;
        var type = PieceType.Normal;
        var reader = new ProtoReader(data);
        while (reader.TryReadTag(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == WireLengthDelimited:
                    piece = DecodeUtf8(reader.ReadLengthDelimited(), $"piece #{index}");
                    break;
                case 2 when wire == WireFixed32:
                    score = BitConverter.UInt32BitsToSingle(reader.ReadFixed32());
                    break;
                case 3 when wire == WireVarint:
                    ulong t = reader.ReadVarint();
                    if (t is < 1 or > 6)
                        throw new InvalidDataException($"SentencePiece model: piece #{index} has an unknown type {t}.");
                    type = (PieceType)t;
                    break;
                default:
                    reader.Skip(wire);
                    break;
            }
        }

        if (string.IsNullOrEmpty(piece))
            throw new InvalidDataException($"SentencePiece model: piece #{index} is empty.");
        return (piece, score, type);
    }

    private static readonly UTF8Encoding StrictUtf8 =
        new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static string DecodeUtf8(ReadOnlySpan<byte> bytes, string what)
    {
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidDataException($"SentencePiece model: {what} is not valid UTF-8.");
        }
    }

    /// <summary>Minimal bounded protobuf wire-format reader.</summary>
    private ref struct ProtoReader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;

        public bool TryReadTag(out int field, out int wire)
        {
            if (_pos >= _data.Length)
            {
                field = wire = 0;
                return false;
            }

            ulong tag = ReadVarint();
            wire = (int)(tag & 7);
            ulong f = tag >> 3;
            if (f == 0 || f > int.MaxValue)
                throw Malformed("invalid field number");
            field = (int)f;
            return true;
        }

        public ulong ReadVarint()
        {
            ulong result = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= _data.Length)
                    throw Malformed("truncated varint");
                byte b = _data[_pos++];
                result |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0)
                    return result;
            }

            throw Malformed("varint longer than 10 bytes");
        }

        public uint ReadFixed32()
        {
            if (_data.Length - _pos < 4)
                throw Malformed("truncated fixed32");
            uint v = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(_data.Slice(_pos, 4));
            _pos += 4;
            return v;
        }

        public ReadOnlySpan<byte> ReadLengthDelimited()
        {
            ulong len = ReadVarint();
            if (len > (ulong)(_data.Length - _pos))
                throw Malformed("a length runs past the end of the data");
            var slice = _data.Slice(_pos, (int)len);
            _pos += (int)len;
            return slice;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case WireVarint:
                    ReadVarint();
                    break;
                case WireFixed64:
                    if (_data.Length - _pos < 8)
                        throw Malformed("truncated fixed64");
                    _pos += 8;
                    break;
                case WireLengthDelimited:
                    ReadLengthDelimited();
                    break;
                case WireFixed32:
                    ReadFixed32();
                    break;
                default:
                    // Groups (3/4) are not used by sentencepiece_model.proto; 6/7 are invalid.
                    throw Malformed($"unsupported wire type {wire}");
            }
        }

        private static InvalidDataException Malformed(string what) =>
            new($"The SentencePiece model is not a valid ModelProto: {what}.");
    }
}
