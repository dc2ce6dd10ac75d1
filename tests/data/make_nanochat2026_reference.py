"""Writes nanochat2026_reference.json: logits and greedy tokens of nanochat 2026's own GPT and Engine (CPU, fp32) for
the random tiny model `reference_nanochat.random_nanochat_state(TINY_NANOCHAT_2026, seed=5, embedding_dtype=bf16)`.

Not run by the tests (it needs a nanochat checkout, which this project does not ship or depend on):

    python tests/data/make_nanochat2026_reference.py /path/to/nanochat   # karpathy/nanochat master, 2026

The tests compare `reference_nanochat.nanochat_forward` / `greedy` with these numbers, so the independent reference
is itself pinned to nanochat's code. nanochat's tokenizer module needs `rustbpe` (tokenizer training only): a stub
module stands in for it here.
"""

import json
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
POSITIONS = [0, 1, 2, 127, 128, 129, 130, 200, 255, 256, 257, 258, 299]
PROMPT_LEN, NEW_TOKENS = 120, 40


def main(nanochat_dir: str) -> None:
    sys.modules.setdefault("rustbpe", types.ModuleType("rustbpe"))
    sys.path[:0] = [nanochat_dir, str(HERE.parent)]
    from model_fixtures import TINY_NANOCHAT_2026 as cfg
    from nanochat.engine import Engine
    from nanochat.gpt import GPT, GPTConfig
    from reference_nanochat import random_nanochat_state

    state = random_nanochat_state(cfg, seed=5, embedding_dtype=torch.bfloat16)
    with torch.device("meta"):
        model = GPT(GPTConfig(**cfg))
    model.to_empty(device="cpu")
    model.init_weights()  # rotary tables
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    idx = torch.randint(0, cfg["vocab_size"], (1, 300), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(idx)[0, POSITIONS]

    class NoSpecialTokens:  # Engine stops at <|assistant_end|> / <|bos|>: ids outside the vocab never stop it
        def encode_special(self, text):
            return -1

        def get_bos_token_id(self):
            return -2

    prompt = idx[0, :PROMPT_LEN].tolist()
    tokens = [column[0] for column, _ in Engine(model, NoSpecialTokens()).generate(prompt, max_tokens=NEW_TOKENS, temperature=0.0)]
    out = {
        "made_by": "tests/data/make_nanochat2026_reference.py with karpathy/nanochat master (2026), CPU fp32",
        "model_config": cfg, "state_seed": 5, "embedding_dtype": "bfloat16", "idx_seed": 7, "idx_len": 300,
        "positions": POSITIONS, "logits": [[round(v, 7) for v in row] for row in logits.tolist()],
        "prompt_len": PROMPT_LEN, "engine_greedy": tokens,
    }
    (HERE / "nanochat2026_reference.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
