"""Run facts from a converted nanochat checkpoint's `nanochat_meta.json` (its `meta_*.json`, copied on conversion)."""

from __future__ import annotations

from typing import Any

from akshara_hf.errors import AksharaError

from .facts import _is_number, validate_run_facts

NANOCHAT_META_FILE = "nanochat_meta.json"

# nanochat's chat_sft saves task accuracies at the top level of its meta file.
NANOCHAT_METRICS = {
    "mmlu_acc": ("MMLU", "cais/mmlu"),
    "arc_easy_acc": ("ARC-Easy", "allenai/ai2_arc"),
    "arc_challenge_acc": ("ARC-Challenge", "allenai/ai2_arc"),
    "gsm8k_acc": ("GSM8K", "openai/gsm8k"),
    "humaneval_acc": ("HumanEval", "openai/openai_humaneval"),
}


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
