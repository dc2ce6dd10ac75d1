"""What a run leaves beside its weights: a line-per-log `log.jsonl` and the run facts the model card is built from."""

import json
import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from akshara_hf.folders import record_saved, replace_file, unlisted_entries
from akshara_hf.training.flops import flops_per_token


def wait_for_every_process(args) -> None:
    """A barrier over the run's processes: accelerate's `wait_for_everyone` on the state the TrainingArguments set up
    (torch's barrier where they set none, as their `main_process_first` does); nothing for a single process."""
    if args.world_size > 1:
        if args.distributed_state is not None:
            args.distributed_state.wait_for_everyone()
        else:
            import torch.distributed as dist

            dist.barrier()


class JsonlLogCallback(TrainerCallback):
    """Appends every log (loss, lrm, per-group LR, eval loss/bpb) as one JSON line, flushed at once, on the main
    process: an interrupted run keeps everything logged so far (trainer_state.json only exists at checkpoints)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            # O_NOFOLLOW: a link planted at log.jsonl is an error, never a file appended to elsewhere.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            with os.fdopen(fd, "a", encoding="utf-8") as file:
                file.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class RunClock(TrainerCallback, ExportableState):
    """Training seconds of the whole run. The Trainer's `train_runtime` covers its own session only, so each
    checkpoint's `trainer_state.json` carries the seconds trained up to it (the Trainer saves an `ExportableState`
    callback's `state()` there) and a resumed session reads them back. Once the session ends its own time is the
    Trainer's `train_runtime` (logged at the end of `train()`); until then, the time since it began."""

    def __init__(self):
        self.seconds_before = 0.0  # of the sessions before this one, up to the checkpoint resumed from
        self._started = None
        self._session = None  # this session's train_runtime, once logged

    def on_train_begin(self, args, state, control, **kwargs):
        saved = (state.stateful_callbacks or {}).get(type(self).__name__, {})
        if isinstance(saved, list):
            saved = saved[0] if saved else {}
        self.seconds_before = float(saved.get("attributes", {}).get("seconds", 0.0)) if state.global_step else 0.0
        self._started, self._session = time.perf_counter(), None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "train_runtime" in logs:
            self._session = float(logs["train_runtime"])

    def seconds(self) -> float:
        if self._session is not None:
            return self.seconds_before + self._session
        return self.seconds_before + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def state(self) -> dict:
        return {"args": {}, "attributes": {"seconds": self.seconds()}}


class CheckpointSteps(TrainerCallback, ExportableState):
    """The steps at which the Trainer saved a checkpoint (the run's facts, and its card, name them). Kept in each
    checkpoint's `trainer_state.json`, so a resumed run lists its earlier checkpoints too."""

    def __init__(self):
        self.steps: list[int] = []

    def on_train_begin(self, args, state, control, **kwargs):
        saved = (state.stateful_callbacks or {}).get(type(self).__name__, {})
        if isinstance(saved, list):
            saved = saved[0] if saved else {}
        earlier = saved.get("attributes", {}).get("steps", []) if state.global_step else []
        self.steps = [int(step) for step in earlier if int(step) <= state.global_step]

    def on_save(self, args, state, control, **kwargs):
        if state.global_step not in self.steps:
            self.steps.append(state.global_step)

    def state(self) -> dict:
        return {"args": {}, "attributes": {"steps": list(self.steps)}}


class SavedEntries(TrainerCallback):
    """Lists in the run's marker what each checkpoint-N holds once saved (`folders.record_saved`): a later run with
    `save_total_limit` refuses a checkpoint folder holding anything else, which rotation would delete with it."""

    def __init__(self):
        self.not_ours: dict[str, list[str]] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        root = Path(args.output_dir)
        if state.is_world_process_zero and root.is_dir():  # a user's entries stay unlisted when their step is saved
            self.not_ours = {folder.name: unlisted_entries(root, folder) or []
                             for folder in root.glob("checkpoint-*") if folder.is_dir()}

    def on_save(self, args, state, control, **kwargs):
        wait_for_every_process(args)  # every process has written its part (its shards, its rng_state_N.pth)
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            record_saved(Path(args.output_dir), folder, self.not_ours.get(folder.name, ()))


