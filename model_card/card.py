"""The model card: a Hub README.md (YAML metadata + the run's story) rendered from run facts and config.json.

`ModelCard.from_template(ModelCardData(...), template.md)`: metadata the Hub reads (language, license, library,
pipeline, tags, datasets, base_model, model-index), then architecture, stage and parent, data mixture, training
table, loss curve, evaluation, usage (Python, pipeline, serving), intended use and limitations. Facts come from
the folder's `run_facts.json` (`facts.py`), a converted checkpoint's `nanochat_meta.json` (`nanochat_meta.py`) or a
published run's reported figures (`seed_runs.py`); `akshara-hf evaluate --output DIR` results join the model-index
through `eval_results`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from akshara_hf.errors import AksharaError
from akshara_hf.folders import CARD_FILE, LOSS_CURVE_FILE, foreign_card_files, replace_file
from akshara_hf.loading import read_json

from .architecture import architecture_from_config
from .facts import RUN_FACTS_FILE, load_run_facts, validate_run_facts
from .nanochat_meta import NANOCHAT_META_FILE, facts_from_nanochat_meta
from .plot import plot_loss_curve
from .sources import describe, hub_datasets

# The Hub's license ids: lowercase letters, digits, dots, dashes and pluses (apache-2.0, cc-by-nc-sa-4.0, lgpl-lr).
LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
# Ends every card this package renders: `write_model_card` replaces a README.md only when it carries it (or when told
# to), so a card the user wrote by hand is never overwritten silently.
TEMPLATE_PATH = Path(__file__).with_name("template.md")

STAGE_LABELS = {"base": "pre-training", "mid": "mid-training", "sft": "supervised fine-tuning (SFT)"}
BASE_TAGS = ("nanochat", "akshara", "telugu", "muon", "custom_code", "conversational")
STAGE_TAGS = {"base": "pretraining", "mid": "mid-training", "sft": "sft"}
# model-index groups results by task type and dataset, so each task needs its own Hub task type.
TASK_TYPES = {"summarization": "summarization", "paraphrase": "text2text-generation"}

# Usage examples. The summary prompt is the second of the five in docs/akshara-runs.md, verbatim.
GREETING_PROMPT = "నమస్కారం! నీ పేరు ఏమిటి?"
SUMMARY_PROMPT = "ఈ వ్యాసం యొక్క సారాంశం రాయండి"


def folder_facts(folder: Path) -> dict:
    """The facts a folder carries: the trainer's run_facts.json, else a converted checkpoint's nanochat_meta.json."""
    # whatever stands there is read (a named pipe is refused): it was passed over, the card written without its facts
    if os.path.lexists(folder / RUN_FACTS_FILE):
        return load_run_facts(folder / RUN_FACTS_FILE)
    if os.path.lexists(folder / NANOCHAT_META_FILE):
        return facts_from_nanochat_meta(read_json(folder / NANOCHAT_META_FILE), run_name=folder.resolve().name)
    raise AksharaError(f"{folder}: neither {RUN_FACTS_FILE} nor {NANOCHAT_META_FILE}; pass the run facts explicitly")


def eval_results_from_file(path: str | Path, dataset: str | None = None) -> list[dict]:
    """`eval_results` entries from `akshara-hf evaluate --output DIR`'s eval_results.json (model-index rows)."""
    from akshara_hf.evaluation.evaluate import eval_results_for_card

    path = Path(path)
    results = read_json(path)
    if not isinstance(results, dict) or not ({"loss", "tasks"} & set(results)):
        raise AksharaError(f"{path}: not an `akshara-hf evaluate` result (no 'loss' or 'tasks')")
    split = results.get("split") if isinstance(results.get("split"), str) else None
    name = dataset or "akshara-mixture"
    try:
        rows = eval_results_for_card(results, name)
    except (KeyError, TypeError) as error:
        raise AksharaError(f"{path}: malformed evaluate result ({type(error).__name__}: {error})") from None
    return validate_run_facts({"run_name": "x", "stage": "sft", "eval_results": [
        {**row, "split": split} for row in rows]}, str(path))["eval_results"]


# ---------------------------------------------------------------------------------------------------------------
# formatting


