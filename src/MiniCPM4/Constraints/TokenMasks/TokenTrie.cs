namespace MiniCPM4.Constraints.TokenMasks;

/// <summary>
/// The tokens' byte strings as a trie laid out in depth-first order: node 0 is the root, a node's first child is the
/// next node, and <see cref="SubtreeEnd"/> is the node after its subtree, so a walk skips a subtree in one step.
/// Tokens with equal bytes share a node.
/// </summary>
internal sealed class TokenTrie
{
    public readonly byte[] NodeByte;
    public readonly int[] SubtreeEnd;
    public readonly int[] Depth;
    // Tokens ending at node n: TokenIds[TokenStart[n] .. TokenStart[n + 1]).
    public readonly int[] TokenStart;
    public readonly int[] TokenIds;

    public int NodeCount => NodeByte.Length;
    public int MaxDepth { get; }

    public TokenTrie(byte[]?[] tokens)
    {
        var order = Enumerable.Range(0, tokens.Length).Where(i => tokens[i] is { Length: > 0 }).ToArray();
        Array.Sort(order, (a, b) =>
        {
            int c = tokens[a].AsSpan().SequenceCompareTo(tokens[b]);
            return c != 0 ? c : a.CompareTo(b);
        });
        var nodeByte = new List<byte> { 0 };
        var depth = new List<int> { 0 };
        var subtreeEnd = new List<int> { 0 };
        var tokenCount = new List<int> { 0 };
        var ids = new List<int>();
        // The path of open nodes: path[d] is the node at depth d on the current prefix.
        var path = new List<int> { 0 };
        byte[] previous = [];
        foreach (int id in order)
        {
            byte[] t = tokens[id]!;
            int common = 0;
            while (common < previous.Length && common < t.Length && previous[common] == t[common]) common++;
            // Close nodes deeper than the common prefix.
            for (int d = path.Count - 1; d > common; d--) subtreeEnd[path[d]] = nodeByte.Count;
            path.RemoveRange(common + 1, path.Count - common - 1);
            for (int d = common; d < t.Length; d++)
            {
                path.Add(nodeByte.Count);
                nodeByte.Add(t[d]);
                depth.Add(d + 1);
                subtreeEnd.Add(0);
                tokenCount.Add(0);
            }
            tokenCount[path[t.Length]]++;
            ids.Add(id);
            previous = t;
        }
        for (int d = path.Count - 1; d >= 0; d--) subtreeEnd[path[d]] = nodeByte.Count;
        NodeByte = nodeByte.ToArray();
        Depth = depth.ToArray();
        SubtreeEnd = subtreeEnd.ToArray();
        // Tokens were appended in DFS order of their nodes, so a prefix sum gives each node's slice.
        TokenStart = new int[NodeByte.Length + 1];
        for (int n = 0; n < NodeByte.Length; n++) TokenStart[n + 1] = TokenStart[n] + tokenCount[n];
        TokenIds = ids.ToArray();
        MaxDepth = Depth.Length > 0 ? Depth.Max() : 0;
    }
}
