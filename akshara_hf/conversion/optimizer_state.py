"""nanochat 2026's optimizer state, carried from a checkpoint into the converted HF folder for SFT's warm start.

nanochat saves its `MuonAdamW.state_dict()` per rank beside each checkpoint (`optim_{step:06d}_rank{r}.pt`): torch's
optimizer format, tensors numbered in the order of its `setup_optimizer` groups, AdamW rows and Muon matrices
sharded over the ranks (layout in `docs/nanochat-2026.md`, "Optimizer state"). `convert-nanochat` reads every rank's
file (`torch.load(weights_only=True)`: tensors and plain values, never code), undoes the sharding, stacking and vocab
padding, and writes one state per parameter under our parameter names:

- `nanochat_optimizer.tensors`: safetensors bytes, keys `{parameter}/{state key}` (`exp_avg`, `exp_avg_sq` for AdamW;
  `momentum_buffer`, `second_momentum_buffer` for Muon). Not `*.safetensors`: weight loaders (vLLM) read every such
  file in a folder as weights.
- `nanochat_optimizer.json`: the format, where it came from, and per parameter its optimizer, shape and AdamW step.
"""

import json
import math
import re
import sys
from pathlib import Path

import torch

from akshara_hf.errors import AksharaError, one_line

OPTIMIZER_FILE = "nanochat_optimizer.tensors"
OPTIMIZER_LAYOUT = "nanochat_optimizer.json"
FORMAT = "akshara-nanochat-optimizer/1"
ADAMW_KEYS = ("exp_avg", "exp_avg_sq")
MUON_KEYS = ("momentum_buffer", "second_momentum_buffer")
# nanochat's AdamW shards a tensor's rows over the ranks from this many elements on (smaller ones are replicated).
SHARDED_ADAMW_NUMEL = 1024
# A block's Muon matrices in nanochat's module order (CausalSelfAttention, then MLP): the order of
# `transformer.h.parameters()`, which orders each same-shape Muon group.
BLOCK_ORDER = ("attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj", "attn.ve_gate", "mlp.c_fc", "mlp.c_proj")
BLOCK_KEY = re.compile(r"transformer\.h\.(\d+)\.(.+)\.weight")


def nanochat_optimizer_groups(shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, list[str]]]:
    """nanochat 2026's `setup_optimizer` groups for a checkpoint's tensors (nanochat names -> shapes), in order:
    `[(kind, [names])]`. AdamW: lm_head, wte, the value embeddings (layer order), resid_lambdas, x0_lambdas, then
    smear_gate / smear_lambda / backout_lambda; then one Muon group per distinct block-matrix shape (shapes sorted),
    its matrices layer by layer in `BLOCK_ORDER`."""
    value_embeds = sorted((n for n in shapes if re.fullmatch(r"value_embeds\.\d+\.weight", n)),
                          key=lambda n: int(n.split(".")[1]))  # fmt: skip
    groups = [("adamw", ["lm_head.weight"]), ("adamw", ["transformer.wte.weight"]), ("adamw", value_embeds),
              ("adamw", ["resid_lambdas"]), ("adamw", ["x0_lambdas"]),
              ("adamw", ["smear_gate.weight", "smear_lambda", "backout_lambda"])]  # fmt: skip
    blocks = []
    for name in shapes:
        if name.startswith("transformer.h."):
            match = BLOCK_KEY.fullmatch(name)
            if match is None or match.group(2) not in BLOCK_ORDER:
                raise AksharaError(f"{name}: not one of nanochat 2026's block matrices ({', '.join(BLOCK_ORDER)})")
            blocks.append((int(match.group(1)), BLOCK_ORDER.index(match.group(2)), name))
    blocks = [name for *_, name in sorted(blocks)]
    for shape in sorted({shapes[name] for name in blocks}):
        groups.append(("muon", [name for name in blocks if shapes[name] == shape]))
    known = {name for _, names in groups for name in names}
    missing = [name for name in known if name not in shapes]
    if missing:
        raise AksharaError(f"the checkpoint has no {missing[0]}: not a nanochat 2026 model, whose optimizer state "
                           "this is")
    return groups