def project_url() -> str | None:
    """The project's repository, from the installed package's metadata (`url` / `project_urls` in setup.cfg), if it
    names one; the card then says where to clone from (without one: "a clone of the project repository")."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata("akshara-hf")
    except PackageNotFoundError:
        return None
    urls = [meta.get("Home-page")] + [entry.split(",", 1)[-1].strip() for entry in meta.get_all("Project-URL") or []]
    return next((url for url in urls if url and url.startswith("https://")), None)


def _short_count(n: float) -> str:
    for unit, name in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= unit:
            return f"{n / unit:.3g}{name}"
    return str(int(n))


def _num(value: float) -> str:
    """Rounded for reading: integers grouped (1,566); from 1,000 up two decimals at most (24,586.11); below that four
    significant digits (0.03333, 0.000044, 5.25), never scientific notation."""
    from numpy import format_float_positional

    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    value = float(value)
    if abs(value) >= 1000:
        whole, _, frac = f"{value:.2f}".rstrip("0").rstrip(".").partition(".")
        return f"{int(whole):,}" + (f".{frac}" if frac else "")
    return format_float_positional(value, precision=4, unique=True, fractional=False, trim="-")


def _flops(value: float) -> str:
    for unit, name in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP")):
        if value >= unit:
            return f"{value / unit:.4g} {name} ({_num(value)})"
    return _num(value)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{_num(seconds)} s"
    if seconds < 7200:
        return f"{_num(seconds)} s (≈ {seconds / 60:.1f} min)"
    return f"{_num(seconds)} s (≈ {seconds / 3600:.2f} h)"


def _cell(value: Any) -> str:
    """Safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def is_hub_id(name: str) -> bool:
    """A Hub repo id ("owner/name") and not a local path: only those may go into the card as a model reference."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.count("/") != 1 or name.startswith((".", "~", "/")) or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _checkpoint_name(name: str) -> str:
    """A parent that is not a Hub id is shown by its last path component only: never the training machine's path."""
    return Path(name.replace("\\", "/").rstrip("/")).name or name


def _mixture_rows(facts: dict) -> list[dict]:
    # A row's Hub dataset: its own hub_id, else the run's "kind: Hub id" entry of data_sources (paths never shown).
    hub_by_kind: dict[str, str] = {}
    for entry in facts["data_sources"]:
        kind, _, where = entry.partition(": ")
        if where in facts["datasets"]:
            hub_by_kind.setdefault(kind, where)
    rows = []
    for row in facts["mixture"]:
        name, reference = describe(row["source"])
        if reference and reference not in name:
            name = f"{name} ([{reference}](https://huggingface.co/datasets/{reference}))"
        hub = row.get("hub_id") or hub_by_kind.get(row["source"])
        rows.append({
            "source": _cell(name),
            "rows": _num(row["rows"]) if row["rows"] is not None else "—",
            "tokens": _num(row["tokens"]) if row["tokens"] is not None else "—",
            "data": f"[{hub}](https://huggingface.co/datasets/{hub})" if hub else "local files",
        })
    return rows


def _training_rows(facts: dict, architecture: dict) -> list[tuple[str, str]]:
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
    if f["in_progress"] and f["num_steps"] is not None:
        planned = f" of {_num(f['planned_steps'])} planned" if f["planned_steps"] is not None else ""
        rows.append((f"Steps (so far{planned}; training in progress)", _num(f["num_steps"])))
    else:
        add("Steps", f["num_steps"])
    add("Training time", f["train_time_seconds"], _duration)
    add("Device batch size", f["device_batch_size"])
    add("Examples per step", f["examples_per_step"])
    add("Tokens per step", f["total_batch_tokens"])
    if f["num_steps"] is not None and f["examples_per_step"] is not None:
        add("Conversations seen (steps × examples per step)", f["num_steps"] * f["examples_per_step"])
    if f["tokens_seen"] is not None:
        add("Tokens seen", f["tokens_seen"])
    elif f["num_steps"] is not None and f["total_batch_tokens"] is not None:
        add("Tokens seen (steps × tokens per step)", f["num_steps"] * f["total_batch_tokens"])
    if f["max_seq_len"] is not None:
        context = architecture["context"]
        if f["max_seq_len"] <= context:
            add("Training sequence length (tokens, at most)", f["max_seq_len"])
        else:  # the run's cut limit exceeded what the model is configured for: say both, not two unexplained numbers
            rows.append(("Training sequence length (tokens, at most)",
                         f"{_num(context)} (the model's context; the run's cut limit was set to {_num(f['max_seq_len'])})"))
    rows += _lr_rows(f, architecture["hidden_size"])
    add("Initial LR fraction", f["init_lr_frac"])
    add("Weight decay", f["weight_decay"])
    add("Epochs (passes over the training data)", f["num_epochs"])
    rows += _cadence_rows(f)
    add("Validation tokens", f["eval_tokens"])
    last = "Last" if f["in_progress"] else "Final"  # a checkpoint's figures are not the run's final ones
    add(f"{last} LR multiplier", f["final_lrm"])
    add(f"{last} training loss", f["final_train_loss"])
    add(f"{last} validation loss", f["final_val_loss"])
    add(f"{last} validation bpb", f["final_val_bpb"])
    add("FLOPs per token (estimate)", f["flops_per_token"], _flops)
    add("Total training FLOPs", f["total_flops"], _flops)
    if f["total_flops"] is not None and f["train_time_seconds"]:
        add("Achieved throughput (FLOPs / time)", f["total_flops"] / f["train_time_seconds"] / 1e12,
            lambda v: f"≈ {v:.3g} TFLOP/s")
    return rows


