"""An independent plain-PyTorch forward of the nanochat GPT, written from docs/nanochat-reference.md (late 2025)
and docs/nanochat-2026.md (2026: value embeddings, sliding windows, residual/x0 lambdas, smear, backout,
q/k scale 1.2, rope theta 1e5, fp32 rotary tables).

It reads a nanochat state dict (nanochat key names, optionally vocab-padded, optionally `_orig_mod.`-prefixed) and
shares no code with akshara_hf, so parity tests compare two implementations, not one with itself. A `model_config`
with a `window_pattern` is a 2026 model (nanochat's 2026 loader reads a missing pattern as a late-2025 model).
"""

import math

import torch
import torch.nn.functional as F


def is_2026(cfg: dict) -> bool:
    return "window_pattern" in cfg


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0, bf16: bool = True):
    channel = torch.arange(0, head_dim, 2, dtype=torch.float32)
    inv_freq = 1.0 / (base ** (channel / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    cos, sin = freqs.cos(), freqs.sin()
    if bf16:  # late 2025: tables stored in bf16; 2026: in the compute dtype (fp32 here)
        cos, sin = cos.bfloat16(), sin.bfloat16()
    return cos[None, :, None, :], sin[None, :, None, :]


def rotate(x, cos, sin):  # x: (B, T, H, D)
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3).to(x.dtype)


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def left_windows(cfg: dict) -> list[int]:
    """Per-layer left window w (a query at i sees keys i-w..i): pattern tiled, last layer L; L = sequence_len,
    S = ceil(sequence_len / 4 / 128) * 128."""
    long = cfg["sequence_len"]
    short = math.ceil(long / 4 / 128) * 128
    pattern = cfg["window_pattern"].upper()
    windows = [long if pattern[i % len(pattern)] == "L" else short for i in range(cfg["n_layer"])]
    windows[-1] = long
    return windows


def has_value_embedding(i: int, n_layer: int) -> bool:
    return i % 2 == (n_layer - 1) % 2


def nanochat_forward(state: dict, cfg: dict, idx: torch.Tensor) -> torch.Tensor:
    """Logits (fp32, softcapped, sliced to vocab_size) of nanochat's GPT for token ids `idx` (B, T), in fp32."""
    state = {k.removeprefix("_orig_mod."): v.float() for k, v in state.items()}
    new = is_2026(cfg)
    n_head, n_kv, n_embd, n_layer = cfg["n_head"], cfg["n_kv_head"], cfg["n_embd"], cfg["n_layer"]
    hd = n_embd // n_head
    B, T = idx.shape
    cos, sin = rotary_tables(cfg["sequence_len"] * 10, hd, base=100000.0 if new else 10000.0, bf16=not new)
    cos, sin = cos[:, :T], sin[:, :T]
    x = norm(F.embedding(idx, state["transformer.wte.weight"]))
    if new:  # smear: the previous position's normalised embedding, gated
        gate = state["smear_lambda"] * torch.sigmoid(x[:, 1:, :24] @ state["smear_gate.weight"].T)
        x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
    x0 = x
    windows = left_windows(cfg) if new else [None] * n_layer
    positions = torch.arange(T)
    x_backout = None
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        if new:
            x = state["resid_lambdas"][i] * x + state["x0_lambdas"][i] * x0
        h = norm(x)
        q = (h @ state[p + "attn.c_q.weight"].T).view(B, T, n_head, hd)
        k = (h @ state[p + "attn.c_k.weight"].T).view(B, T, n_kv, hd)
        v = (h @ state[p + "attn.c_v.weight"].T).view(B, T, n_kv, hd)
        if new and has_value_embedding(i, n_layer):
            ve = F.embedding(idx, state[f"value_embeds.{i}.weight"]).view(B, T, n_kv, hd)
            v = v + (3 * torch.sigmoid(h[..., :12] @ state[p + "attn.ve_gate.weight"].T))[..., None] * ve
        q, k = norm(rotate(q, cos, sin)), norm(rotate(k, cos, sin))
        if new:
            q, k = q * 1.2, k * 1.2
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if windows[i] is None or windows[i] >= T - 1:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=n_kv < n_head)
        else:
            distance = positions[:, None] - positions[None, :]
            allowed = (distance >= 0) & (distance <= windows[i])
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=n_kv < n_head)
        x = x + y.transpose(1, 2).reshape(B, T, n_embd) @ state[p + "attn.c_proj.weight"].T
        h = norm(x)
        x = x + F.relu(h @ state[p + "mlp.c_fc.weight"].T).square() @ state[p + "mlp.c_proj.weight"].T
        if new and i == n_layer // 2:
            x_backout = x
    if x_backout is not None:
        x = x - state["backout_lambda"] * x_backout
    logits = norm(x) @ state["lm_head.weight"].T
    logits = logits[..., : cfg["vocab_size"]].float()
    return 15 * torch.tanh(logits / 15)


