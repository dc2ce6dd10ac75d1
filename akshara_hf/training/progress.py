"""Data progress of a run, step by step: nanochat 2026's chat_sft schedules its LR by the fraction of the data
consumed, not by the fraction of steps (a packed row holds as many conversations as fit, so the two differ).

The Trainer knows its step count before the first step, and with rows taken in order (`train_sampling_strategy:
sequential`) which rows each step trains, so the progress after every step is computed up front from how many
conversations each row holds (`conversations_per_row`) and the Trainer's batching (`step_progress`); the LR
multiplier is then a pure function of the step, as the Trainer's `LambdaLR` needs.
"""

import math
from collections.abc import Sequence
from functools import partial
from itertools import accumulate

from akshara_hf.errors import AksharaError


def conversations_per_row(dataset, in_order: bool) -> list[int]:
    """How many conversations each training row holds: the `conversations` column of `bos_bestfit` rows, one per
    `seq_lengths` entry of TRL's packed rows, else one. With rows not taken in order (a random sampler) which rows a
    step trains is not known up front: every row then counts as one (progress = the fraction of rows), which is exact
    for rows of one conversation each."""
    columns = getattr(dataset, "column_names", None) or []
    if not in_order or not columns:
        return [1] * len(dataset)
    if "conversations" in columns:
        return list(dataset["conversations"])
    if "seq_lengths" in columns:
        return [len(lengths) for lengths in dataset["seq_lengths"]]
    return [1] * len(dataset)


def step_progress(
    counts: Sequence[int], num_steps: int, batch_size: int, accumulation: int = 1, processes: int = 1,
    drop_last: bool = False,
) -> list[float]:
    """Progress after each optimizer step (the step included): conversations consumed so far / the whole run's.

    Follows the Trainer's batching of rows taken in order: micro-batches of `batch_size` rows (the last one short
    unless `drop_last`), dealt round-robin to `processes` (Accelerate's batch sampler shards; short epochs padded,
    `even_batches`), `accumulation` micro-batches per process per step, the last step of an epoch taking what is
    left, and a new epoch starting again from the first row. The last step's progress is 1.
    """
    if num_steps < 1 or not counts:
        raise AksharaError(f"no progress to schedule: {num_steps} steps over {len(counts)} rows")
    batches = len(counts) // batch_size if drop_last else math.ceil(len(counts) / batch_size)
    per_process = batches // processes if drop_last or batches % processes == 0 else batches // processes + 1
    steps_per_epoch = max(math.ceil(per_process / accumulation), 1)
    epoch_rows = min(len(counts), per_process * processes * batch_size)
    consumed = [0, *accumulate(counts)]
    rows_per_step = batch_size * accumulation * processes
    done = []
    for step in range(num_steps):
        epoch, within = divmod(step, steps_per_epoch)
        done.append(epoch * consumed[epoch_rows] + consumed[min((within + 1) * rows_per_step, epoch_rows)])
    if done[-1] <= 0:
        raise AksharaError("the training rows hold no conversations")
    return [value / done[-1] for value in done]


def progress_lr_multiplier(progress: float, warmup_ratio: float = 0.0, warmdown_ratio: float = 0.5,
                           final_lr_frac: float = 0.0) -> float:
    """nanochat 2026's chat_sft `get_lr_multiplier(progress)`: linear warmup over the first `warmup_ratio`, 1, then
    linear to `final_lr_frac` over the last `warmdown_ratio` (the same arithmetic, so the same floats)."""
    if progress < warmup_ratio:
        return (progress + 1e-8) / warmup_ratio
    if progress <= 1.0 - warmdown_ratio:
        return 1.0
    decay = (progress - (1.0 - warmdown_ratio)) / warmdown_ratio
    return (1 - decay) * 1.0 + decay * final_lr_frac


def _multiplier_at(progress: Sequence[float], settings: tuple[float, float, float], step: int) -> float:
    return progress_lr_multiplier(progress[min(step, len(progress) - 1)], *settings)


def progress_schedule(progress: Sequence[float], warmup_ratio: float, warmdown_ratio: float, final_lr_frac: float):
    """The LR multiplier of each step, as a function of the steps taken so far (what the Trainer's `LambdaLR` calls).
    A `partial`: `LambdaLR.state_dict` keeps only a callable object's `__dict__`, so checkpoints hold no copy of it."""
    return partial(_multiplier_at, list(progress), (warmup_ratio, warmdown_ratio, final_lr_frac))


__all__ = ["conversations_per_row", "step_progress", "progress_lr_multiplier", "progress_schedule"]