# nanochat tuned its AdamW LRs at width 768 and scales them by (width / 768) ** -0.5 (akshara_hf.training.optim's
# REFERENCE_WIDTH; tests/test_model_card.py checks they agree: this package does not import torch to render a card).
REFERENCE_WIDTH = 768
# The three base LRs as the optimizer applies them: (label, base LR key, optimizer group, scaled by width).
BASE_LRS = (("Muon LR (block matrices)", "matrix_lr", "muon", False),
            ("Embedding LR (AdamW, token embedding)", "embedding_lr", "embedding", True),
            ("Unembedding LR (AdamW, lm_head)", "unembedding_lr", "unembedding", True))


def _lr_rows(f: dict, width: int) -> list[tuple[str, str]]:
    """The LRs the run applied at the start (before the schedule's multiplier), each with how it follows from the
    recipe's base LR: `0.3464 = embedding_lr 0.2 × (256/768)^-0.5`. A run's facts record the optimizer's own values
    (`learning_rates`); where they do not (published seed runs, converted checkpoints) the values follow from the
    rule. A recorded value the rule does not give is shown as recorded, with the base LR beside it."""
    import math

    recorded = {entry["group"]: entry["lr"] for entry in f["learning_rates"]}
    rows = []
    for label, key, group, scaled in BASE_LRS:
        base = f[key]
        if base is None:
            continue
        factors = [f"{key} {_num(base)}"]
        value = base
        if scaled:
            factors.append(f"({_num(width)}/{REFERENCE_WIDTH})^-0.5")
            value *= (width / REFERENCE_WIDTH) ** -0.5
        if f["init_lr_frac"] is not None and f["init_lr_frac"] != 1:
            factors.append(f"init_lr_frac {_num(f['init_lr_frac'])}")
            value *= f["init_lr_frac"]
        applied = recorded.pop(group, None)
        if applied is not None and not math.isclose(applied, value, rel_tol=1e-6):
            rows.append((label, _cell(f"{_num(applied)} (as applied; base {key} {_num(base)})")))
        elif len(factors) == 1:
            rows.append((label, _num(value)))
        else:
            rows.append((label, _cell(f"{_num(value)} = {' × '.join(factors)}")))
    for group, applied in recorded.items():  # nanochat 2026's extra groups, PEFT adapters, leftovers
        rows.append((f"LR of group `{_cell(group)}` (AdamW)", _num(applied)))
    if rows:
        rows.append(("LR schedule", "the LRs above × the schedule's multiplier at each step (its last value is below)"))
    return rows


def _steps_text(steps: list[int]) -> str:
    if len(steps) > 8:
        return f"{', '.join(map(_num, steps[:3]))}, …, {_num(steps[-1])} ({len(steps)} in all)"
    return ", ".join(map(_num, steps))


def _cadence_rows(f: dict) -> list[tuple[str, str]]:
    """When the run validated and saved: the steps it did (from its log and checkpoints), not only the cadence set.
    A 5-step run of a recipe that validates every 20 steps validated once, at its end."""
    rows = []
    evaluated = [entry["step"] for entry in f["log_history"] if entry.get("eval_loss") is not None]
    if evaluated:
        every = f["eval_every"]
        off_cadence = every is not None and any(step % every for step in evaluated)
        note = ""
        if every is not None and not any(step % every == 0 for step in evaluated):
            note = f" (the set cadence, every {_num(every)} steps, was not reached: evaluated at the end)"
        elif off_cadence:
            note = f" (every {_num(every)} steps, and at the end)"
        elif every is not None:
            note = f" (every {_num(every)} steps)"
        rows.append((f"Validation at step{'s' * (len(evaluated) > 1)}", _cell(_steps_text(evaluated) + note)))
    elif f["eval_every"] is not None:
        if f["log_history"]:  # a run's log without any evaluation
            rows.append(("Validation", _cell(f"none (set to every {_num(f['eval_every'])} steps; the run took "
                                             f"{_num(f['num_steps'] or 0)})")))
        else:  # published figures without a log
            rows.append(("Validation every (steps)", _num(f["eval_every"])))
    if f["checkpoint_steps"]:
        rows.append(("Checkpoints saved at steps", _cell(_steps_text(f["checkpoint_steps"]))))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the card


