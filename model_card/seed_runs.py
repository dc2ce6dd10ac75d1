"""The eight published Akshara runs (docs/akshara-runs.md): their reported figures as run facts, so their cards can be
written (`akshara-hf model-card FOLDER --seed-run NAME`). They have no per-step log, hence no loss curve."""

from __future__ import annotations

import json

from akshara_hf.errors import AksharaError

from .facts import validate_run_facts

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
    """A mixture row; the two sources the runs read from public Hub datasets carry that dataset's id."""
    hub_id = {_XLSUM: "csebuetnlp/xlsum", _PARAPHRASE: "ai4bharat/IndicParaphrase"}.get(source)
    return {"source": source, "rows": rows, "tokens": None, "hub_id": hub_id}


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
