"""Hub model cards for Akshara folders, written from the run's facts so the published figures are the measured ones.

A card is `huggingface_hub.ModelCard.from_template(ModelCardData(...), template.md)`: YAML metadata the Hub reads
(language, license, library, pipeline, tags, datasets, base_model, model-index), then the model's story in the
shape of the Akshara write-ups (docs/akshara-runs.md): architecture, stage and parent, data mixture, training table, loss
curve, evaluation, usage, intended use and limitations.

Run facts (`run_facts.json`, written by the trainer into its output folder)
---------------------------------------------------------------------------
One flat JSON object; every field but `run_name` and `stage` may be missing or null (the card then leaves that
row out). Unknown keys are refused, so a misspelt field is an error instead of a silently missing figure.
`RUN_FACTS_FIELDS` below is the schema (field -> (kind, meaning)); in short:

    run_name            str    checkpoint / run name, the card's title
    stage               str    "base" | "mid" | "sft"
    base_model          str    parent checkpoint: a Hub repo id "owner/name" (then also YAML `base_model`) or a name
    trainer             str    "trl" (this project's trainer; the default) or "nanochat" (nanochat's own scripts)
    hardware            str    e.g. "1 × NVIDIA A30"
    num_steps           int    optimizer steps
    train_time_seconds  num    wall-clock training time
    dtype               str    e.g. "bfloat16"
    device_batch_size   int    rows (mid/base) or conversations (sft) per device micro-batch
    examples_per_step   int    conversations per optimizer step (sft)
    total_batch_tokens  int    tokens per optimizer step (base/mid)
    max_seq_len         int
    matrix_lr, embedding_lr, unembedding_lr, init_lr_frac, weight_decay, num_epochs   num
    eval_every          int    steps between validation evaluations
    eval_tokens         int    tokens per validation evaluation (base/mid)
    final_train_loss, final_val_loss, final_val_bpb, final_lrm   num   (losses: nats per target token)
    total_flops         num    training FLOPs (nanochat's estimate: 6·(params − wte) + attention, × tokens)
    flops_per_token     num    that estimate per token
    tokens_seen         int    training tokens processed
    datasets            [str]  Hub dataset ids for the YAML `datasets` (default: recognised mixture sources)
    mixture             [{source: str, rows: int|null, tokens: int|null}]
    log_history         [{step: int, loss, eval_loss, eval_bpb, lrm: num|null}]   -> loss_curve.png
    eval_results        [{task: str, dataset: str (Hub id), metric: str, value: num, split: str (optional)}]
                        -> YAML model-index

Converted nanochat checkpoints carry `nanochat_meta.json` instead (`facts_from_nanochat_meta`), and the eight
published Akshara runs have their reported figures in `seed_run_facts(run_name)`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from akshara_hf.errors import AksharaError

RUN_FACTS_FILE = "run_facts.json"
NANOCHAT_META_FILE = "nanochat_meta.json"
LOSS_CURVE_FILE = "loss_curve.png"
CARD_FILE = "README.md"
TEMPLATE_PATH = Path(__file__).with_name("template.md")

STAGES = ("base", "mid", "sft")
STAGE_LABELS = {"base": "pre-training", "mid": "mid-training", "sft": "supervised fine-tuning (SFT)"}
BASE_TAGS = ("nanochat", "akshara", "telugu", "muon", "custom_code", "conversational")
STAGE_TAGS = {"base": "pretraining", "mid": "mid-training", "sft": "sft"}

RUN_FACTS_FIELDS: dict[str, tuple[str, str]] = {
    "run_name": ("str", "checkpoint / run name; the card's title (required)"),
    "stage": ("stage", "'base', 'mid' or 'sft' (required)"),
    "base_model": ("str", "parent checkpoint: Hub repo id 'owner/name' (also written as YAML base_model) or a name"),
    "trainer": ("str", "'trl' (this project's trainer, the default) or 'nanochat' (nanochat's own scripts)"),
    "hardware": ("str", "e.g. '1 × NVIDIA A30'"),
    "num_steps": ("int", "optimizer steps"),
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
    "num_epochs": ("num", "passes over the training mixture"),
    "eval_every": ("int", "steps between validation evaluations"),
    "eval_tokens": ("int", "tokens per validation evaluation"),
    "final_train_loss": ("num", "last training loss (nats per target token)"),
    "final_val_loss": ("num", "last validation loss (nats per target token)"),
    "final_val_bpb": ("num", "last validation bits per byte"),
    "final_lrm": ("num", "learning-rate multiplier at the last step"),
    "total_flops": ("num", "training FLOPs"),
    "flops_per_token": ("num", "training FLOPs per token (nanochat's estimate)"),
    "tokens_seen": ("int", "training tokens processed"),
    "datasets": ("strs", "Hub dataset ids for the YAML metadata"),
    "data_sources": ("strs", "every mixture source the run used, 'kind: path or Hub id' (run_facts.json)"),
    "mixture": ("mixture", "list of {source, rows, tokens}"),
    "log_history": ("log_history", "list of {step, loss, eval_loss, eval_bpb, lrm}"),
    "eval_results": ("eval_results", "list of {task, dataset, metric, value[, split]}"),
}
LIST_FIELDS = ("datasets", "data_sources", "mixture", "log_history", "eval_results")
LOG_VALUES = ("loss", "eval_loss", "eval_bpb", "lrm")

# Mixture sources we can link to a public Hub dataset (matched on the lower-cased source name without
# punctuation). TeSum, the news sets, the stories and the identity data have no public Hub id we can vouch for.
KNOWN_HUB_DATASETS = (
    ("smoltalk", "HuggingFaceTB/smol-smoltalk"),
    ("xlsum", "csebuetnlp/xlsum"),
    ("indicparaphrase", "ai4bharat/IndicParaphrase"),
)

# nanochat's chat_sft saves task accuracies at the top level of its meta file.
NANOCHAT_METRICS = {
    "mmlu_acc": ("MMLU", "cais/mmlu"),
    "arc_easy_acc": ("ARC-Easy", "allenai/ai2_arc"),
    "arc_challenge_acc": ("ARC-Challenge", "allenai/ai2_arc"),
    "gsm8k_acc": ("GSM8K", "openai/gsm8k"),
    "humaneval_acc": ("HumanEval", "openai/openai_humaneval"),
}

# Usage examples. The summary prompt is the second of the five in docs/akshara-runs.md, verbatim.
GREETING_PROMPT = "నమస్కారం! నీ పేరు ఏమిటి?"
SUMMARY_PROMPT = "ఈ వ్యాసం యొక్క సారాంశం రాయండి"


# ---------------------------------------------------------------------------------------------------------------
# run facts


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
        raise AksharaError(f"{source}: unknown fields {unknown} (see RUN_FACTS_FIELDS in model_card/card.py)")
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
        elif kind == "mixture":
            out[name] = _check_records(
                value or [], where, {"source": ("str", True), "rows": ("int", False), "tokens": ("int", False)}
            )
        elif kind == "log_history":
            fields = {"step": ("int", True), **{key: ("num", False) for key in LOG_VALUES}}
            out[name] = sorted(_check_records(value or [], where, fields), key=lambda r: r["step"])
        elif kind == "eval_results":
            fields = {
                "task": ("str", True), "dataset": ("str", True), "metric": ("str", True),
                "value": ("num", True), "split": ("str", False),
            }
            out[name] = _check_records(value or [], where, fields)
        else:
            out[name] = _check_value(kind, value, where)
    if out["trainer"] is None:
        out["trainer"] = "trl"
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AksharaError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AksharaError(f"{path}: not valid JSON ({error})") from None


def load_run_facts(path: str | Path) -> dict:
    """`run_facts.json`, checked."""
    path = Path(path)
    return validate_run_facts(_read_json(path), str(path))


def _stage_from_meta(meta: dict, user_config: dict) -> str:
    """nanochat keeps each stage in its own checkpoint directory; failing that, its CLI options tell them apart."""
    source = str(meta.get("source_checkpoint", "")).replace("\\", "/")
    for marker, stage in (("chatsft_checkpoints", "sft"), ("mid_checkpoints", "mid"), ("base_checkpoints", "base")):
        if marker in source:
            return stage
    if "chatrl_checkpoints" in source:
        raise AksharaError(f"{NANOCHAT_META_FILE}: an RL checkpoint ({source}); cards describe base/mid/sft only")
    if "target_examples_per_step" in user_config or "num_epochs" in user_config:
        return "sft"
    if "depth" in user_config or "target_param_data_ratio" in user_config:
        return "base"
    if "total_batch_size" in user_config or "val_bpb" in meta:
        return "mid"
    raise AksharaError(f"{NANOCHAT_META_FILE}: cannot tell the training stage; pass run facts explicitly")


def facts_from_nanochat_meta(meta: dict, run_name: str | None = None) -> dict:
    """Run facts from a nanochat `meta_*.json` (copied into converted folders as `nanochat_meta.json`).

    nanochat records little: the step, the last validation bpb (base/mid) or loss (sft), task accuracies (sft),
    and the options the script ran with. The step is the checkpoint's step as nanochat saved it. The run name is
    `user_config["run"]` unless that is nanochat's placeholder "dummy", then `run_name`, then `nanochat-d{depth}-{stage}`.
    """
    if not isinstance(meta, dict):
        raise AksharaError(f"{NANOCHAT_META_FILE}: must be a JSON object, got {type(meta).__name__}")
    model_config = meta.get("model_config") or {}
    user_config = meta.get("user_config") or {}
    if not isinstance(model_config, dict) or not isinstance(user_config, dict):
        raise AksharaError(f"{NANOCHAT_META_FILE}: model_config and user_config must be objects")
    stage = _stage_from_meta(meta, user_config)
    run = user_config.get("run")
    if not isinstance(run, str) or not run.strip() or run == "dummy":
        run = run_name or f"nanochat-d{model_config.get('n_layer', '')}-{stage}"
    facts: dict[str, Any] = {
        "run_name": run,
        "stage": stage,
        "trainer": "nanochat",
        "num_steps": meta.get("step"),
        "final_val_bpb": meta.get("val_bpb"),
        "final_val_loss": meta.get("val_loss"),
        "max_seq_len": user_config.get("max_seq_len", model_config.get("sequence_len")),
        "examples_per_step": user_config.get("target_examples_per_step"),
        "total_batch_tokens": user_config.get("total_batch_size"),
    }
    for key in ("dtype", "device_batch_size", "matrix_lr", "embedding_lr", "unembedding_lr", "init_lr_frac",
                "weight_decay", "num_epochs", "eval_every", "eval_tokens"):
        facts[key] = user_config.get(key)
    if stage == "base":  # base_train has no init_lr_frac; its LR schedule is warmup/warmdown instead
        facts["init_lr_frac"] = None
    evals = []
    for key, value in sorted(meta.items()):
        if key.endswith("_acc") and _is_number(value):
            task, dataset = NANOCHAT_METRICS.get(key, (key.removesuffix("_acc"), key.removesuffix("_acc")))
            evals.append({"task": task, "dataset": dataset, "metric": "accuracy", "value": value})
    facts["eval_results"] = evals
    # nanochat writes -1 for "not set" in several options.
    facts = {k: (None if _is_number(v) and v < 0 else v) for k, v in facts.items()}
    return validate_run_facts(facts, NANOCHAT_META_FILE)


# ---------------------------------------------------------------------------------------------------------------
# the eight published runs (docs/akshara-runs.md)

_A30 = {"hardware": "1 × NVIDIA A30", "dtype": "bfloat16", "trainer": "nanochat",
        "matrix_lr": 0.02, "embedding_lr": 0.2, "unembedding_lr": 0.004}
# Both mid runs: nanochat's default 524,288 tokens per step, which the reported FLOPs confirm
# (FLOPs / steps / 524,288 = 3.49 GFLOP per token, nanochat's estimate for d20 at 2,048 tokens).
_MID = {**_A30, "stage": "mid", "base_model": "nanochat-telugu-d20", "max_seq_len": 2048, "init_lr_frac": 1.0,
        "total_batch_tokens": 524288, "eval_every": 150, "eval_tokens": 10485760}
_SFT = {**_A30, "stage": "sft", "base_model": "nanochat-telugu-d20-mid-smoltalk-100k", "device_batch_size": 2,
        "examples_per_step": 32, "init_lr_frac": 0.02, "weight_decay": 0, "num_epochs": 1, "eval_every": 100}

_SMOLTALK = "SmolTalk (Telugu translation of HuggingFaceTB/smol-smoltalk)"
_NEWS = "News articles (AYA Telugu news and others; article ↔ title)"
_TESUM = "TeSum (IIIT Hyderabad), summaries"
_XLSUM = "XL-Sum, Telugu (csebuetnlp/xlsum), summaries"
_PARAPHRASE = "IndicParaphrase, Telugu"
_STORIES = "Telugu tiny stories"
_IDENTITY = "Identity and personality (custom)"


def _src(source: str, rows: int | None = None) -> dict:
    return {"source": source, "rows": rows, "tokens": None}


SEED_RUNS: dict[str, dict] = {
    "nanochat-telugu-d20-mid-smoltalk-100k": {
        **_MID, "device_batch_size": 4, "num_steps": 262, "train_time_seconds": 5655.47,
        "final_train_loss": 0.95, "final_val_bpb": 0.276, "total_flops": 479639957384724500, "final_lrm": 0.025,
        "mixture": [_src(_SMOLTALK, 100_000)],
    },
    "nanochat-telugu-d20-mid-v1-akshara": {
        **_MID, "device_batch_size": 2, "num_steps": 1047, "train_time_seconds": 24586.11,
        "final_train_loss": 0.89, "final_val_bpb": 0.268, "total_flops": 1916729142678651000, "final_lrm": 0.031,
        "mixture": [_src(_SMOLTALK), _src(_NEWS), _src(_TESUM), _src(_XLSUM), _src(_PARAPHRASE),
                    _src(_STORIES, 200_000), _src(_IDENTITY + ", included twice")],
    },
    "nanochat-telugu-d20-sft-smoltalk-10k": {
        **_SFT, "num_steps": 311, "train_time_seconds": 1566, "final_train_loss": 0.82, "final_val_loss": 0.84,
        "final_lrm": 0.0064, "mixture": [_src(_SMOLTALK, 10_000)],
    },
    "nanochat-telugu-d20-sft-summary": {
        **_SFT, "num_steps": 4054, "train_time_seconds": 17880, "final_train_loss": 0.71, "final_val_loss": 0.85,
        "final_lrm": 0.00049, "mixture": [_src(_TESUM)],
    },
    "nanochat-telugu-d20-sft-paraphrase": {
        **_SFT, "num_steps": 21760, "train_time_seconds": 49289, "final_train_loss": 0.93, "final_val_loss": 0.88,
        "final_lrm": 0.000092, "mixture": [_src(_PARAPHRASE)],
    },
    "nanochat-telugu-d20-sft-smoltalk-news-articles": {
        **_SFT, "num_steps": 16902, "train_time_seconds": 46983, "final_train_loss": 1.13, "final_val_loss": 0.84,
        "final_lrm": 0.00012, "mixture": [_src(_NEWS)],
    },
    "nanochat-telugu-d20-sft-smoltalk-stories": {
        **_SFT, "num_steps": 11704, "train_time_seconds": 35952, "final_train_loss": 0.80, "final_val_loss": 0.85,
        "final_lrm": 0.00017, "mixture": [_src(_STORIES)],
    },
    "nanochat-telugu-d20-sft-v1": {
        **_SFT, "base_model": "nanochat-telugu-d20-mid-v1-akshara", "num_steps": 45102, "train_time_seconds": 102047,
        "final_train_loss": 0.99, "final_val_loss": 0.89, "final_lrm": 0.000044,
        "mixture": [_src(_SMOLTALK, 10_000), _src(_IDENTITY), _src(_PARAPHRASE), _src(_NEWS), _src(_TESUM),
                    _src(_XLSUM), _src(_STORIES, 200_000)],
    },
}


def seed_run_facts(run_name: str) -> dict:
    """The figures the Akshara write-ups report for one of the eight published runs (no per-step log: no curve)."""
    if run_name not in SEED_RUNS:
        raise AksharaError(f"run_name {run_name!r}: not a published Akshara run (known: {', '.join(SEED_RUNS)})")
    return validate_run_facts({"run_name": run_name, **json.loads(json.dumps(SEED_RUNS[run_name]))}, run_name)


def folder_facts(folder: Path) -> dict:
    """The facts a folder carries: the trainer's run_facts.json, else a converted checkpoint's nanochat_meta.json."""
    if (folder / RUN_FACTS_FILE).is_file():
        return load_run_facts(folder / RUN_FACTS_FILE)
    if (folder / NANOCHAT_META_FILE).is_file():
        return facts_from_nanochat_meta(_read_json(folder / NANOCHAT_META_FILE), run_name=folder.resolve().name)
    raise AksharaError(f"{folder}: neither {RUN_FACTS_FILE} nor {NANOCHAT_META_FILE}; pass the run facts explicitly")


# ---------------------------------------------------------------------------------------------------------------
# architecture


def architecture_from_config(config_path: Path) -> dict:
    """Sizes from config.json, with the parameter count of this architecture (untied wte/lm_head, no biases)."""
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise AksharaError(f"{config_path}: must be a JSON object")
    model_type = config.get("model_type")
    if model_type not in ("akshara", "nanochat"):
        raise AksharaError(f"{config_path}: model_type {model_type!r} is not an Akshara/nanochat model")

    def positive(key: str, default: int | None = None) -> int:
        value = config.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise AksharaError(f"{config_path}: {key} must be a positive integer, got {value!r}")
        return value

    hidden, layers = positive("hidden_size"), positive("num_hidden_layers")
    heads, vocab = positive("num_attention_heads"), positive("vocab_size")
    kv_heads = positive("num_key_value_heads", heads)
    head_dim = positive("head_dim", hidden // heads)
    mlp = positive("intermediate_size", 4 * hidden)
    context = positive("max_position_embeddings", 2048)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o ; k, v
    per_layer = attention + 2 * hidden * mlp
    embedding = vocab * hidden
    params = 2 * embedding + layers * per_layer
    return {
        "model_type": model_type, "layers": layers, "hidden_size": hidden, "heads": heads, "kv_heads": kv_heads,
        "head_dim": head_dim, "intermediate_size": mlp, "vocab_size": vocab, "context": context,
        "softcap": config.get("final_logit_softcapping"), "params": params, "embedding_params": embedding,
        "params_short": _short_count(params),
    }


# ---------------------------------------------------------------------------------------------------------------
# formatting


def _short_count(n: float) -> str:
    for unit, name in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= unit:
            return f"{n / unit:.3g}{name}"
    return str(int(n))


def _num(value: float) -> str:
    """As the run reported it: 0.89, 0.000044, 1,566 (no scientific notation, thousands grouped)."""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    text = repr(float(value))
    if "e" in text:
        from numpy import format_float_positional

        text = format_float_positional(float(value), trim="-")
    whole, _, frac = text.partition(".")
    return f"{int(whole):,}" + (f".{frac}" if frac else "") if whole.lstrip("-").isdigit() else text


def _flops(value: float) -> str:
    for unit, name in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP")):
        if value >= unit:
            return f"{value / unit:.4g} {name} ({_num(value)})"
    return _num(value)


def _cell(value: Any) -> str:
    """Safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _hub_id(name: str) -> bool:
    """A Hub repo id ("owner/name") and not a local path: only those may go into YAML `base_model`."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.count("/") != 1 or name.startswith((".", "~")) or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_datasets(facts: dict) -> list[str]:
    if facts["datasets"]:
        return list(dict.fromkeys(facts["datasets"]))
    found = []
    for row in facts["mixture"]:
        key = "".join(ch for ch in row["source"].lower() if ch.isalnum())
        found += [hub for marker, hub in KNOWN_HUB_DATASETS if marker in key]
    return list(dict.fromkeys(found))


def _mixture_rows(facts: dict) -> list[dict]:
    rows = []
    for row in facts["mixture"]:
        key = "".join(ch for ch in row["source"].lower() if ch.isalnum())
        hub = next((hub for marker, hub in KNOWN_HUB_DATASETS if marker in key), None)
        rows.append({
            "source": _cell(row["source"]),
            "rows": _num(row["rows"]) if row["rows"] is not None else "—",
            "tokens": _num(row["tokens"]) if row["tokens"] is not None else "—",
            "hub": f"[{hub}](https://huggingface.co/datasets/{hub})" if hub else "—",
        })
    return rows


def _training_rows(facts: dict) -> list[tuple[str, str]]:
    """(label, value) rows of the training table; rows without a figure are left out, derived ones say so."""
    f = facts
    rows: list[tuple[str, str]] = []

    def add(label: str, value: Any, fmt=_num) -> None:
        if value is not None:
            rows.append((label, _cell(fmt(value))))

    trainer = {"trl": "TRL `SFTTrainer` (Akshara-HF)", "nanochat": "nanochat training scripts"}.get(f["trainer"], f["trainer"])
    add("Hardware", f["hardware"], str)
    add("Trainer", trainer, str)
    rows.append(("Optimizer", "Muon (block matrices) + AdamW (embedding, lm_head)"))
    add("Precision", f["dtype"], str)
    add("Steps", f["num_steps"])
    if f["train_time_seconds"] is not None:
        seconds = f["train_time_seconds"]
        rows.append(("Training time", f"{_num(seconds)} s (≈ {seconds / 3600:.2f} h)"))
    add("Device batch size", f["device_batch_size"])
    add("Examples per step", f["examples_per_step"])
    add("Tokens per step", f["total_batch_tokens"])
    if f["num_steps"] is not None and f["examples_per_step"] is not None:
        add("Conversations seen (steps × examples per step)", f["num_steps"] * f["examples_per_step"])
    if f["tokens_seen"] is not None:
        add("Tokens seen", f["tokens_seen"])
    elif f["num_steps"] is not None and f["total_batch_tokens"] is not None:
        add("Tokens seen (steps × tokens per step)", f["num_steps"] * f["total_batch_tokens"])
    add("Max sequence length", f["max_seq_len"])
    add("Matrix LR (Muon)", f["matrix_lr"])
    add("Embedding LR (AdamW)", f["embedding_lr"])
    add("Unembedding LR (AdamW)", f["unembedding_lr"])
    add("Initial LR fraction", f["init_lr_frac"])
    add("Weight decay", f["weight_decay"])
    add("Epochs", f["num_epochs"])
    add("Validation every (steps)", f["eval_every"])
    add("Validation tokens", f["eval_tokens"])
    add("Final LR multiplier", f["final_lrm"])
    add("Final training loss", f["final_train_loss"])
    add("Final validation loss", f["final_val_loss"])
    add("Final validation bpb", f["final_val_bpb"])
    add("FLOPs per token (estimate)", f["flops_per_token"], _flops)
    add("Total training FLOPs", f["total_flops"], _flops)
    if f["total_flops"] is not None and f["train_time_seconds"]:
        add("Achieved throughput (FLOPs / time)", f["total_flops"] / f["train_time_seconds"] / 1e12,
            lambda v: f"≈ {v:.3g} TFLOP/s")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# loss curve


def plot_loss_curve(log_history: list[dict], path: Path, title: str) -> Path | None:
    """loss_curve.png from the run's log (train/val loss, bpb on a second axis, LR multiplier below); None when
    the log has no loss at all. Drawn on an Agg canvas without pyplot, so no global backend state changes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(r["step"], r[key]) for r in log_history if r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    curves = {key: series(key) for key in LOG_VALUES}
    if not any(curves[key][0] for key in ("loss", "eval_loss", "eval_bpb")):
        return None
    has_lrm = bool(curves["lrm"][0])
    fig = Figure(figsize=(8, 6 if has_lrm else 4.5), dpi=110)
    FigureCanvasAgg(fig)
    if has_lrm:
        ax, ax_lrm = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        ax, ax_lrm = fig.subplots(1, 1), None
    handles = []
    if curves["loss"][0]:
        handles += ax.plot(*curves["loss"], color="tab:blue", linewidth=1.2, label="training loss")
    if curves["eval_loss"][0]:
        handles += ax.plot(*curves["eval_loss"], color="tab:orange", marker="o", markersize=3, label="validation loss")
    ax.set_ylabel("loss (nats / token)")
    if curves["eval_bpb"][0]:
        ax_bpb = ax.twinx()
        handles += ax_bpb.plot(*curves["eval_bpb"], color="tab:green", marker="s", markersize=3, linestyle="--",
                               label="validation bpb")
        ax_bpb.set_ylabel("bits per byte")
    ax.legend(handles=handles, loc="upper right")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax_lrm is not None:
        ax_lrm.plot(*curves["lrm"], color="tab:gray")
        ax_lrm.set_ylabel("LR multiplier")
        ax_lrm.grid(alpha=0.3)
        ax_lrm.set_xlabel("step")
    else:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


