using System.Text;

namespace MiniCPM4.BindingsGenerator;

/// <summary>A small unified-style line diff (LCS based; the files involved are a few hundred lines).</summary>
internal static class LineDiff
{
    public static string Unified(string oldText, string newText, string oldName, string newName, int context = 2,
        int maxLines = 200)
    {
        string[] a = SplitLines(oldText);
        string[] b = SplitLines(newText);

        // lcs[i, j] = length of the longest common subsequence of a[i..] and b[j..].
        var lcs = new int[a.Length + 1, b.Length + 1];
        for (int i = a.Length - 1; i >= 0; i--)
            for (int j = b.Length - 1; j >= 0; j--)
                lcs[i, j] = a[i] == b[j] ? lcs[i + 1, j + 1] + 1 : Math.Max(lcs[i + 1, j], lcs[i, j + 1]);

        var ops = new List<(char Op, string Text, int OldLine, int NewLine)>();
        int x = 0, y = 0;
        while (x < a.Length || y < b.Length)
        {
            if (x < a.Length && y < b.Length && a[x] == b[y])
            {
                ops.Add((' ', a[x], x + 1, y + 1));
                x++;
                y++;
            }
            else if (x < a.Length && (y == b.Length || lcs[x + 1, y] >= lcs[x, y + 1]))
            {
                ops.Add(('-', a[x], x + 1, y + 1));
                x++;
            }
            else
            {
                ops.Add(('+', b[y], x + 1, y + 1));
                y++;
            }
        }

        var sb = new StringBuilder();
        sb.Append("--- ").Append(oldName).Append('\n');
        sb.Append("+++ ").Append(newName).Append('\n');
        int written = 0;
        int k = 0;
        while (k < ops.Count)
        {
            if (ops[k].Op == ' ')
            {
                k++;
                continue;
            }
            int start = Math.Max(0, k - context);
            int end = k;
            // Extend the hunk while changes are closer than 2*context lines apart.
            while (end < ops.Count)
            {
                if (ops[end].Op != ' ')
                {
                    end++;
                    continue;
                }
                int run = end;
                while (run < ops.Count && ops[run].Op == ' ')
                    run++;
                if (run < ops.Count && run - end <= 2 * context)
                {
                    end = run;
                    continue;
                }
                end = Math.Min(ops.Count, end + context);
                break;
            }
            sb.Append("@@ -").Append(ops[start].OldLine).Append(" +").Append(ops[start].NewLine).Append(" @@\n");
            for (int i = start; i < end; i++)
            {
                if (written++ >= maxLines)
                {
                    sb.Append("... (diff truncated)\n");
                    return sb.ToString();
                }
                sb.Append(ops[i].Op).Append(ops[i].Text).Append('\n');
            }
            k = end;
        }
        return sb.ToString();
    }

    private static string[] SplitLines(string s)
    {
        // Show stray carriage returns instead of hiding them: they are a difference too.
        string[] lines = s.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].EndsWith('\r'))
                lines[i] = lines[i][..^1] + "\\r";
        }
        return lines;
    }
}