def _learning_rates(optimizer) -> list[dict]:
    """Each optimizer group's LR before the schedule's multiplier (`initial_lr`, set by the LR scheduler): the LRs the
    run applied, width scaling and `init_lr_frac` included."""
    rates = []
    for index, group in enumerate(getattr(optimizer, "param_groups", None) or []):
        if group.get("params"):
            rates.append({"group": str(group.get("name", index)), "lr": float(group.get("initial_lr", group["lr"]))})
    return rates


def _hardware(torch) -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def _last(history: list[dict], key: str):
    values = [entry[key] for entry in history if key in entry]
    return values[-1] if values else None


@dataclass
class RunFacts:
    """`run_facts.json`: what a run did, the model card's source (schema: `RUN_FACTS_FIELDS` in model_card/facts.py).

    Counts are of the whole run, resumed sessions included: steps and tokens from the Trainer's state (restored from
    the checkpoint), time from `RunClock`. Facts taken while the run trains (a checkpoint's card) are marked
    `in_progress`, with the steps taken so far and the steps planned.
    """

    run_name: str
    stage: str
    base_model: str | None = None
    trainer: str = "trl"  # this project's TRL trainer (the card's schema also knows "nanochat": nanochat's scripts)
    hardware: str | None = None
    num_steps: int | None = None
    in_progress: bool = False
    planned_steps: int | None = None
    train_time_seconds: float | None = None
    dtype: str | None = None
    device_batch_size: int | None = None
    examples_per_step: int | None = None
    total_batch_tokens: int | None = None
    max_seq_len: int | None = None
    matrix_lr: float | None = None
    embedding_lr: float | None = None
    unembedding_lr: float | None = None
    init_lr_frac: float | None = None
    weight_decay: float | None = None
    num_epochs: float | None = None  # reached: 0.4167 for a run stopped 5 steps into a 12-step epoch
    eval_every: int | None = None
    checkpoint_steps: list[int] = field(default_factory=list)
    learning_rates: list[dict] = field(default_factory=list)
    eval_tokens: int | None = None
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    final_val_bpb: float | None = None
    final_lrm: float | None = None
    flops_per_token: int | None = None
    tokens_seen: int | None = None
    total_flops: int | None = None
    datasets: list[str] = field(default_factory=list)  # Hub ids of the sources actually used (local files: none)
    data_sources: list[str] = field(default_factory=list)  # every source actually used: "kind: path or Hub id"
    mixture: list[dict] = field(default_factory=list)
    log_history: list[dict] = field(default_factory=list)
    eval_results: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, folder: str | Path) -> Path:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        return replace_file(Path(folder) / "run_facts.json", text)  # whole or not at all, never through a link


def _mixture_report(mixture_folder: Path) -> dict | None:
    report = mixture_folder / "report.json"
    return json.loads(report.read_text(encoding="utf-8")) if report.is_file() else None


def _mixture_table(mixture, report: dict | None) -> list[dict]:
    """Rows and tokens per source from `build_mixture`'s report.json, else rows counted from the train split."""
    if report is not None:
        tokens = report.get("size_unit") == "tokens"
        return [
            {"source": s["kind"], "rows": s["train_rows"], "tokens": s["train_size"] if tokens else None}
            for s in report["sources"]
        ]
    counts = Counter(mixture["train"]["source"])
    return [{"source": name, "rows": rows, "tokens": None} for name, rows in sorted(counts.items())]


