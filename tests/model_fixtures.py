"""Tiny nanochat-shaped models for tests: GQA, and a vocab that is not a multiple of 64."""

import json
from pathlib import Path

import torch

from akshara_hf import AksharaConfig, AksharaForCausalLM
from akshara_hf.conversion.convert import nanochat_state_to_akshara
from reference_nanochat import random_nanochat_state

from akshara_hf.tokenization.tokenizer import save_nanochat_tokenizer, train_tokenizer

# fp32 logits (|x| up to the softcap, 15) of two implementations of the same model: their sums run in a different order
# with the thread count (1.2e-5 apart on a CI machine at 2 threads); a wrong weight or op is off by 1e-2 and more.
FP32_LOGITS_ATOL = 5e-5

TINY_NANOCHAT = {"sequence_len": 64, "vocab_size": 300, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 64}
# nanochat 2026: windows S S S L (S = 128 keys back, L = 256), value embeddings on layers 1 and 3, backout after layer 2.
TINY_NANOCHAT_2026 = {**TINY_NANOCHAT, "sequence_len": 256, "n_layer": 4, "window_pattern": "SSSL"}


def tiny_akshara(seed: int = 0, **config_overrides) -> tuple[AksharaForCausalLM, dict]:
    """An Akshara model holding the same random weights as the nanochat state dict returned beside it."""
    state = random_nanochat_state(TINY_NANOCHAT, seed=seed)
    config = AksharaConfig.from_nanochat(TINY_NANOCHAT, bos_token_id=0, eos_token_id=1, pad_token_id=1, **config_overrides)
    model = AksharaForCausalLM(config)
    model.load_state_dict(nanochat_state_to_akshara(state, config), strict=True)
    return model.eval(), state


TEXTS = [
    "రాముడు అడవికి వెళ్ళాడు. సీత ఇంటికి వచ్చింది! పిల్లలు బడికి వెళ్తారు? 2024 లో వర్షం పడింది.",
    "The river flows; children go to school. Hello 😊 నది ప్రవహిస్తుంది 12 34 567",
] * 60


def make_nanochat_run(base: Path, model_config: dict = TINY_NANOCHAT) -> tuple[Path, Path, dict]:
    """A nanochat base dir as nanochat lays it out: `tokenizer/` (tokenizer.pkl, token_bytes.pt) and
    `chatsft_checkpoints/d2/` with steps 100 and 200, torch.compile'd key names and vocab padded 300 -> 320.
    A 2026 `model_config` (with `window_pattern`) gets every 2026 tensor, and wte and the value embeddings in bf16 as
    2026 runs store them."""
    tokenizer = train_tokenizer(TEXTS, vocab_size=model_config["vocab_size"])
    save_nanochat_tokenizer(tokenizer, base / "tokenizer")
    checkpoints = base / "chatsft_checkpoints" / "d2"
    checkpoints.mkdir(parents=True)
    states = {}
    embedding_dtype = torch.bfloat16 if "window_pattern" in model_config else None
    for step, seed in ((100, 1), (200, 2)):
        state = random_nanochat_state(model_config, pad_vocab_to=64, seed=seed, embedding_dtype=embedding_dtype)
        states[step] = state
        torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, checkpoints / f"model_{step:06d}.pt")
        meta = {"step": step, "val_bpb": 1.5, "model_config": model_config, "user_config": {"run": "test"}}
        (checkpoints / f"meta_{step:06d}.json").write_text(json.dumps(meta))
    return base, checkpoints, states


def shard_nanochat_optimizer(full: dict, world: int) -> list[dict]:
    """nanochat 2026's `MuonAdamW.state_dict()` of one process -> what each of `world` ranks saves
    (`docs/nanochat-2026.md`, "Optimizer state"): AdamW tensors of 1,024 elements or more split by rows, smaller ones
    whole on every rank; each Muon group's stacked state (on its first tensor) split in chunks of ceil(K / world)
    matrices, zero-padded."""
    import math

    ranks = [{"state": {}, "param_groups": full["param_groups"]} for _ in range(world)]
    for group in full["param_groups"]:
        first = group["params"][0]
        for rank, out in enumerate(ranks):
            if group["kind"] == "adamw":
                for index in (i for i in group["params"] if i in full["state"]):
                    entry = full["state"][index]
                    big = entry["exp_avg"].numel() >= 1024
                    rows = entry["exp_avg"].shape[0] // world
                    out["state"][index] = {
                        key: value[rank * rows:(rank + 1) * rows].clone() if big and key != "step" else value
                        for key, value in entry.items()
                    }
            elif first in full["state"]:
                chunk = math.ceil(len(group["params"]) / world)
                out["state"][first] = {}
                for key, value in full["state"][first].items():
                    part = torch.zeros(chunk, *value.shape[1:], dtype=value.dtype)
                    mine = value[rank * chunk:(rank + 1) * chunk]
                    part[: len(mine)] = mine
                    out["state"][first][key] = part
    return ranks


def random_nanochat_optimizer(state: dict, seed: int = 0) -> dict:
    """A nanochat 2026 `MuonAdamW.state_dict()` (one process, after 5 steps) with random moments for the nanochat
    state dict `state`, in the group layout `akshara_hf.conversion.optimizer_state.nanochat_optimizer_groups` derives
    (pinned to nanochat's own by tests/test_optimizer_state.py)."""
    from akshara_hf.conversion.optimizer_state import nanochat_optimizer_groups

    g = torch.Generator().manual_seed(seed)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    out, index = {"state": {}, "param_groups": []}, 0
    for kind, names in nanochat_optimizer_groups(shapes):
        indices = list(range(index, index + len(names)))
        index += len(names)
        if kind == "adamw":
            out["param_groups"].append({"kind": "adamw", "lr": 0.0, "betas": (0.8, 0.95), "eps": 1e-10,
                                        "weight_decay": 0.0, "initial_lr": 0.1, "params": indices})  # fmt: skip
            for i, name in zip(indices, names):
                out["state"][i] = {"step": 5, "exp_avg": torch.randn(shapes[name], generator=g) * 0.01,
                                   "exp_avg_sq": torch.rand(shapes[name], generator=g) * 1e-4}  # fmt: skip
        else:
            out["param_groups"].append({"kind": "muon", "lr": 0.0, "momentum": 0.95, "ns_steps": 5, "beta2": 0.9,
                                        "weight_decay": 0.0, "initial_lr": 0.02, "params": indices})  # fmt: skip
            rows, cols = shapes[names[0]]
            moment = (len(names), rows, 1) if rows >= cols else (len(names), 1, cols)
            out["state"][indices[0]] = {"momentum_buffer": torch.randn(len(names), rows, cols, generator=g) * 0.01,
                                        "second_momentum_buffer": torch.rand(moment, generator=g) * 1e-3}  # fmt: skip
    return out


def save_nanochat_optimizer(checkpoint_dir: Path, step: int, full: dict, world: int = 1) -> list[Path]:
    """`optim_{step:06d}_rank{r}.pt` files as nanochat 2026 writes them on `world` ranks."""
    paths = []
    for rank, shard in enumerate(shard_nanochat_optimizer(full, world)):
        paths.append(Path(checkpoint_dir) / f"optim_{step:06d}_rank{rank}.pt")
        torch.save(shard, paths[-1])
    return paths
