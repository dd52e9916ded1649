#!/usr/bin/env python3
"""PyTorch baseline for mcpm_bench: prefill and decode speed of a MiniCPM4-shaped model with random
weights, batch 1, on the same shapes (issue #4's side-by-side ratio; scripts/gpu-check.sh runs it).

  scripts/torch_baseline.py --preset minicpm4-8b --prompt-tokens 512 --gen-tokens 64 [--json]
                            [--impl auto|hf|plain] [--device cuda|cpu] [--dtype bf16|fp32] [--no-compile]

--impl hf: Hugging Face LlamaForCausalLM (MiniCPM4 is Llama-shaped once its muP scales are folded into
the weights, which changes no cost, so random weights of the same shapes time the same), greedy
generate() with cache_implementation="static"; transformers decides about torch.compile.
--impl plain: this file's own Llama decoder (RMSNorm, rotate-half RoPE, GQA attention through
torch.nn.functional.scaled_dot_product_attention where it exists, SiLU MLP) over a preallocated (static) KV cache,
with torch.compile on the decode step when it works (--no-compile turns it off).
--impl auto (default): hf when transformers imports and runs, else plain; the output says which.

Decode tokens/s = (gen - 1) / (time of a generation of gen tokens - time of a generation of 1), so
prefill is excluded the same way mcpm_bench excludes it. One JSON line with --json.
"""
import argparse
import json
import math
import sys
import time

import torch

PRESETS = {
    "minicpm4-0.5b": dict(vocab=73448, hidden=1024, layers=24, heads=16, kv_heads=2, head_dim=64, ffn=4096, tied=True),
    "minicpm4-8b": dict(vocab=73448, hidden=4096, layers=32, heads=32, kv_heads=2, head_dim=128, ffn=16384, tied=False),
    "tiny": dict(vocab=4096, hidden=256, layers=4, heads=4, kv_heads=2, head_dim=64, ffn=768, tied=True),
}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def attend(q, k, v, mask):
    """softmax(q k^T / sqrt(d) masked) v; PyTorch's fused kernel where it exists (torch >= 2.0)."""
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, -1) @ v.float()).to(q.dtype)