def greedy(state: dict, cfg: dict, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation by full recomputation (no cache): what any correct KV-cache decoder must reproduce."""
    ids = list(prompt)
    for _ in range(max_new_tokens):
        ids.append(int(nanochat_forward(state, cfg, torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def random_nanochat_state(
    cfg: dict, pad_vocab_to: int = 64, dtype=torch.float32, seed: int = 0, embedding_dtype=None
) -> dict:
    """A nanochat-format state dict with random weights (vocab rows padded as later nanochat does).

    For a 2026 config every 2026 tensor is present and random, including the parts nanochat initialises at zero or
    at a neutral value (smear_lambda, x0_lambdas, ...), so no feature is inert. `embedding_dtype` (e.g. bf16, as
    2026 runs store wte and the value embeddings) applies to those embeddings only."""
    g = torch.Generator().manual_seed(seed)
    n_embd, hd, n_layer = cfg["n_embd"], cfg["n_embd"] // cfg["n_head"], cfg["n_layer"]
    vocab = -(-cfg["vocab_size"] // pad_vocab_to) * pad_vocab_to
    embedding_dtype = embedding_dtype or dtype

    def w(*shape, std=None, dt=dtype):
        std = std if std is not None else shape[-1] ** -0.5
        return (torch.randn(*shape, generator=g) * std).to(dt)

    # 2026 models have more paths into the residual stream: a smaller head keeps fp32 rounding of the logits well
    # under the parity tolerance (measured 1.5e-5 between two exact fp32 implementations with std 0.5).
    head_std = 0.25 if is_2026(cfg) else 0.5
    state = {"transformer.wte.weight": w(vocab, n_embd, std=1.0, dt=embedding_dtype), "lm_head.weight": w(vocab, n_embd, std=head_std)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        state[p + "attn.c_q.weight"] = w(cfg["n_head"] * hd, n_embd)
        state[p + "attn.c_k.weight"] = w(cfg["n_kv_head"] * hd, n_embd)
        state[p + "attn.c_v.weight"] = w(cfg["n_kv_head"] * hd, n_embd)
        state[p + "attn.c_proj.weight"] = w(n_embd, n_embd)
        state[p + "mlp.c_fc.weight"] = w(4 * n_embd, n_embd)
        state[p + "mlp.c_proj.weight"] = w(n_embd, 4 * n_embd)
    if is_2026(cfg):
        for i in range(n_layer):
            if has_value_embedding(i, n_layer):
                state[f"value_embeds.{i}.weight"] = w(vocab, cfg["n_kv_head"] * hd, std=1.0, dt=embedding_dtype)
                state[f"transformer.h.{i}.attn.ve_gate.weight"] = w(cfg["n_kv_head"], 12, std=1.0)
        state["resid_lambdas"] = (1.0 + 0.2 * torch.randn(n_layer, generator=g)).to(dtype)
        state["x0_lambdas"] = (0.3 * torch.randn(n_layer, generator=g)).to(dtype)
        state["smear_gate.weight"] = w(1, 24, std=1.0)
        state["smear_lambda"] = torch.tensor([0.7]).to(dtype)
        state["backout_lambda"] = torch.tensor([0.3]).to(dtype)
    return state
