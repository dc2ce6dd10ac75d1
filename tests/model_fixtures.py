"""Tiny nanochat-shaped models for tests: GQA, and a vocab that is not a multiple of 64."""

import torch

from akshara_hf import AksharaConfig, AksharaForCausalLM
from akshara_hf.convert import nanochat_state_to_akshara
from reference_nanochat import random_nanochat_state

TINY_NANOCHAT = {"sequence_len": 64, "vocab_size": 300, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 64}


def tiny_akshara(seed: int = 0, **config_overrides) -> tuple[AksharaForCausalLM, dict]:
    """An Akshara model holding the same random weights as the nanochat state dict returned beside it."""
    state = random_nanochat_state(TINY_NANOCHAT, seed=seed)
    config = AksharaConfig.from_nanochat(TINY_NANOCHAT, bos_token_id=0, eos_token_id=1, pad_token_id=1, **config_overrides)
    model = AksharaForCausalLM(config)
    model.load_state_dict(nanochat_state_to_akshara(state, config), strict=True)
    return model.eval(), state
