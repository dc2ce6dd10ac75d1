"""Writes nanochat2026_optimizer_state_reference.safetensors: the optimizer state nanochat 2026 saves beside a
checkpoint (`optim_{step:06d}_rank0.pt` = its `MuonAdamW.state_dict()`), for a tiny 2026 GPT after two steps.

Not run by the tests (it needs a nanochat checkout, which this project does not ship or depend on):

    python tests/data/make_nanochat2026_optimizer_state_reference.py /path/to/nanochat   # karpathy/nanochat master, 2026

The model is `random_nanochat_state(MODEL, seed=4, pad_vocab_to=64)` (vocabulary 300, padded to 320 rows as nanochat
allocates it) in nanochat's own `GPT`; `setup_optimizer` builds its optimizer, and two `step()`s run with seeded
random gradients (chat_sft's first two Muon momenta). The file holds every state tensor as `state/{index}/{key}`
(stored in float16 to keep the file small; `dtypes` gives nanochat's, to rebuild its file from) and,
as JSON metadata, the state dict's `param_groups` and integer `step`s (so the tests can rebuild nanochat's file
exactly), plus the name of the parameter behind each index, read from nanochat's optimizer by identity (what a
converter must reproduce from the checkpoint alone). One process: nanochat's multi-rank shards need NCCL's
averaging collectives, which CPU gloo lacks. nanochat's tokenizer module needs `rustbpe`: a stub stands in for it;
its optimizer is `torch.compile`d (inductor needs `filelock`).
"""

import json
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "nanochat2026_optimizer_state_reference.safetensors"
MODEL = {"sequence_len": 64, "vocab_size": 300, "n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 32,
         "window_pattern": "SL"}  # fmt: skip
STATE_SEED, GRAD_SEED, MOMENTA = 4, 21, (0.85, 0.85 + 0.1 / 300)


def main(nanochat_dir: str) -> None:
    sys.modules.setdefault("rustbpe", types.ModuleType("rustbpe"))
    sys.path[:0] = [nanochat_dir, str(HERE.parent)]
    from safetensors.torch import save_file

    import nanochat.gpt as gpt
    from reference_nanochat import random_nanochat_state

    state = random_nanochat_state(MODEL, seed=STATE_SEED, pad_vocab_to=64)
    with torch.device("meta"):
        model = gpt.GPT(gpt.GPTConfig(**MODEL))
    model.to_empty(device="cpu")
    model.init_weights()
    model.load_state_dict(state, strict=True, assign=True)
    optimizer = model.setup_optimizer(weight_decay=0.0)
    g = torch.Generator().manual_seed(GRAD_SEED)
    for momentum in MOMENTA:
        for param in model.parameters():
            param.grad = torch.randn(param.shape, generator=g).to(param.dtype)
        for group in optimizer.param_groups:
            if group["kind"] == "muon":
                group["momentum"] = momentum
        optimizer.step()
    saved = optimizer.state_dict()
    names = {id(p): name for name, p in model.named_parameters()}
    by_index = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    tensors, steps, dtypes = {}, {}, {}
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{key}"] = value.to(torch.float16).contiguous()
                dtypes[f"{index}/{key}"] = str(value.dtype).removeprefix("torch.")
            else:
                steps[f"{index}/{key}"] = value
    metadata = {
        "made_by": "tests/data/make_nanochat2026_optimizer_state_reference.py with karpathy/nanochat master (2026), CPU",
        "torch": torch.__version__, "model_config": MODEL, "state_seed": STATE_SEED, "grad_seed": GRAD_SEED,
        "step": len(MOMENTA), "param_groups": saved["param_groups"], "values": steps, "dtypes": dtypes, "names": by_index,
    }  # fmt: skip
    save_file(tensors, OUT, metadata={"settings": json.dumps(metadata)})


if __name__ == "__main__":
    main(sys.argv[1])
