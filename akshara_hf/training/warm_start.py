"""Warm-start `MuonAdamW` from the optimizer state `convert-nanochat` carried (nanochat 2026's chat_sft
`--load-optimizer`): the momentum buffers, second moments and AdamW steps only; the optimizer keeps its own learning
rates and every other group setting (chat_sft resets the LRs after loading; the other settings it loads are
`setup_optimizer`'s constants, Muon's weight decay, which base_train ends at 0 as chat_sft's own, and the momentum,
which chat_sft sets every step).

Written here because the state comes in nanochat's shapes under our parameter names, while `load_state_dict` takes
torch's numbered format: this fills a fresh `MuonAdamW.state_dict()` by name and loads it, so sharding over processes
and dtype casts stay `MuonAdamW`'s and torch's.
"""

from pathlib import Path

import torch

from akshara_hf.conversion.optimizer_state import ADAMW_KEYS, MUON_KEYS, OPTIMIZER_FILE, read_optimizer_state
from akshara_hf.errors import AksharaError


def warm_start_optimizer(optimizer, folder: str | Path) -> int:
    """Load the state in `folder` into `optimizer` (a fresh `MuonAdamW` running nanochat 2026's Muon); returns the
    number of parameters warm-started. Every trainable parameter must have a state of its shape and kind there, and
    every state a parameter: a state of another model is one line naming the first difference."""
    tensors, layout = read_optimizer_state(folder)
    where = Path(folder) / OPTIMIZER_FILE
    if getattr(optimizer, "muon_variant", None) != "2026":
        raise AksharaError(f"{where}: nanochat 2026's optimizer state; this model trains with the "
                           f"{getattr(optimizer, 'muon_variant', type(optimizer).__name__)} Muon (not a 2026 model?)")
    fresh = optimizer.state_dict()
    seen = set()
    for part, kind, keys in (("muon", "muon", MUON_KEYS), ("adamw", "adamw", ADAMW_KEYS)):
        if fresh[part] is None:
            continue
        state = fresh[part]["state"]
        # torch's state_dict lists the groups in the live order, their tensors numbered in place of the parameters.
        for group, live in zip(fresh[part]["param_groups"], getattr(optimizer, part).param_groups, strict=True):
            names = group.get("param_names")
            if names is None or len(names) != len(group["params"]):
                raise AksharaError("the optimizer's groups do not name their parameters (param_names)")
            for name, index, param in zip(names, group["params"], live["params"], strict=True):
                entry = layout["parameters"].get(name)
                if entry is None:
                    raise AksharaError(f"{where}: no state for {name} (the state of another model?)")
                if entry["optimizer"] != kind:
                    raise AksharaError(f"{where}: {name} has a {entry['optimizer']} state, this optimizer runs "
                                       f"{kind} on it")
                if entry["shape"] != list(param.shape):
                    raise AksharaError(f"{where}: {name}'s state is {entry['shape']}, the parameter is "
                                       f"{list(param.shape)} (the state of another model?)")
                state[index] = {key: tensors[f"{name}/{key}"] for key in keys}
                if kind == "adamw":  # torch's AdamW keeps its step as a float tensor
                    state[index]["step"] = torch.tensor(float(entry["step"]), dtype=torch.float32)
                elif tuple(tensors[f"{name}/second_momentum_buffer"].shape) != optimizer.muon.state_shapes(param)[
                        "second_momentum_buffer"]:  # fmt: skip
                    raise AksharaError(f"{where}: {name}/second_momentum_buffer is "
                                       f"{list(tensors[f'{name}/second_momentum_buffer'].shape)}, the parameter needs "
                                       f"{list(optimizer.muon.state_shapes(param)['second_momentum_buffer'])}")
                seen.add(name)
    extra = sorted(set(layout["parameters"]) - seen)
    if extra:
        raise AksharaError(f"{where}: a state for {extra[0]}, which this model does not train (the state of another "
                           "model?)")
    optimizer.load_state_dict(fresh)
    return len(seen)


__all__ = ["warm_start_optimizer"]