# ---------------------------------------------------------------------------------------------------------------
# the card


def _card_data(facts: dict, license: str):
    from huggingface_hub import EvalResult, ModelCardData

    tags = [*BASE_TAGS, STAGE_TAGS[facts["stage"]]]
    if facts["trainer"] == "trl":
        tags.append("trl")
    evals = [
        EvalResult(
            task_type="text-generation", task_name=r["task"], dataset_type=r["dataset"], dataset_name=r["dataset"],
            dataset_split=r["split"], metric_type=r["metric"], metric_name=r["metric"], metric_value=r["value"],
        )
        for r in facts["eval_results"]
    ]
    extra = {}
    base_model = facts["base_model"] if facts["base_model"] and _hub_id(facts["base_model"]) else None
    if base_model:
        extra["base_model_relation"] = "finetune"
    return ModelCardData(
        language="te",
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=_hub_datasets(facts) or None,
        base_model=base_model,
        model_name=facts["run_name"],
        eval_results=evals or None,
        **extra,
    )


def render_model_card(facts: dict, architecture: dict, model_id: str, license: str = "mit", loss_curve: bool = False):
    """The `ModelCard` for checked facts and a config's architecture (nothing is written)."""
    from huggingface_hub import ModelCard

    if not isinstance(license, str) or not license.strip():
        raise AksharaError(f"license: must be a non-empty Hub license id, got {license!r}")
    base_model = facts["base_model"]
    base_link = None
    if base_model:
        base_link = f"[`{base_model}`](https://huggingface.co/{base_model})" if _hub_id(base_model) else f"`{base_model}`"
    return ModelCard.from_template(
        _card_data(facts, license),
        template_path=str(TEMPLATE_PATH),
        facts=facts,
        arch={**architecture, **{k: _num(v) for k, v in architecture.items() if k in (
            "layers", "hidden_size", "heads", "kv_heads", "head_dim", "intermediate_size", "vocab_size", "context",
            "params", "embedding_params")}},
        title=facts["run_name"],
        stage_label=STAGE_LABELS[facts["stage"]],
        base_link=base_link,
        mixture_rows=_mixture_rows(facts),
        training_rows=_training_rows(facts),
        eval_rows=[{**r, "value": _num(r["value"]), "task": _cell(r["task"]), "dataset": _cell(r["dataset"])}
                   for r in facts["eval_results"]],
        loss_curve=LOSS_CURVE_FILE if loss_curve else None,
        model_id=model_id,
        chat=facts["stage"] != "base",
        greeting=GREETING_PROMPT,
        summary_prompt=SUMMARY_PROMPT,
        license_id=license,
    )


def write_model_card(folder: str | Path, facts: dict | None = None, repo_id: str | None = None,
                     license: str = "mit") -> Path:
    """Write README.md (and loss_curve.png when the facts hold a loss log) into a saved model folder.

    Facts default to the folder's run_facts.json, else its nanochat_meta.json. `repo_id` goes into the usage
    snippets; without it they load the folder by its local path, so pass it for a card you will publish.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AksharaError(f"{folder}: not a directory")
    facts = folder_facts(folder) if facts is None else validate_run_facts(facts, "facts")
    architecture = architecture_from_config(folder / "config.json")
    curve = plot_loss_curve(facts["log_history"], folder / LOSS_CURVE_FILE, facts["run_name"]) if facts["log_history"] else None
    model_id = repo_id or f"./{folder.resolve().name}"
    card = render_model_card(facts, architecture, model_id, license, loss_curve=curve is not None)
    path = folder / CARD_FILE
    card.save(path)
    return path


__all__ = [
    "RUN_FACTS_FIELDS", "SEED_RUNS", "architecture_from_config", "facts_from_nanochat_meta", "folder_facts",
    "load_run_facts", "plot_loss_curve", "render_model_card", "seed_run_facts", "validate_run_facts",
    "write_model_card",
]