def _sources_used(section, report: dict | None) -> tuple[list[str], list[str]]:
    """(Hub ids, "kind: path" of every source) from the parsed data section, else the prebuilt mixture's report."""
    from akshara_hf.data.sources import is_hub_id

    if section is not None:
        entries = [(s.kind, s.location if s.is_hub else s.path, s.is_hub) for s in section.sources]
    elif report is not None:
        entries = [(s["kind"], s["path"], is_hub_id(s["path"]) and not Path(s["path"]).exists())
                   for s in report["sources"]]
    else:
        return [], []
    hub = list(dict.fromkeys(path for _, path, is_hub in entries if is_hub))
    return hub, list(dict.fromkeys(f"{kind}: {path}" for kind, path, _ in entries))


def run_facts(trainer, run, mixture, torch, seq_len: int, mixture_folder: Path, clock: RunClock,
              checkpoints: CheckpointSteps | None = None) -> RunFacts:
    """The run's facts so far, from the trainer's state, the recipe and the run's `RunClock`: the finished run's after
    `train()` (and its final evaluation, the last one logged), a snapshot at the current step while it trains (the
    trainer's card hook calls this at each checkpoint). `seq_len` is the rows' length (mid/base: `max_seq_len`; SFT:
    the length conversations were cut to)."""
    args, state, config = trainer.args, trainer.state, trainer.model.config
    history = state.log_history
    evaluations = [entry for entry in history if "eval_loss" in entry]
    final_eval = evaluations[-1] if evaluations else {}
    in_progress = bool(trainer.is_in_train)
    per_token = flops_per_token(config, seq_len)
    world = args.world_size
    rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    # Packed stages count as nanochat does (steps x tokens per step; the Trainer would also count each row's extra
    # last-target token, 2049/2048 more); SFT counts the tokens the Trainer fed (its state survives a resume).
    tokens = state.global_step * rows_per_step * run.max_seq_len if args.stage != "sft" else state.num_input_tokens_seen
    report = _mixture_report(mixture_folder)
    hub_ids, sources = _sources_used(run.data if not run.mixture_dir else None, report)
    return RunFacts(
        run_name=args.run_name or Path(args.output_dir).name,
        stage=args.stage,
        base_model=run.base_model or run.model_name_or_path,
        hardware=run.hardware or _hardware(torch),
        num_steps=state.global_step,
        in_progress=in_progress,
        planned_steps=state.max_steps if in_progress else None,
        train_time_seconds=round(clock.seconds(), 2),
        dtype="bfloat16" if args.bf16 else "float32",
        device_batch_size=args.per_device_train_batch_size,
        examples_per_step=rows_per_step if args.stage == "sft" else None,
        total_batch_tokens=rows_per_step * run.max_seq_len if args.stage != "sft" else None,
        max_seq_len=seq_len,
        matrix_lr=args.matrix_lr,
        embedding_lr=args.embedding_lr,
        unembedding_lr=args.unembedding_lr,
        init_lr_frac=args.init_lr_frac,
        weight_decay=args.weight_decay,
        num_epochs=round(state.epoch, 4) if state.epoch is not None else None,
        eval_every=int(args.eval_steps) if args.eval_strategy == "steps" and (args.eval_steps or 0) >= 1 else None,
        eval_tokens=run.eval_tokens if args.stage != "sft" else None,
        checkpoint_steps=list(checkpoints.steps) if checkpoints is not None else [],
        learning_rates=_learning_rates(trainer.optimizer),
        final_train_loss=_last(history, "loss"),
        final_val_loss=final_eval.get("eval_loss"),
        final_val_bpb=final_eval.get("eval_bpb"),
        final_lrm=_last(history, "lrm"),
        flops_per_token=per_token,
        tokens_seen=tokens,
        total_flops=per_token * tokens if tokens is not None else None,
        datasets=hub_ids,
        data_sources=sources,
        mixture=_mixture_table(mixture, report),
        log_history=[
            {k: entry[k] for k in ("step", "loss", "eval_loss", "eval_bpb", "lrm") if k in entry}
            for entry in history
            if any(k in entry for k in ("loss", "eval_loss"))
        ],
    )
