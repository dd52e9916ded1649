namespace MiniCPM4.CompareLlamaCpp;

/// <summary>The logit cross-check's tolerance.</summary>
public static class LogitTolerance
{
    /// <summary>
    /// 1e-4 absolute. Both engines compute in fp32 from the same fp32 weights; they differ only in summation order
    /// (blocked dot products, threads), which moves a logit of magnitude up to ~10 by a few ulps of the partial sums,
    /// i.e. ~1e-6. A GGUF error (Q/K rows not permuted, a muP scale wrong or missing, a transposed matrix) moves logits
    /// by 1e-2 or more (the tests measure the unpermuted case), so 1e-4 separates the two by orders of magnitude.
    /// </summary>
    public const double Default = 1e-4;
}
