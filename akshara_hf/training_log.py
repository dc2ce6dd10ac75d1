"""What a run leaves beside its weights: a line-per-log `log.jsonl` and the run facts the model card is built from."""

import json
import platform
from collections import Counter
from pathlib import Path

from transformers import TrainerCallback

from .flops import flops_per_token


class JsonlLogCallback(TrainerCallback):
    """Appends every log (loss, lrm, per-group LR, eval loss/bpb) as one JSON line, flushed at once, on the main
    process: an interrupted run keeps everything logged so far (trainer_state.json only exists at checkpoints)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a", encoding="utf-8") as file:
                file.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def _hardware(torch) -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def _last(history: list[dict], key: str):
    values = [entry[key] for entry in history if key in entry]
    return values[-1] if values else None


def _mixture_table(mixture, output_dir: Path) -> list[dict]:
    """Rows and tokens per source from `build_mixture`'s report.json, else rows counted from the train split."""
    report = output_dir / "mixture" / "report.json"
    if report.is_file():
        data = json.loads(report.read_text())
        tokens = data.get("size_unit") == "tokens"
        return [
            {"source": s["kind"], "rows": s["train_rows"], "tokens": s["train_size"] if tokens else None}
            for s in data["sources"]
        ]
    counts = Counter(mixture["train"]["source"])
    return [{"source": name, "rows": rows, "tokens": None} for name, rows in sorted(counts.items())]


def run_facts(trainer, run, mixture, train_seconds: float, final_eval: dict, torch, seq_len: int) -> dict:
    """The flat, JSON-only facts of `model_card/card.py`'s schema, from the trainer's state and the recipe; `seq_len`
    is the rows' length (mid/base: `max_seq_len`; SFT: the length conversations were cut to)."""
    args, state, config = trainer.args, trainer.state, trainer.model.config
    history = state.log_history
    per_token = flops_per_token(config, seq_len)
    world = args.world_size
    rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    # Packed stages count as nanochat does (steps x tokens per step; TRL's num_tokens also counts each row's extra
    # last-target token, 2049/2048 more); SFT counts the tokens TRL saw.
    tokens = state.global_step * rows_per_step * run.max_seq_len if run.stage != "sft" else _last(history, "num_tokens")
    return {
        "run_name": args.run_name or Path(args.output_dir).name,
        "stage": run.stage,
        "base_model": run.base_model or run.model_name_or_path,
        "hardware": run.hardware or _hardware(torch),
        "num_steps": state.global_step,
        "train_time_seconds": round(train_seconds, 2),
        "dtype": "bfloat16" if args.bf16 else "float32",
        "device_batch_size": args.per_device_train_batch_size,
        "examples_per_step": rows_per_step if run.stage == "sft" else None,
        "total_batch_tokens": rows_per_step * run.max_seq_len if run.stage != "sft" else None,
        "max_seq_len": seq_len,
        "matrix_lr": args.matrix_lr,
        "embedding_lr": args.embedding_lr,
        "unembedding_lr": args.unembedding_lr,
        "init_lr_frac": args.init_lr_frac,
        "weight_decay": args.weight_decay,
        "num_epochs": args.num_train_epochs,
        "final_train_loss": _last(history, "loss"),
        "final_val_loss": final_eval.get("eval_loss"),
        "final_val_bpb": final_eval.get("eval_bpb"),
        "final_lrm": _last(history, "lrm"),
        "flops_per_token": per_token,
        "tokens_seen": tokens,
        "total_flops": per_token * tokens if tokens is not None else None,
        "mixture": _mixture_table(mixture, Path(args.output_dir)),
        "log_history": [
            {k: entry[k] for k in ("step", "loss", "eval_loss", "eval_bpb", "lrm") if k in entry}
            for entry in history
            if any(k in entry for k in ("loss", "eval_loss"))
        ],
        "eval_results": [],
    }
