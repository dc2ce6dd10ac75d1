"""nanochat 2026 (value embeddings, sliding windows, lambdas, smear, backout): the independent reference against
numbers from nanochat's own code, then conversion, the model, generation and the round trip against the reference."""

import json
from pathlib import Path

import torch
from model_fixtures import TINY_NANOCHAT_2026
from reference_nanochat import greedy, left_windows, nanochat_forward, random_nanochat_state

NANOCHAT_DATA = json.loads((Path(__file__).parent / "data" / "nanochat2026_reference.json").read_text())


def test_reference_forward_and_greedy_equal_nanochat_2026_outputs():
    """tests/data/nanochat2026_reference.json holds nanochat 2026's GPT logits and Engine tokens for this model
    (script beside it): positions before, at and past the short window (129 keys) and the long one (257)."""
    data = NANOCHAT_DATA
    assert data["model_config"] == TINY_NANOCHAT_2026 and left_windows(TINY_NANOCHAT_2026) == [128, 128, 128, 256]
    state = random_nanochat_state(TINY_NANOCHAT_2026, seed=data["state_seed"], embedding_dtype=torch.bfloat16)
    idx = torch.randint(0, 300, (1, data["idx_len"]), generator=torch.Generator().manual_seed(data["idx_seed"]))
    logits = nanochat_forward(state, TINY_NANOCHAT_2026, idx)[0, data["positions"]]
    assert (logits - torch.tensor(data["logits"])).abs().max() <= 1e-5
    prompt = idx[0, : data["prompt_len"]].tolist()
    assert greedy(state, TINY_NANOCHAT_2026, prompt, len(data["engine_greedy"])) == data["engine_greedy"]
