"""Bounds checked before any work, so that hostile or mistaken input is one line instead of a hang or a crash.

* Inputs are read only when they are regular files: reading a named pipe waits for a writer forever, a device or a
  socket never ends or never starts (`regular_file`, and `regular_tree` for the folders a command reads).
* A model's sizes (layers, width, heads, positions, vocabulary) must fit this machine's memory before anything is
  built: `n_layer: 10000000` in a nanochat meta file or `--model_config '{depth: 1000000000}'` would otherwise
  allocate (or build modules on the meta device) until the process is killed (`check_model_fits`).

Plain Python (no torch): the checks run before the heavy imports.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from akshara_hf.errors import AksharaError

_KINDS = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` when it is a regular file (symbolic links followed); an AksharaError naming it otherwise."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise AksharaError(f"{path}: no such {what}") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        raise AksharaError(f"{path}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
    if stat.S_ISDIR(mode):
        raise AksharaError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(mode):
        raise AksharaError(f"{path}: is a {_kind(mode)}, not a regular file; refusing to read it as a {what}")
    return path


def regular_tree(folder: str | os.PathLike, depth: int = 2) -> Path:
    """`folder` when every entry down to `depth` levels is a folder or a regular file (links followed; a dangling link
    is left to the reader that needs it): the libraries that read a model or dataset folder open its files blindly."""
    folder = Path(folder)
    entries = [(folder, 0)]
    while entries:
        current, level = entries.pop()
        try:
            children = list(os.scandir(current))
        except OSError:
            continue  # unreadable: the reader reports it
        for child in children:
            try:
                mode = os.stat(child.path).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                if level + 1 < depth:
                    entries.append((Path(child.path), level + 1))
            elif not stat.S_ISREG(mode):
                raise AksharaError(f"{child.path}: is a {_kind(mode)}, not a regular file; refusing to read "
                                   f"{folder}")
    return folder


def check_json_depth(path: str | os.PathLike, limit: int = 512) -> None:
    """Refuse JSON or JSON Lines nested deeper than `limit`: pyarrow's reader (`load_dataset("json")`) recursed until
    the process died (SIGSEGV) on a row nested 100,000 deep. Bracket counts are cheap; only a suspicious line, or a
    file whose open brackets pile up across lines, is parsed to tell."""
    import json

    path, depth, deep = Path(path), 0, False
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            opens = line.count(b"[") + line.count(b"{")
            depth += opens - line.count(b"]") - line.count(b"}")
            deep = deep or depth > limit
            if opens > limit:
                try:
                    json.loads(line)
                except RecursionError:
                    raise AksharaError(f"{path}: line {number}: JSON nested too deeply") from None
                except ValueError:
                    pass  # not JSON on its own: the reader reports it
    if deep:
        try:
            json.loads(path.read_bytes())
        except RecursionError:
            raise AksharaError(f"{path}: JSON nested too deeply") from None
        except ValueError:
            pass


# --- memory -----------------------------------------------------------------------------------------------------


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or a smaller cgroup limit; None when unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        total = None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = int(Path(limit_file).read_text().strip())
        except (OSError, ValueError):  # absent, or "max"
            continue
        if limit > 0 and (total is None or limit < total):
            total = limit
    return total


# AksharaConfig's defaults (the d20 shape): the size a suspicious field is compared against to name the culprit.
_REFERENCE = {"vocab_size": 65536, "hidden_size": 1280, "num_hidden_layers": 20, "num_attention_heads": 10,
              "num_key_value_heads": 10, "intermediate_size": 5120, "max_position_embeddings": 2048,
              "rotary_cache_factor": 10}
SIZE_FIELDS = tuple(_REFERENCE)
_VE_GATE_CHANNELS = 32  # nanochat 2026's value-embedding gate input (modeling_akshara.VE_GATE_CHANNELS)
_DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def model_bytes(fields: Mapping, bytes_per_parameter: int = 4) -> int | None:
    """A lower bound on the memory an Akshara model of these config fields takes: its parameters, plus the rotary
    tables (`rotary_cache_factor` x `max_position_embeddings` rows of cos and sin, computed in fp32) when the config
    has them. None when a size is not a non-negative integer (the config's own validation reports that)."""
    size = {name: _int(fields.get(name)) for name in SIZE_FIELDS}
    needed = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    if any(size[name] is None for name in needed) or size["num_attention_heads"] == 0:
        return None
    hidden, heads, layers, vocab = (size[name] for name in ("hidden_size", "num_attention_heads",
                                                            "num_hidden_layers", "vocab_size"))
    kv_heads = size["num_key_value_heads"] if fields.get("num_key_value_heads") is not None else heads
    inner = size["intermediate_size"] if fields.get("intermediate_size") is not None else 4 * hidden
    if kv_heads is None or inner is None:
        return None
    head_dim = hidden // heads
    per_layer = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 2 * hidden * inner
    parameters = 2 * vocab * hidden + layers * per_layer
    if fields.get("use_value_embeddings"):  # every other layer, the last always
        parameters += (layers + 1) // 2 * (vocab * kv_heads * head_dim + _VE_GATE_CHANNELS * kv_heads)
    total = parameters * bytes_per_parameter
    positions, factor = size["max_position_embeddings"], size["rotary_cache_factor"]
    if positions is not None and factor is not None and fields.get("rotary_cache_factor") is not None:
        total += factor * positions * head_dim * 4  # cos and sin, head_dim // 2 columns each, fp32
    return total


def dtype_bytes(dtype) -> int:
    """Bytes per parameter of a config's `dtype` / `torch_dtype` ("bfloat16", ...); 2 (the narrowest float the model
    computes in, so the estimate stays a lower bound) when absent or unknown."""
    return _DTYPE_BYTES.get(str(dtype).removeprefix("torch."), 2)


def human_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable


def check_model_fits(fields: Mapping, where: str, names: Mapping[str, str] | None = None,
                     given: Mapping | None = None, bytes_per_parameter: int = 4, memory: int | None = None) -> None:
    """Refuse config `fields` (AksharaConfig names) whose model cannot fit this machine's memory, in one line naming
    the field that makes it big as the input spelt it (`names`: our name -> the input's, e.g. `n_layer`; `given`: the
    input's values, e.g. `{depth: N}`), the estimate and the memory."""
    memory = machine_memory() if memory is None else memory
    estimate = model_bytes(fields, bytes_per_parameter)
    if memory is None or estimate is None or estimate <= memory:
        return
    # The culprit: the field whose d20 value shrinks the estimate most.
    shrunk = {name: model_bytes({**fields, name: _REFERENCE[name]}, bytes_per_parameter)
              for name in SIZE_FIELDS if _int(fields.get(name)) is not None}
    culprit = min(shrunk, key=lambda name: shrunk[name] if shrunk[name] is not None else estimate)
    label = (names or {}).get(culprit, culprit)
    value = (given or {}).get(label, fields[culprit])
    raise AksharaError(f"{where}: {label} {value:,}: a model of this size needs at least "
                       f"{human_bytes(estimate)} of memory (parameters and rotary tables), this machine has "
                       f"{human_bytes(memory)}")
