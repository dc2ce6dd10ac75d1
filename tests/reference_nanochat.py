"""An independent plain-PyTorch forward of the nanochat GPT, written from docs/nanochat-reference.md.

It reads a nanochat state dict (nanochat key names, optionally vocab-padded) and shares no code with akshara_hf,
so parity tests compare two implementations, not one with itself.
"""

import torch
import torch.nn.functional as F


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0):
    channel = torch.arange(0, head_dim, 2, dtype=torch.float32)
    inv_freq = 1.0 / (base ** (channel / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return freqs.cos().bfloat16()[None, :, None, :], freqs.sin().bfloat16()[None, :, None, :]


def rotate(x, cos, sin):  # x: (B, T, H, D)
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3).to(x.dtype)


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def nanochat_forward(state: dict, cfg: dict, idx: torch.Tensor) -> torch.Tensor:
    """Logits (fp32, softcapped, sliced to vocab_size) of nanochat's GPT for token ids `idx` (B, T)."""
    state = {k.removeprefix("_orig_mod."): v.float() for k, v in state.items()}
    n_head, n_kv, n_embd = cfg["n_head"], cfg["n_kv_head"], cfg["n_embd"]
    hd = n_embd // n_head
    B, T = idx.shape
    cos, sin = rotary_tables(cfg["sequence_len"] * 10, hd)
    cos, sin = cos[:, :T], sin[:, :T]
    x = norm(F.embedding(idx, state["transformer.wte.weight"]))
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        h = norm(x)
        q = (h @ state[p + "attn.c_q.weight"].T).view(B, T, n_head, hd)
        k = (h @ state[p + "attn.c_k.weight"].T).view(B, T, n_kv, hd)
        v = (h @ state[p + "attn.c_v.weight"].T).view(B, T, n_kv, hd)
        q, k = norm(rotate(q, cos, sin)), norm(rotate(k, cos, sin))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=n_kv < n_head)
        x = x + y.transpose(1, 2).reshape(B, T, n_embd) @ state[p + "attn.c_proj.weight"].T
        h = norm(x)
        x = x + F.relu(h @ state[p + "mlp.c_fc.weight"].T).square() @ state[p + "mlp.c_proj.weight"].T
    logits = norm(x) @ state["lm_head.weight"].T
    logits = logits[..., : cfg["vocab_size"]].float()
    return 15 * torch.tanh(logits / 15)


def random_nanochat_state(cfg: dict, pad_vocab_to: int = 64, dtype=torch.float32, seed: int = 0) -> dict:
    """A nanochat-format state dict with random weights (vocab rows padded as later nanochat does)."""
    g = torch.Generator().manual_seed(seed)
    n_embd, hd = cfg["n_embd"], cfg["n_embd"] // cfg["n_head"]
    vocab = -(-cfg["vocab_size"] // pad_vocab_to) * pad_vocab_to

    def w(*shape, std=None):
        std = std if std is not None else shape[-1] ** -0.5
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    state = {"transformer.wte.weight": w(vocab, n_embd, std=1.0), "lm_head.weight": w(vocab, n_embd, std=0.5)}
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        state[p + "attn.c_q.weight"] = w(cfg["n_head"] * hd, n_embd)
        state[p + "attn.c_k.weight"] = w(cfg["n_kv_head"] * hd, n_embd)
        state[p + "attn.c_v.weight"] = w(cfg["n_kv_head"] * hd, n_embd)
        state[p + "attn.c_proj.weight"] = w(n_embd, n_embd)
        state[p + "mlp.c_fc.weight"] = w(4 * n_embd, n_embd)
        state[p + "mlp.c_proj.weight"] = w(n_embd, 4 * n_embd)
    return state
