"""Writes nanochat2026_optim_reference.safetensors: what nanochat 2026's own optimizer and chat_sft step do (CPU).

Not run by the tests (it needs a nanochat checkout, which this project does not ship or depend on):

    python tests/data/make_nanochat2026_optim_reference.py /path/to/nanochat   # karpathy/nanochat master, 2026

Two parts, each under nanochat's fp32 compute dtype (its CPU default) and, for the optimizer, also bf16
(`NANOCHAT_DTYPE=bfloat16`, its GPU default: the orthogonalisation then runs in bf16); each dtype runs in a child
process because nanochat reads the variable at import:

- "optim": nanochat's `MuonAdamW` alone, 3 steps on small matrices (tall, wide, square; two of one shape share a
  stacked Muon group) and two AdamW groups, with seeded random gradients, a Muon weight decay (its cautious decay),
  and momentum / LR changed between steps as the schedules do. Stored: initial values, gradients, values after each
  step and the final optimizer state.
- "sft": one step of nanochat 2026's `chat_sft` on a tiny 2026 GPT (`random_nanochat_state(SFT_MODEL, seed=3)`) and
  4 token rows with their loss masks, in 2 micro-batches: the script's loop (loss / grad_accum per micro-batch,
  backward), LRs x init_lr_frac 0.8 with multiplier 1 (a real run's first step), Muon momentum 0.85 (its step-0
  value), then `optimizer.step()`. Stored: the rows, the micro-batch losses and every tensor's update.

Tensors go into one safetensors file (no pickle); the settings into its metadata as JSON. nanochat's tokenizer
module needs `rustbpe` (not used here): a stub stands in for it. nanochat's optimizer is `torch.compile`d, whose CPU
backend needs `filelock` (run it from a venv with `--system-site-packages` and filelock installed).
"""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "nanochat2026_optim_reference.safetensors"
# A 2026 model small enough to store every update: 3 layers (windows S S L, value embeddings on layers 0 and 2,
# backout after layer 1), vocabulary 128 (a multiple of 64: no padding rows).
SFT_MODEL = {"sequence_len": 64, "vocab_size": 128, "n_layer": 3, "n_head": 2, "n_kv_head": 1, "n_embd": 32,
             "window_pattern": "SSSL"}  # fmt: skip
SFT_LRS = {"matrix_lr": 0.02, "embedding_lr": 0.3, "unembedding_lr": 0.004, "scalar_lr": 0.5, "weight_decay": 0.0}
SFT_SETTINGS = {"init_lr_frac": 0.8, "muon_momentum": 0.85, "lr_multiplier": 1.0, "micro_batches": 2, "rows": 4}
# The optimizer part: Muon matrices by name and shape, AdamW tensors by name, shape and group settings.
OPTIM_MUON = {"tall_a": (16, 8), "tall_b": (16, 8), "wide": (8, 16), "square": (12, 12)}
OPTIM_ADAMW = {
    "table": ((10, 4), {"lr": 0.05, "betas": (0.8, 0.96), "eps": 1e-10, "weight_decay": 0.01}),
    "scalars": ((5,), {"lr": 0.2, "betas": (0.96, 0.95), "eps": 1e-10, "weight_decay": 0.0}),
}
OPTIM_STEPS = [  # per step: Muon lr, momentum; AdamW LR multiplier
    {"muon_lr": 0.02, "momentum": 0.85, "adamw_lrm": 1.0},
    {"muon_lr": 0.015, "momentum": 0.9, "adamw_lrm": 0.75},
    {"muon_lr": 0.01, "momentum": 0.95, "adamw_lrm": 0.5},
]
OPTIM_MUON_SETTINGS = {"ns_steps": 5, "beta2": 0.9, "weight_decay": 0.1}


def optim_part(nanochat_optim) -> dict:
    g = torch.Generator().manual_seed(11)
    muon = {name: torch.randn(*shape, generator=g) * shape[1] ** -0.5 for name, shape in OPTIM_MUON.items()}
    adamw = {name: torch.randn(*shape, generator=g) for name, (shape, _) in OPTIM_ADAMW.items()}
    params = {name: torch.nn.Parameter(value.clone()) for name, value in (muon | adamw).items()}
    out = {f"init/{name}": value.clone() for name, value in (muon | adamw).items()}
    groups = [dict(kind="adamw", params=[params[name]], **settings) for name, (_, settings) in OPTIM_ADAMW.items()]
    for shape in sorted(set(OPTIM_MUON.values())):  # nanochat's setup_optimizer: one Muon group per shape
        members = [params[name] for name, s in OPTIM_MUON.items() if s == shape]
        groups.append(dict(kind="muon", params=members, lr=0.0, momentum=0.0, **OPTIM_MUON_SETTINGS))
    optimizer = nanochat_optim.MuonAdamW(groups)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    for step, settings in enumerate(OPTIM_STEPS):
        for name, param in params.items():
            param.grad = torch.randn(param.shape, generator=g)
            out[f"grad/{step}/{name}"] = param.grad.clone()
        for group in optimizer.param_groups:
            if group["kind"] == "muon":
                group["lr"], group["momentum"] = settings["muon_lr"], settings["momentum"]
            else:
                group["lr"] = group["initial_lr"] * settings["adamw_lrm"]
        optimizer.step()
        for name, param in params.items():
            out[f"param/{step}/{name}"] = param.detach().clone()
    # nanochat's Muon state sits on each shape group's first parameter, stacked over the group's parameters.
    for group in optimizer.param_groups:
        state = optimizer.state[group["params"][0]]
        if group["kind"] == "muon":
            names = [name for name in OPTIM_MUON if any(params[name] is p for p in group["params"])]
            for index, name in enumerate(names):
                out[f"state/{name}/momentum_buffer"] = state["momentum_buffer"][index].clone()
                out[f"state/{name}/second_momentum_buffer"] = state["second_momentum_buffer"][index].clone()
        else:
            name = next(n for n in OPTIM_ADAMW if params[n] is group["params"][0])
            out[f"state/{name}/exp_avg"] = state["exp_avg"].clone()
            out[f"state/{name}/exp_avg_sq"] = state["exp_avg_sq"].clone()
    return out


