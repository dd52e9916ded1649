using System.Text;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Tests.Tokenization;

/// <summary>
/// A deliberately simple, quadratic statement of SentencePiece's BPE encoding, used as an independent reference:
/// normalize (dummy prefix, spaces as U+2581), split into characters, then repeatedly merge the adjacent pair whose
/// merged piece is a NORMAL/USER_DEFINED/UNUSED piece with the highest score (leftmost on ties), and finally turn
/// unknown pieces into byte-fallback ids. With <c>rightmostOnTies</c> it reproduces the tie order of
/// Microsoft.ML.Tokenizers 2.0.1 instead.
/// </summary>
internal sealed class NaiveSentencePieceBpe
{
    private readonly Dictionary<string, int> _pieces = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _all = new(StringComparer.Ordinal);
    private readonly float[] _scores;

    public NaiveSentencePieceBpe(byte[] model)
    {
        var file = SentencePieceModelFile.Parse(model);
        _scores = file.Scores;
        for (int i = 0; i < file.Pieces.Length; i++)
        {
            _all[file.Pieces[i]] = i;
            if (file.Types[i] is PieceType.Normal or PieceType.UserDefined or PieceType.Unused)
                _pieces[file.Pieces[i]] = i;
        }
    }

    public int[] Encode(string text, bool rightmostOnTies = false)
    {
        if (text.Length == 0)
            return [];
        string normalized = "\u2581" + text.Replace(' ', '\u2581');

        var symbols = new List<string>();
        for (int i = 0; i < normalized.Length; i++)
        {
            int len = char.IsHighSurrogate(normalized[i]) && i + 1 < normalized.Length ? 2 : 1;
            symbols.Add(normalized.Substring(i, len));
            i += len - 1;
        }

        while (true)
        {
            int best = -1;
            float bestScore = float.NegativeInfinity;
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                if (!_pieces.TryGetValue(symbols[i] + symbols[i + 1], out int id))
                    continue;
                float score = _scores[id];
                if (best < 0 || score > bestScore || (rightmostOnTies && score == bestScore))
                {
                    best = i;
                    bestScore = score;
                }
            }

            if (best < 0)
                break;
            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }

        var ids = new List<int>();
        foreach (string symbol in symbols)
        {
            if (_pieces.TryGetValue(symbol, out int id))
                ids.Add(id);
            else
                ids.AddRange(Encoding.UTF8.GetBytes(symbol).Select(b => _all[$"<0x{b:X2}>"]));
        }

        return ids.ToArray();
    }
}