class PlainLlama(torch.nn.Module):
    """A batch-1 Llama decoder with a static KV cache (random weights, scaled so activations stay O(1))."""

    def __init__(self, s, max_len, dtype, device):
        super().__init__()
        self.s = s
        H, D, L = s["hidden"], s["head_dim"], s["layers"]
        q, kv = s["heads"] * D, s["kv_heads"] * D

        def lin(n_out, n_in):
            return torch.nn.Parameter(torch.randn(n_out, n_in, dtype=dtype, device=device) / math.sqrt(n_in),
                                      requires_grad=False)

        self.embed = torch.nn.Parameter(torch.randn(s["vocab"], H, dtype=dtype, device=device), requires_grad=False)
        self.layers = []
        for _ in range(L):
            self.layers.append(dict(wq=lin(q, H), wk=lin(kv, H), wv=lin(kv, H), wo=lin(H, q), wg=lin(s["ffn"], H),
                                    wu=lin(s["ffn"], H), wd=lin(H, s["ffn"]),
                                    n1=torch.ones(H, dtype=dtype, device=device),
                                    n2=torch.ones(H, dtype=dtype, device=device)))
        self.norm = torch.ones(H, dtype=dtype, device=device)
        self.head = self.embed if s["tied"] else lin(s["vocab"], H)
        self.k = torch.zeros(L, 1, s["kv_heads"], max_len, D, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float32, device=device) / D))
        t = torch.arange(max_len, dtype=torch.float32, device=device)
        f = torch.outer(t, inv)
        self.cos = torch.cat([f.cos(), f.cos()], -1).to(dtype)
        self.sin = torch.cat([f.sin(), f.sin()], -1).to(dtype)

    @staticmethod
    def rms(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * w

    @staticmethod
    def rotate(x, cos, sin):
        h = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin

    def forward(self, ids, start):
        """ids [1, n] at positions start .. start+n-1; returns the last position's logits [vocab]."""
        s = self.s
        n, D, G = ids.shape[1], s["head_dim"], s["heads"] // s["kv_heads"]
        x = self.embed[ids[0]]  # [n, H]
        cos, sin = self.cos[start:start + n], self.sin[start:start + n]
        end = start + n
        for i, w in enumerate(self.layers):
            h = self.rms(x, w["n1"])
            q = (h @ w["wq"].T).view(n, s["heads"], D).transpose(0, 1)
            k = (h @ w["wk"].T).view(n, s["kv_heads"], D).transpose(0, 1)
            v = (h @ w["wv"].T).view(n, s["kv_heads"], D).transpose(0, 1)
            q, k = self.rotate(q, cos, sin), self.rotate(k, cos, sin)
            self.k[i, 0, :, start:end] = k
            self.v[i, 0, :, start:end] = v
            kk = self.k[i, 0, :, :end].repeat_interleave(G, 0)
            vv = self.v[i, 0, :, :end].repeat_interleave(G, 0)
            # Causal over the cache: query j sees keys <= start + j.
            mask = torch.ones(n, end, dtype=torch.bool, device=x.device).tril(start)
            a = attend(q, kk, vv, mask)
            x = x + a.transpose(0, 1).reshape(n, -1) @ w["wo"].T
            h = self.rms(x, w["n2"])
            x = x + (torch.nn.functional.silu(h @ w["wg"].T) * (h @ w["wu"].T)) @ w["wd"].T
        return (self.rms(x[-1:], self.norm) @ self.head.T)[0]


def run_plain(s, args, dtype, device):
    max_len = args.prompt_tokens + args.gen_tokens + 1
    model = PlainLlama(s, max_len, dtype, device)
    step = model.forward
    compiled = False
    if not args.no_compile and hasattr(torch, "compile"):
        try:
            step = torch.compile(model.forward, dynamic=True)
            compiled = True
        except Exception as e:  # noqa: BLE001 - an unavailable compiler is reported, not fatal
            print(f"torch.compile unavailable: {e}", file=sys.stderr)
    prompt = torch.randint(0, s["vocab"], (1, args.prompt_tokens), device=device)

    def generate(n):
        with torch.no_grad():
            logits = model.forward(prompt, 0)
            tok = logits.argmax().view(1, 1)
            for i in range(n - 1):
                logits = step(tok, args.prompt_tokens + i)
                tok = logits.argmax().view(1, 1)
        sync(device)

    def timed(n):
        t0 = time.perf_counter()
        generate(n)
        return time.perf_counter() - t0

    try:
        generate(min(args.gen_tokens, 4))  # warm-up (and compilation)
    except Exception as e:  # noqa: BLE001 - fall back to eager if the compiled step fails to run
        if not compiled:
            raise
        print(f"torch.compile failed at run time, eager instead: {e}", file=sys.stderr)
        step, compiled = model.forward, False
        generate(min(args.gen_tokens, 4))
    return timed(1), timed(args.gen_tokens), f"plain PyTorch Llama, static cache{', torch.compile' if compiled else ''}"


def run_hf(s, args, dtype, device):
    import transformers  # noqa: PLC0415 - optional dependency

    cfg = transformers.LlamaConfig(
        vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], head_dim=s["head_dim"],
        intermediate_size=s["ffn"], tie_word_embeddings=s["tied"],
        max_position_embeddings=args.prompt_tokens + args.gen_tokens + 8)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(cfg).to(dtype).eval()
    prompt = torch.randint(0, s["vocab"], (1, args.prompt_tokens), device=device)

    def timed(n):
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, cache_implementation="static", pad_token_id=0)
        sync(device)
        return time.perf_counter() - t0

    timed(min(args.gen_tokens, 4))  # warm-up (and whatever compilation transformers does)
    return timed(1), timed(args.gen_tokens), f"transformers {transformers.__version__} LlamaForCausalLM, static cache"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="minicpm4-0.5b")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--impl", choices=["auto", "hf", "plain"], default="auto")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.prompt_tokens < 1 or args.gen_tokens < 2:
        p.error("--prompt-tokens must be >= 1 and --gen-tokens >= 2")
    s = PRESETS[args.preset]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)

    result = None
    if args.impl in ("auto", "hf"):
        try:
            result = run_hf(s, args, dtype, args.device)
        except Exception as e:  # noqa: BLE001 - auto falls back to the plain decoder
            if args.impl == "hf":
                raise
            print(f"Hugging Face path unavailable ({type(e).__name__}: {e}); plain PyTorch instead", file=sys.stderr)
    if result is None:
        result = run_plain(s, args, dtype, args.device)
    t1, tn, impl = result
    decode_tps = (args.gen_tokens - 1) / max(tn - t1, 1e-9)
    prefill_tps = args.prompt_tokens / max(t1, 1e-9)  # includes one token's sampling: an upper bound on time
    out = dict(impl=impl, preset=args.preset, device=args.device, dtype=args.dtype, torch=torch.__version__,
               prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
               prefill_tokens_per_s=round(prefill_tps, 3), decode_tokens_per_s=round(decode_tps, 3))
    if args.json:
        print(json.dumps(out))
    else:
        print(f"impl       {impl} ({args.device}, {args.dtype}, torch {torch.__version__})")
        print(f"prefill    {args.prompt_tokens} tokens: {prefill_tps:.2f} tokens/s")
        print(f"decode     {args.gen_tokens - 1} tokens: {decode_tps:.2f} tokens/s")


if __name__ == "__main__":
    main()
