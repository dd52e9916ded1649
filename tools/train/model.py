"""MiniCPM4 (Hugging Face "minicpm" architecture) and its one-layer EAGLE draft, in plain PyTorch.

The math is the one MiniCPM4.NET's engine computes (Hugging Face MiniCPM semantics):

    h = embed[ids] * scale_emb
    per layer:  h += s * o_proj(attention(rope(q), rope(k), v))       with q, k, v from input_layernorm(h)
                h += s * down(silu(gate(n)) * up(n))                   with n = post_attention_layernorm(h)
                s = scale_depth / sqrt(num_hidden_layers)
    logits = (norm(h) * dim_model_base / hidden_size) @ W^T
             W = lm_head.weight when tie_word_embeddings is false (a separate [vocab, hidden] matrix),
             W = embed when it is true (tied LM head)

RMSNorm is x / sqrt(mean(x^2) + eps) * w, in fp32. RoPE is the rotate-half form with
inv_freq[i] = theta^(-2i/head_dim). Attention is causal with grouped KV heads: query head j reads KV head
j // (num_attention_heads / num_key_value_heads).

The EAGLE draft (MiniCPM4 layout, as in CPM.cu's MiniCPM4 EAGLE) reads at row i the NEXT token x[i+1] and the
base model's final normed hidden state f[i] (after model.norm, before the dim_model_base/hidden_size factor):

    a = rmsnorm(embed[x[i+1]] * scale_emb) * input_norm1;  b = rmsnorm(f[i]) * input_norm2
    h = [a, b] @ fc.weight^T + fc.bias
    one decoder layer as above (RoPE at position i, causal over draft rows), residual scale
    scale_depth / sqrt(base_layers + 1); no final norm
    logits = (h * dim_model_base / hidden_size) @ W^T                    (W: the base model's LM head)
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def rms_norm(x, weight, eps):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * weight.float()).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rope_tables(head_dim, positions, theta):
    """cos, sin of shape [len(positions), head_dim] (the rotate-half layout: frequencies repeated twice)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().float(), emb.sin().float()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, nh, nkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        self.nh, self.nkv, self.hd = nh, nkv, hd
        self.q_proj = nn.Linear(h, nh * hd, bias=False)
        self.k_proj = nn.Linear(h, nkv * hd, bias=False)
        self.v_proj = nn.Linear(h, nkv * hd, bias=False)
        self.o_proj = nn.Linear(nh * hd, h, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Grouped-query attention without repeating K/V: the `group` query heads that share a KV head are stacked
        # along the row axis, so each KV head does one [group*t, hd] x [hd, t] product.
        group = self.nh // self.nkv
        qg = (q * (1.0 / math.sqrt(self.hd))).reshape(b, self.nkv, group * t, self.hd)
        scores = torch.matmul(qg, k.transpose(-1, -2)).view(b, self.nkv, group, t, t) + mask
        p = torch.softmax(scores, dim=-1).view(b, self.nkv, group * t, t)
        o = torch.matmul(p, v).view(b, self.nh, t, self.hd).transpose(1, 2).reshape(b, t, self.nh * self.hd)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg, residual_scale):
        super().__init__()
        eps = cfg["rms_norm_eps"]
        self.input_layernorm = RMSNorm(cfg["hidden_size"], eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], eps)
        self.mlp = MLP(cfg)
        self.residual_scale = residual_scale

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask) * self.residual_scale
        h = h + self.mlp(self.post_attention_layernorm(h)) * self.residual_scale
        return h


def causal_mask(t):
    """Additive causal mask [t, t]: 0 on and below the diagonal, -inf above."""
    return torch.full((t, t), float("-inf")).triu(1)


class MiniCPM(nn.Module):
    """The base model. Parameter names (with the "model." prefix added for embed/layers/norm) are the Hugging Face
    tensor names. With cfg["tie_word_embeddings"] false the LM head is a separate matrix, "lm_head.weight" (no
    prefix, as in Hugging Face MiniCPM checkpoints); when it is true or absent, the embedding is the LM head."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        n = cfg["num_hidden_layers"]
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        s = cfg["scale_depth"] / math.sqrt(n)
        self.layers = nn.ModuleList([DecoderLayer(cfg, s) for _ in range(n)])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.tied = cfg.get("tie_word_embeddings", True)
        self.lm_head = None if self.tied else nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    @property
    def lm_head_weight(self):
        """The output matrix [vocab, hidden]: lm_head.weight, or the embedding when tied."""
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def hf_state_dict(self):
        return {(k if k.startswith("lm_head.") else "model." + k): v for k, v in self.state_dict().items()}

    def load_hf_state_dict(self, sd):
        self.load_state_dict({(k if k.startswith("lm_head.") else k[len("model."):]): v for k, v in sd.items()
                              if k.startswith("model.") or (k == "lm_head.weight" and not self.tied)})

    def features(self, ids, positions=None):
        """Final normed hidden states f [b, t, H] (before the dim_model_base/hidden_size factor)."""
        b, t = ids.shape
        if positions is None:
            positions = torch.arange(t)
        cos, sin = rope_tables(self.cfg["head_dim"], positions, self.cfg["rope_theta"])
        mask = causal_mask(t)
        h = self.embed_tokens(ids) * self.cfg["scale_emb"]
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        return self.norm(h)

    def logits_from_features(self, f):
        return F.linear(f * (self.cfg["dim_model_base"] / self.cfg["hidden_size"]), self.lm_head_weight)

    def forward(self, ids):
        return self.logits_from_features(self.features(ids))


class EagleDraft(nn.Module):
    """The one-layer MiniCPM4 EAGLE draft. It holds no embedding or LM head: both are the base model's, passed in
    (the embedding to forward, the LM head matrix, lm_head.weight or the tied embedding, to logits)."""

    def __init__(self, cfg, base_layers):
        super().__init__()
        self.cfg = cfg
        hsz, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.fc = nn.Linear(2 * hsz, hsz, bias=True)
        self.input_norm1 = RMSNorm(hsz, eps)
        self.input_norm2 = RMSNorm(hsz, eps)
        self.layers = nn.ModuleList([DecoderLayer(cfg, cfg["scale_depth"] / math.sqrt(base_layers + 1))])

    def forward(self, next_ids, feats, embed_weight, positions=None):
        """next_ids [b, t] = x[i+1]; feats [b, t, H] = f[i]. Returns the draft's output features [b, t, H]."""
        b, t = next_ids.shape
        if positions is None:
            positions = torch.arange(t)
        cos, sin = rope_tables(self.cfg["head_dim"], positions, self.cfg["rope_theta"])
        e = F.embedding(next_ids, embed_weight) * self.cfg["scale_emb"]
        h = self.fc(torch.cat([self.input_norm1(e), self.input_norm2(feats)], dim=-1))
        return self.layers[0](h, cos, sin, causal_mask(t))

    def logits(self, h, head_weight):
        return F.linear(h * (self.cfg["dim_model_base"] / self.cfg["hidden_size"]), head_weight)


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())