def _card_data(facts: dict, license: str, base_model: str | None):
    from huggingface_hub import EvalResult, ModelCardData

    tags = [*BASE_TAGS, STAGE_TAGS[facts["stage"]]]
    if facts["trainer"] == "trl":
        tags.append("trl")
    evals = [
        EvalResult(
            task_type=TASK_TYPES.get(r["task"].lower(), "text-generation"), task_name=r["task"], dataset_type=r["dataset"], dataset_name=r["dataset"],
            dataset_split=r["split"], metric_type=r["metric"], metric_name=r["metric"], metric_value=r["value"],
        )
        for r in facts["eval_results"]
    ]
    extra = {"base_model_relation": "finetune"} if base_model else {}
    return ModelCardData(
        language="te",
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=hub_datasets(facts) or None,
        base_model=base_model,
        model_name=facts["run_name"],
        eval_results=evals or None,
        **extra,
    )


def render_model_card(facts: dict, architecture: dict, model_id: str, license: str = "mit", loss_curve: bool = False):
    """The `ModelCard` for checked facts and a config's architecture (nothing is written)."""
    from huggingface_hub import ModelCard

    if not isinstance(license, str) or not LICENSE_ID.fullmatch(license):
        raise AksharaError(f"license: must be a Hub license id (as apache-2.0, mit, cc-by-4.0 or other), got "
                           f"{license!r}")
    parent = facts["base_model"]
    base_model = parent if parent and is_hub_id(parent) else None
    if base_model:
        base_link = f"[`{base_model}`](https://huggingface.co/{base_model})"
    elif parent:
        base_link = f"the checkpoint `{_cell(_checkpoint_name(parent))}` (not published on the Hub)"
    else:
        base_link = None
    arch = {**architecture, "params_short": _short_count(architecture["params"]),
            **{k: _num(v) for k, v in architecture.items() if isinstance(v, int) and not isinstance(v, bool)}}
    return ModelCard.from_template(
        _card_data(facts, license, base_model),
        template_path=str(TEMPLATE_PATH),
        facts=facts,
        arch=arch,
        title=facts["run_name"],
        stage_label=STAGE_LABELS[facts["stage"]],
        base_link=base_link,
        mixture_rows=_mixture_rows(facts),
        training_rows=_training_rows(facts, architecture),
        eval_rows=[{**r, "value": _num(r["value"]), "task": _cell(r["task"]), "dataset": _cell(r["dataset"])}
                   for r in facts["eval_results"]],
        loss_curve=LOSS_CURVE_FILE if loss_curve else None,
        model_id=model_id,
        native_export=architecture["generation"] != "2026",
        chat=facts["stage"] != "base",
        greeting=GREETING_PROMPT,
        summary_prompt=SUMMARY_PROMPT,
        license_id=license,
        project_url=project_url(),
    )


def write_model_card(folder: str | Path, facts: dict | None = None, repo_id: str | None = None,
                     license: str = "mit", eval_results: str | Path | None = None, overwrite: bool = False,
                     config: dict | None = None) -> Path:
    """Write README.md (and loss_curve.png when the facts hold a loss log) into a saved model folder.

    Facts default to the folder's run_facts.json, else its nanochat_meta.json. `repo_id` goes into the usage
    snippets; without it they load the folder by its own name (`./NAME`), so pass it for a card you will publish.
    `eval_results`: an `akshara-hf evaluate --output DIR` eval_results.json whose figures join the model-index.
    An existing README.md is replaced only when this function wrote it, or with `overwrite`. `config`: the model's
    configuration (`config.to_dict()`) instead of the folder's config.json: the trainer's card hook writes the card
    of a run's output folder before the model is saved there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AksharaError(f"{folder}: not a directory")
    path = folder / CARD_FILE
    # Both files checked before either is written; a link is never written through, --overwrite or not.
    foreign = foreign_card_files(folder)
    if foreign and not overwrite:
        raise AksharaError(f"{foreign[0]}: exists and was not written by akshara-hf model-card; pass --overwrite to "
                           "replace it")
    facts = folder_facts(folder) if facts is None else validate_run_facts(facts, "facts")
    if eval_results is not None:
        facts = {**facts, "eval_results": facts["eval_results"] + eval_results_from_file(eval_results)}
    if repo_id is not None and not is_hub_id(repo_id):
        raise AksharaError(f"--repo-id {repo_id!r}: not a Hub repo id (ORG/NAME)")
    architecture = architecture_from_config(folder / "config.json", config)
    curve = plot_loss_curve(facts["log_history"], folder / LOSS_CURVE_FILE, facts["run_name"]) if facts["log_history"] else None
    model_id = repo_id or f"./{folder.resolve().name}"
    card = render_model_card(facts, architecture, model_id, license, loss_curve=curve is not None)
    return replace_file(path, str(card))  # what `ModelCard.save` writes, but whole or not at all


__all__ = ["eval_results_from_file", "folder_facts", "is_hub_id", "render_model_card", "write_model_card"]
