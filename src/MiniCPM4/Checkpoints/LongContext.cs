namespace MiniCPM4.Checkpoints;

/// <summary>
/// Contexts beyond what a MiniCPM4 checkpoint was trained for (32k tokens for MiniCPM4-8B) with the LongRoPE factors
/// MiniCPM4 publishes for that purpose (its model card's long-context recipe; CPM.cu applies the same list with
/// <c>--minicpm4-yarn</c>): rope_scaling becomes longrope with these 64 factors as both the short and the long list,
/// original_max_position_embeddings the trained context, and max_position_embeddings the new limit. The engine follows
/// Hugging Face's LongRoPE, which also multiplies cos/sin by sqrt(1 + ln(max / original) / ln(original)) once the limit
/// exceeds the trained context (CPM.cu leaves that factor out).
/// </summary>
public static class LongContext
{
    /// <summary>The published factors, one per rotary frequency of a 128-dimensional head.</summary>
    public static IReadOnlyList<float> MiniCpm4Factors { get; } = new float[]
    {
        0.9977997200264581f, 1.014658295992452f, 1.0349680404997148f, 1.059429246056193f,
        1.0888815016813513f, 1.1243301355211495f, 1.166977103606075f, 1.2182568066927284f,
        1.2798772354275727f, 1.3538666751582975f, 1.4426259039919596f, 1.5489853358570191f,
        1.6762658237220625f, 1.8283407612492941f, 2.0096956085876183f, 2.225478927469756f,
        2.481536379650452f, 2.784415934557119f, 3.1413289096347365f, 3.560047844772632f,
        4.048719380066383f, 4.752651957515948f, 5.590913044973868f, 6.584005926629993f,
        7.7532214876576155f, 9.119754865903639f, 10.704443927019176f, 12.524994176518703f,
        14.59739595363613f, 16.93214476166354f, 19.53823297353041f, 22.417131025031697f,
        25.568260840911098f, 28.991144156566317f, 32.68408069090375f, 36.65174474170465f,
        40.90396065611201f, 45.4664008671033f, 50.37147343433591f, 55.6804490772103f,
        61.470816952306556f, 67.8622707390618f, 75.00516023410414f, 83.11898235973767f,
        92.50044360202462f, 103.57086856690864f, 116.9492274587385f, 118.16074567836519f,
        119.18497548708795f, 120.04810876261652f, 120.77352815196981f, 121.38182790207875f,
        121.89094985353891f, 122.31638758099915f, 122.6714244963338f, 122.9673822552567f,
        123.21386397019609f, 123.41898278254268f, 123.58957065488238f, 123.73136519024158f,
        123.84917421274221f, 123.94701903496814f, 124.02825801299717f, 124.09569231686116f,
    };

    /// <summary>Largest context <see cref="Extend"/> accepts (the engine's position limit is far above any real
    /// cache).</summary>
    public const int MaxContext = 1 << 24;

    /// <summary>The context the checkpoint was trained for: rope_scaling's original_max_position_embeddings, else
    /// max_position_embeddings.</summary>
    public static int TrainedContext(MiniCpmConfig config) =>
        config.RopeScaling?.OriginalMaxPositionEmbeddings ?? config.MaxPositionEmbeddings;

    /// <summary>
    /// The config with MiniCPM4's long-context LongRoPE factors and a position limit of <paramref name="maxContext"/>.
    /// </summary>
    /// <exception cref="MiniCpmUnsupportedException">head_dim is not 128 (the factors are for MiniCPM4's
    /// heads).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxContext"/> does not exceed the trained context
    /// or
    /// is above <see cref="MaxContext"/>.</exception>
    public static MiniCpmConfig Extend(MiniCpmConfig config, int maxContext)
    {
        ArgumentNullException.ThrowIfNull(config);
        int trained = TrainedContext(config);
        if (config.HeadDim != 2 * MiniCpm4Factors.Count)
            throw new MiniCpmUnsupportedException(
                $"the MiniCPM4 long-context LongRoPE factors are for head_dim {2 * MiniCpm4Factors.Count}; this " +
                    $"model has head_dim {config.HeadDim}");
        if (maxContext <= trained || maxContext > MaxContext)
            throw new ArgumentOutOfRangeException(nameof(maxContext), maxContext,
                $"a long context must exceed the {trained} tokens the model was trained for and be at most " +
                    $"{MaxContext}");
        float[] factors = MiniCpm4Factors.ToArray();
        return config with
        {
            MaxPositionEmbeddings = maxContext,
            RopeScaling = new RopeScalingConfig("longrope", factors, (float[])factors.Clone(), trained),
        };
    }
}