def find_optimizer_files(checkpoint_dir: Path, step: int) -> list[Path]:
    """`optim_{step:06d}_rank{r}.pt` for r = 0 .. W-1 (empty when the checkpoint has none); a gap is an error."""
    pattern = re.compile(rf"optim_{step:06d}_rank(\d+)\.pt")
    ranks = sorted(int(m.group(1)) for p in Path(checkpoint_dir).iterdir() if (m := pattern.fullmatch(p.name)))
    if ranks and ranks != list(range(len(ranks))):
        missing = next(r for r in range(max(ranks) + 1) if r not in ranks)
        raise AksharaError(f"{checkpoint_dir}: optim_{step:06d}_rank{missing}.pt is missing (ranks found: {ranks}); "
                           "the optimizer state is sharded over every rank's file")
    return [Path(checkpoint_dir) / f"optim_{step:06d}_rank{rank}.pt" for rank in ranks]


def _load(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an UnpicklingError for a pickle with code, others for a damaged file
        raise AksharaError(f"{path}: not a plain optimizer state ({type(error).__name__}: {one_line(error, 200)})") from None
    if isinstance(data, (list, tuple)):
        return {"late-2025": True}
    if not (isinstance(data, dict) and isinstance(data.get("state"), dict) and isinstance(data.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in data["param_groups"])):
        raise AksharaError(f"{path}: not a torch optimizer state (expected 'state' and 'param_groups')")
    return data


def _tensor(path: Path, state: dict, index: int, key: str, name: str) -> torch.Tensor:
    value = state.get(index, {}).get(key) if isinstance(state.get(index), dict) else None
    if not isinstance(value, torch.Tensor):
        raise AksharaError(f"{path}: no {key} for tensor {index} ({name})")
    return value


def _check_shape(path: Path, name: str, key: str, value: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(value.shape) != tuple(expected):
        raise AksharaError(f"{path}: {name}'s {key} is {list(value.shape)}, this checkpoint's model needs "
                           f"{list(expected)} (another model's optimizer state, or some ranks' files missing?)")


def read_nanochat_optimizer(files: list[Path], shapes: dict[str, tuple[int, ...]], vocab_size: int,
                            to_ours) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The state in `files` (rank order) as `({"{our name}/{key}": tensor}, layout)`, or None (with a note on
    stderr) when there is nothing to carry: a late-2025 optimizer file (two optimizers; not carried) or a state saved
    before any step. `shapes`: the checkpoint's tensors (nanochat names, padded vocab rows); `to_ours` maps a name."""
    states = [_load(path) for path in files]
    if any("late-2025" in state for state in states):
        print(f"convert-nanochat: {files[0].name} holds late-2025 nanochat's two optimizers; optimizer state is "
              "carried for nanochat 2026 checkpoints only", file=sys.stderr)
        return None
    groups = nanochat_optimizer_groups(shapes)
    world = len(files)
    expected, index = [], 0
    for kind, names in groups:
        expected.append((kind, list(range(index, index + len(names)))))
        index += len(names)
    for path, state in zip(files, states, strict=True):
        found = [(g.get("kind"), g["params"]) for g in state["param_groups"]]
        if found != expected:
            raise AksharaError(f"{path}: its parameter groups {[(k, len(p)) for k, p in found]} are not nanochat "
                               f"2026's for this checkpoint's model {[(k, len(p)) for k, p in expected]} (another "
                               "model's optimizer state?)")
    if not any(state["state"] for state in states):
        print(f"convert-nanochat: {files[0].name} holds no optimizer state yet (saved before any step); not carried",
              file=sys.stderr)
        return None
    tensors, parameters = {}, {}
    for (kind, names), (_, indices) in zip(groups, expected, strict=True):
        if kind == "adamw":
            for name, index in zip(names, indices, strict=True):
                shape = shapes[name]
                numel = math.prod(shape)
                sharded = world > 1 and numel >= SHARDED_ADAMW_NUMEL
                if sharded and shape[0] % world:
                    raise AksharaError(f"{files[0]}: {name} has {shape[0]} rows, which {world} ranks cannot share")
                part_shape = (shape[0] // world, *shape[1:]) if sharded else shape
                steps = set()
                for key in ADAMW_KEYS:
                    parts = []
                    for path, state in zip(files, states, strict=True):
                        value = _tensor(path, state["state"], index, key, name)
                        _check_shape(path, name, key, value, part_shape)
                        parts.append(value)
                        steps.add(state["state"][index].get("step"))
                    tensors[(name, key)] = torch.cat(parts) if sharded else parts[0]
                if len(steps) != 1 or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0
                                              for s in steps):  # fmt: skip
                    raise AksharaError(f"{files[0]}: {name}'s AdamW step is {sorted(map(str, steps))} over the ranks")
                parameters[name] = {"optimizer": "adamw", "step": int(steps.pop())}
        else:
            first, count = indices[0], len(indices)
            chunk = math.ceil(count / world)
            rows, cols = shapes[names[0]]
            moment = (rows, 1) if rows >= cols else (1, cols)
            for key, shape in zip(MUON_KEYS, ((rows, cols), moment), strict=True):
                parts = []
                for rank, (path, state) in enumerate(zip(files, states, strict=True)):
                    value = _tensor(path, state["state"], first, key, f"the Muon group of {names[0]}")
                    _check_shape(path, f"the {list(shapes[names[0]])} Muon group", key, value, (chunk, *shape))
                    parts.append(value[: max(0, min(chunk, count - rank * chunk))])
                stacked = torch.cat(parts)
                for position, name in enumerate(names):
                    tensors[(name, key)] = stacked[position]
            for name in names:
                parameters[name] = {"optimizer": "muon"}
    out, layout_parameters = {}, {}
    for (name, key), value in tensors.items():
        ours = to_ours(name)
        if re.fullmatch(r"(transformer\.wte|lm_head|transformer\.value_embeds\.\d+)\.weight", ours):
            value = value[:vocab_size]  # nanochat's padding rows: never read by the forward
        out[f"{ours}/{key}"] = value.contiguous()
        layout_parameters.setdefault(ours, {**parameters[name], "shape": list(value.shape)})
    layout = {
        "format": FORMAT, "nanochat_generation": "2026", "source": [path.name for path in files], "ranks": world,
        "parameters": layout_parameters,
    }  # fmt: skip
    return out, layout


def write_optimizer_state(folder: Path, tensors: dict[str, torch.Tensor], layout: dict) -> None:
    from safetensors.torch import save

    (Path(folder) / OPTIMIZER_FILE).write_bytes(save(tensors, metadata={"format": FORMAT}))
    (Path(folder) / OPTIMIZER_LAYOUT).write_text(json.dumps(layout, indent=1))


def read_optimizer_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """What `write_optimizer_state` wrote, checked: every parameter of the layout has its tensors, of its shape."""
    from safetensors.torch import load

    folder = Path(folder)
    layout_path, tensors_path = folder / OPTIMIZER_LAYOUT, folder / OPTIMIZER_FILE
    if not layout_path.is_file() or not tensors_path.is_file():
        raise AksharaError(f"{folder}: no nanochat optimizer state ({OPTIMIZER_LAYOUT} and {OPTIMIZER_FILE}, written by "
                           "`akshara-hf convert-nanochat` from a checkpoint's optim_*_rank*.pt files)")
    try:
        layout = json.loads(layout_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise AksharaError(f"{layout_path}: not JSON ({one_line(error, 200)})") from None
    if not isinstance(layout, dict) or layout.get("format") != FORMAT or not isinstance(layout.get("parameters"), dict):
        raise AksharaError(f"{layout_path}: not a {FORMAT} layout")
    try:
        tensors = load(tensors_path.read_bytes())
    except Exception as error:  # SafetensorError (truncated or foreign bytes) has no public class
        raise AksharaError(f"{tensors_path}: not a safetensors file ({one_line(error, 200)})") from None
    for name, entry in layout["parameters"].items():
        kind = entry.get("optimizer") if isinstance(entry, dict) else None
        if kind not in ("adamw", "muon") or not isinstance(entry.get("shape"), list):
            raise AksharaError(f"{layout_path}: {name}: expected an optimizer ('adamw' or 'muon') and a shape")
        if kind == "adamw" and not (isinstance(entry.get("step"), int) and entry["step"] >= 0):
            raise AksharaError(f"{layout_path}: {name}: an AdamW state needs its step (an integer >= 0)")
        for key in ADAMW_KEYS if kind == "adamw" else MUON_KEYS:
            value = tensors.get(f"{name}/{key}")
            if value is None:
                raise AksharaError(f"{tensors_path}: no {name}/{key}")
            if key != "second_momentum_buffer" and list(value.shape) != entry["shape"]:
                raise AksharaError(f"{tensors_path}: {name}/{key} is {list(value.shape)}, the layout says {entry['shape']}")
    return tensors, layout


__all__ = ["OPTIMIZER_FILE", "OPTIMIZER_LAYOUT", "nanochat_optimizer_groups", "find_optimizer_files",
           "read_nanochat_optimizer", "write_optimizer_state", "read_optimizer_state"]
