"""Tiny nanochat-shaped models for tests: GQA, and a vocab that is not a multiple of 64."""

import json
from pathlib import Path

import torch

from akshara_hf import AksharaConfig, AksharaForCausalLM
from akshara_hf.conversion.convert import nanochat_state_to_akshara
from reference_nanochat import random_nanochat_state

from akshara_hf.tokenization.tokenizer import save_nanochat_tokenizer, train_tokenizer

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