def sft_rows() -> list[tuple[list[int], list[int]]]:
    """4 rows of nanochat's layout: ids and loss mask (1 = supervised), lengths 20-40, random tokens."""
    g = torch.Generator().manual_seed(17)
    rows = []
    for length in (31, 24, 40, 19):
        ids = torch.randint(0, SFT_MODEL["vocab_size"], (length,), generator=g).tolist()
        mask = (torch.rand(length, generator=g) < 0.6).long().tolist()
        mask[0] = 0
        rows.append((ids, mask))
    return rows


def sft_part(gpt, random_nanochat_state) -> dict:
    state = random_nanochat_state(SFT_MODEL, seed=3)
    with torch.device("meta"):
        model = gpt.GPT(gpt.GPTConfig(**SFT_MODEL))
    model.to_empty(device="cpu")
    model.init_weights()  # rotary tables
    model.load_state_dict(state, strict=True, assign=True)
    model.train()
    optimizer = model.setup_optimizer(**SFT_LRS)
    for group in optimizer.param_groups:  # chat_sft: lr *= init_lr_frac, then the step's multiplier and momentum
        group["lr"] = group["lr"] * SFT_SETTINGS["init_lr_frac"]
        group["initial_lr"] = group["lr"]
        group["lr"] = group["initial_lr"] * SFT_SETTINGS["lr_multiplier"]
        if group["kind"] == "muon":
            group["momentum"] = SFT_SETTINGS["muon_momentum"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    rows = sft_rows()
    out = {}
    per_micro = SFT_SETTINGS["rows"] // SFT_SETTINGS["micro_batches"]
    losses = []
    for micro in range(SFT_SETTINGS["micro_batches"]):
        batch = rows[micro * per_micro:(micro + 1) * per_micro]
        width = max(len(ids) for ids, _ in batch)
        # chat_sft's rows: inputs = row[:-1], targets = row[1:] with -1 where the mask (shifted) is 0 or padding.
        x = torch.zeros(len(batch), width - 1, dtype=torch.long)
        y = torch.full((len(batch), width - 1), -1, dtype=torch.long)
        for i, (ids, mask) in enumerate(batch):
            x[i, :len(ids) - 1] = torch.tensor(ids[:-1])
            targets = torch.tensor(ids[1:])
            targets[torch.tensor(mask[1:]) == 0] = -1
            y[i, :len(ids) - 1] = targets
        loss = model(x, y)
        losses.append(loss.item())
        (loss / SFT_SETTINGS["micro_batches"]).backward()
    optimizer.step()
    for name, p in model.named_parameters():
        out[f"update/{name}"] = (p.detach() - before[name]).contiguous()
    for index, (ids, mask) in enumerate(rows):
        out[f"row/{index}/input_ids"] = torch.tensor(ids)
        out[f"row/{index}/mask"] = torch.tensor(mask)
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    return out


def child(nanochat_dir: str, part: str, result: str) -> None:
    sys.modules.setdefault("rustbpe", types.ModuleType("rustbpe"))
    try:
        import filelock  # noqa: F401  (torch.compile's inductor needs the real one)
    except ImportError:
        sys.modules["filelock"] = types.SimpleNamespace(FileLock=object)
    sys.path[:0] = [nanochat_dir, str(HERE.parent)]
    from safetensors.torch import save_file

    import nanochat.gpt as gpt
    import nanochat.optim as nanochat_optim
    from reference_nanochat import random_nanochat_state

    torch.manual_seed(0)
    out = optim_part(nanochat_optim) if part == "optim" else sft_part(gpt, random_nanochat_state)
    save_file({k: v.contiguous() for k, v in out.items()}, result)


def main(nanochat_dir: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {}
    for dtype, part in (("float32", "optim"), ("bfloat16", "optim"), ("float32", "sft")):
        result = OUT.with_suffix(f".{dtype}.{part}.tmp")
        env = {**os.environ, "NANOCHAT_DTYPE": dtype, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, __file__, "--child", nanochat_dir, part, str(result)], env=env, check=True)
        tensors |= {f"{part}/{dtype}/{key}": value for key, value in load_file(result).items()}
        result.unlink()
    metadata = {
        "made_by": "tests/data/make_nanochat2026_optim_reference.py with karpathy/nanochat master (2026), CPU",
        "torch": torch.__version__,
        "sft_model": SFT_MODEL, "sft_lrs": SFT_LRS, "sft_settings": SFT_SETTINGS, "sft_state_seed": 3,
        "optim_muon": OPTIM_MUON, "optim_adamw": OPTIM_ADAMW, "optim_steps": OPTIM_STEPS,
        "optim_muon_settings": OPTIM_MUON_SETTINGS,
    }  # fmt: skip
    save_file(tensors, OUT, metadata={"settings": json.dumps(metadata)})


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        main(sys.argv[1])
