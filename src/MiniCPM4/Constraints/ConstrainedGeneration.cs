using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using MiniCPM4.Interop;
using MiniCPM4.Tokenization;

namespace MiniCPM4.Constraints;

/// <summary>
/// The managed half of one constrained generation: the native engine calls <see cref="MaskCallback"/> for the
/// allowed tokens of each state it samples in (plain steps, and every node of a speculative tree). Where the
/// constraint leaves no choice, the callback yields the state instead (the engine returns before sampling there,
/// and a speculative round ends at it), and the session appends the forced tokens (<see cref="TakeForcedTokens"/>)
/// in one pass. Forcing is decided per state, so plain and speculative decoding force the same tokens.
/// </summary>
internal sealed class ConstrainedGeneration : IDisposable
{
    private readonly ConstraintMatcher _matcher;
    private readonly MiniCpmTokenizer _tokenizer;
    private readonly uint[] _scratch;
    private GCHandle _self;

    public ConstrainedGeneration(OutputConstraint constraint, MiniCpmModel model, IReadOnlyList<int> stopIds)
    {
        _tokenizer = model.Tokenizer;
        _matcher = constraint.CreateMatcher(model.ConstraintVocabulary, stopIds);
        _scratch = new uint[_matcher.MaskWords];
        _self = GCHandle.Alloc(this);
    }

    /// <summary>The user_data the native callback receives.</summary>
    public nint UserData => GCHandle.ToIntPtr(_self);

    /// <summary>What the last failed callback threw (rethrown by the session).</summary>
    public Exception? Error { get; private set; }

    /// <summary>
    /// Tokens to append without sampling after <paramref name="generated"/>: the bytes the constraint forces,
    /// tokenized as generated text, without the last token (a longer token might merge it with what follows), each
    /// checked against the constraint. At most <paramref name="max"/>.
    /// </summary>
    public int[] TakeForcedTokens(ReadOnlySpan<int> generated, int max)
    {
        if (max <= 0) return [];
        _matcher.Sync(generated);
        return ForcedTokens(max);
    }

    // The forced tokens of the matcher's state (a function of the state alone, so plain and speculative
    // decoding force the same tokens at the same states); the matcher is left in that state.
    private int[] ForcedTokens(int max)
    {
        var bytes = _matcher.ForcedBytes(256);
        if (bytes.Length == 0) return [];
        string text;
        try
        {
            text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return [];  // the forced bytes end inside a character: leave them to sampling
        }
        var ids = _tokenizer.EncodeGenerated(text);
        int take = Math.Min(ids.Length - 1, max);
        var state = _matcher.Tokens.ToArray();
        int accepted = 0;
        while (accepted < take && _matcher.TryAdvance(ids[accepted])) accepted++;
        _matcher.Sync(state);
        return ids[..accepted];
    }

    // mcpm_token_mask_fn: fills the mask for the state after tokens[0, count); never throws into native code.
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    public static unsafe int MaskCallback(void* userData, int* tokens, int count, uint* mask, int words)
    {
        ConstrainedGeneration? self = null;
        try
        {
            self = (ConstrainedGeneration)GCHandle.FromIntPtr((nint)userData).Target!;
            self._matcher.Sync(new ReadOnlySpan<int>(tokens, count));
            // Where the constraint dictates the next tokens, the session appends them (TakeForcedTokens)
            // instead of sampling: the engine stops before this state, in plain and speculative rounds alike.
            if (self.ForcedTokens(1).Length > 0) return NativeConstants.MCPM_TOKEN_MASK_YIELD;
            self._matcher.ComputeMask(self._scratch);
            var dst = new Span<uint>(mask, words);
            dst.Clear();
            self._scratch.AsSpan(0, Math.Min(words, self._scratch.Length)).CopyTo(dst);
            return 0;
        }
        catch (Exception e)
        {
            if (self is not null) self.Error = e;
            return -1;
        }
    }

    public void Dispose()
    {
        if (_self.IsAllocated) _self.Free();
    }
}
