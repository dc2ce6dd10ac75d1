"""Run facts: the schema of `run_facts.json` (what the trainer records) and its validation.

One flat JSON object; every field but `run_name` and `stage` may be missing or null (the card then leaves that
row out). Unknown keys are refused, so a misspelt field is an error instead of a silently missing figure.
`RUN_FACTS_FIELDS` is the schema (field -> (kind, meaning)); `akshara_hf/training/training_log.py` writes it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from akshara_hf.errors import AksharaError
from akshara_hf.loading import read_json

RUN_FACTS_FILE = "run_facts.json"
STAGES = ("base", "mid", "sft")

RUN_FACTS_FIELDS: dict[str, tuple[str, str]] = {
    "run_name": ("str", "checkpoint / run name; the card's title (required)"),
    "stage": ("stage", "'base', 'mid' or 'sft' (required)"),
    "base_model": ("str", "parent checkpoint: Hub repo id 'owner/name' (also written as YAML base_model) or a name"),
    "trainer": ("str", "'trl' (this project's trainer, the default) or 'nanochat' (nanochat's own scripts)"),
    "hardware": ("str", "e.g. '1 × NVIDIA A30'"),
    "num_steps": ("int", "optimizer steps (of a card written during training: the steps taken so far)"),
    "in_progress": ("bool", "true on a card written while the run trains (a checkpoint's): figures up to num_steps"),
    "planned_steps": ("int", "optimizer steps the run was set to take (recorded while it is in progress)"),
    "train_time_seconds": ("num", "wall-clock training time in seconds"),
    "dtype": ("str", "training precision, e.g. 'bfloat16'"),
    "device_batch_size": ("int", "rows or conversations per device micro-batch"),
    "examples_per_step": ("int", "conversations per optimizer step (SFT)"),
    "total_batch_tokens": ("int", "tokens per optimizer step (base/mid)"),
    "max_seq_len": ("int", "maximum sequence length in tokens"),
    "matrix_lr": ("num", "Muon learning rate for the block matrices"),
    "embedding_lr": ("num", "AdamW learning rate for the token embedding"),
    "unembedding_lr": ("num", "AdamW learning rate for lm_head"),
    "init_lr_frac": ("num", "fraction of the base learning rates the run starts from"),
    "weight_decay": ("num", "weight decay"),
    "num_epochs": ("num", "passes over the training mixture the run made (a fraction when it stopped within one)"),
    "eval_every": ("int", "steps between validation evaluations, as set (log_history has the ones that happened)"),
    "checkpoint_steps": ("ints", "steps at which the run saved a checkpoint"),
    "learning_rates": ("learning_rates", "list of {group, lr}: each optimizer group's LR as applied before the "
                                         "schedule's multiplier (width scaling and init_lr_frac included)"),
    "eval_tokens": ("int", "tokens per validation evaluation"),
    "final_train_loss": ("num", "last training loss (nats per target token)"),
    "final_val_loss": ("num", "last validation loss (nats per target token)"),
    "final_val_bpb": ("num", "last validation bits per byte"),
    "final_lrm": ("num", "learning-rate multiplier at the last step"),
    "total_flops": ("num", "training FLOPs"),
    "flops_per_token": ("num", "training FLOPs per token (nanochat's estimate)"),
    "tokens_seen": ("int", "training tokens processed"),
    "datasets": ("strs", "Hub dataset ids for the YAML metadata (default: the mixture's hub_id values)"),
    "data_sources": ("strs", "every mixture source the run used, 'kind: path or Hub id' (never rendered: paths)"),
    "mixture": ("mixture", "list of {source, rows, tokens, hub_id}: hub_id is the Hub dataset the rows came from"),
    "log_history": ("log_history", "list of {step, loss, eval_loss, eval_bpb, lrm}"),
    "eval_results": ("eval_results", "list of {task, dataset, metric, value[, split]}"),
}
LOG_VALUES = ("loss", "eval_loss", "eval_bpb", "lrm")
MIXTURE_FIELDS = {"source": ("str", True), "rows": ("int", False), "tokens": ("int", False), "hub_id": ("str", False)}
LR_FIELDS = {"group": ("str", True), "lr": ("num", True)}
EVAL_FIELDS = {"task": ("str", True), "dataset": ("str", True), "metric": ("str", True), "value": ("num", True),
               "split": ("str", False)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_value(kind: str, value: Any, where: str) -> Any:
    """One scalar of the schema; `where` names file and field for the error."""
    if value is None:
        return None
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise AksharaError(f"{where}: must be a non-empty string, got {value!r}")
        return value
    if kind == "stage":
        if value not in STAGES:
            raise AksharaError(f"{where}: must be one of {list(STAGES)}, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise AksharaError(f"{where}: must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise AksharaError(f"{where}: must be a non-negative integer, got {value!r}")
        return value
    if kind == "num":
        if not _is_number(value):
            raise AksharaError(f"{where}: must be a finite number, got {value!r}")
        return value
    raise AssertionError(kind)


def _check_records(value: Any, where: str, fields: dict[str, tuple[str, bool]]) -> list[dict]:
    """A list of flat records; `fields` maps key -> (kind, required)."""
    if not isinstance(value, list):
        raise AksharaError(f"{where}: must be a list, got {type(value).__name__}")
    records = []
    for index, record in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(record, dict):
            raise AksharaError(f"{at}: must be an object, got {type(record).__name__}")
        unknown = sorted(set(record) - set(fields))
        if unknown:
            raise AksharaError(f"{at}: unknown keys {unknown} (allowed: {sorted(fields)})")
        checked = {}
        for key, (kind, required) in fields.items():
            if required and record.get(key) is None:
                raise AksharaError(f"{at}.{key}: required")
            checked[key] = _check_value(kind, record.get(key), f"{at}.{key}")
        records.append(checked)
    return records


def validate_run_facts(facts: Any, source: str = RUN_FACTS_FILE) -> dict:
    """Check `facts` against the schema and return a complete copy (missing scalars None, missing lists [])."""
    if not isinstance(facts, dict):
        raise AksharaError(f"{source}: must be a JSON object, got {type(facts).__name__}")
    unknown = sorted(set(facts) - set(RUN_FACTS_FIELDS))
    if unknown:
        raise AksharaError(f"{source}: unknown fields {unknown} (see RUN_FACTS_FIELDS in model_card/facts.py)")
    out: dict[str, Any] = {}
    for name, (kind, _) in RUN_FACTS_FIELDS.items():
        value, where = facts.get(name), f"{source}: {name}"
        if name in ("run_name", "stage") and value is None:
            raise AksharaError(f"{where}: required")
        if kind == "strs":
            value = [] if value is None else value
            if not isinstance(value, list):
                raise AksharaError(f"{where}: must be a list of strings")
            out[name] = [_check_value("str", v, f"{where}[{i}]") for i, v in enumerate(value)]
        elif kind == "ints":
            value = [] if value is None else value
            if not isinstance(value, list):
                raise AksharaError(f"{where}: must be a list of non-negative integers")
            out[name] = [_check_value("int", v, f"{where}[{i}]") for i, v in enumerate(value)]
            if any(v is None for v in out[name]):
                raise AksharaError(f"{where}: must be a list of non-negative integers, got a null")
        elif kind == "learning_rates":
            out[name] = _check_records(value or [], where, LR_FIELDS)
        elif kind == "mixture":
            out[name] = _check_records(value or [], where, MIXTURE_FIELDS)
        elif kind == "log_history":
            fields = {"step": ("int", True), **{key: ("num", False) for key in LOG_VALUES}}
            out[name] = sorted(_check_records(value or [], where, fields), key=lambda r: r["step"])
        elif kind == "eval_results":
            out[name] = _check_records(value or [], where, EVAL_FIELDS)
        else:
            out[name] = _check_value(kind, value, where)
    if out["trainer"] is None:
        out["trainer"] = "trl"
    return out


def load_run_facts(path: str | Path) -> dict:
    """`run_facts.json`, checked."""
    path = Path(path)
    return validate_run_facts(read_json(path), str(path))
