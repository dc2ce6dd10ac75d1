"""Progress the way Hugging Face tools show it: tqdm bars with counts, rate and ETA on stderr.

On a terminal these are tqdm's own bars (`tqdm.auto`: a notebook gets its widget). Where stderr is not a terminal (a
log file, CI, the demo's output piped to `tee`), a bar redrawn with carriage returns would be one endless line that
looks hung, so the same bar is written as whole lines instead, at most one per `interval` seconds and once when it
completes (`LineTqdm`). `TQDM_DISABLE=1` silences both (tqdm reads its `TQDM_*` variables itself).

The Trainer's bar is the Trainer's own `ProgressCallback`, given `LineTqdm` off a terminal and the last loss and
tokens per second as its postfix (`StepProgressCallback`).
"""

from __future__ import annotations

import contextvars
import functools
import os
import stat
import sys
from contextlib import contextmanager

LINE_INTERVAL = 10.0  # seconds between progress lines off a terminal (the training bar uses its own)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams (pytest's capture, a closed pipe)
        return False


def is_terminal() -> bool:
    """Whether progress on stderr reaches a terminal: stderr is one, or it is a pipe while stdout is a terminal
    (`accelerate launch` passes its processes' stderr on through a pipe)."""
    if _isatty(sys.stderr):
        return True
    try:
        return _isatty(sys.stdout) and stat.S_ISFIFO(os.fstat(sys.stderr.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def quiet_library_bars_off_terminal() -> None:
    """Off a terminal, `datasets`' bars (split generation, map, save: seconds each, drawn with carriage returns) stay
    off unless the user set `HF_DATASETS_DISABLE_PROGRESS_BARS`; the commands' own progress lines stand for them.
    Call before `datasets` is imported (it reads the variable then)."""
    if not is_terminal() and "datasets" not in sys.modules:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


class _WholeLines:
    """The bar's file: passes the lines `LineTqdm.display` writes, drops tqdm's own bare '\\r' / '\\n' writes."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip():
            self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def __getattr__(name):  # `LineTqdm` is built on first use: tqdm's import costs `akshara-hf --help` ~0.2-0.7 s
    if name == "LineTqdm":
        return _line_tqdm()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _line_tqdm():
    from tqdm.std import tqdm

    class LineTqdm(tqdm):
        """A tqdm bar written as one whole line per refresh (`12/40 [00:31<01:12, 2.6s/it, loss=6.23]`), for output
        that is not a terminal. No line before the first `mininterval` seconds (`delay`), so a command that ends at
        once, or fails at once, prints only its result; always a last line when the bar completes."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("mininterval", LINE_INTERVAL)
            kwargs.setdefault("delay", kwargs["mininterval"])
            kwargs.setdefault("ascii", True)
            kwargs["file"] = _WholeLines(kwargs.get("file") or sys.stderr)
            kwargs["dynamic_ncols"] = False
            kwargs.setdefault("ncols", 100)
            super().__init__(*args, **kwargs)

        def close(self):
            if getattr(self, "disable", True):
                return super().close()
            if self.leave is not False and getattr(self, "_shown", None) != (self.n, self.postfix):
                self._closing = True
                self.display()  # the last count (and loss), once; tqdm's own close shows only bars shown before
            self.leave = False  # tqdm's close would print the same count again
            super().close()

        def display(self, msg=None, pos=None):
            if msg is None and self.total and self.n >= self.total and not getattr(self, "_closing", False):
                # the completed count waits for close: the Trainer logs the last step's loss just after the update
                # (two "10/10" lines, the first with the previous loss, when a refresh fell on the last step)
                return True
            text = self.__str__() if msg is None else msg
            if text:
                self.fp.write(text.rstrip() + "\n")
                self.fp.flush()
                self._shown = (self.n, self.postfix)
            return True

    return LineTqdm


def bar(total: int | None = None, desc: str | None = None, unit: str = "it", interval: float | None = None, **kwargs):
    """A progress bar on stderr: tqdm's own on a terminal, `LineTqdm` elsewhere (`interval`: seconds between lines)."""
    if is_terminal():
        from tqdm.auto import tqdm as auto_tqdm

        return auto_tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, **kwargs)
    interval = LINE_INTERVAL if interval is None else interval
    return _line_tqdm()(total=total, desc=desc, unit=unit, mininterval=interval, **kwargs)


@contextmanager
def progress(total: int | None = None, desc: str | None = None, unit: str = "it", interval: float | None = None):
    """`with progress(N, "evaluate: loss", "row") as p: ... p.update(k)`. When the block raises, the bar is closed
    without a last line (on a terminal: erased), so the command's one error line stands alone."""
    progress_bar = bar(total, desc, unit, interval)
    try:
        yield progress_bar
    except BaseException:
        progress_bar.leave = False
        raise
    finally:
        progress_bar.close()


_phases: contextvars.ContextVar = contextvars.ContextVar("akshara_hf_phases", default=None)


def with_phases(desc: str, *names: str):
    """Decorates a command made of a few long phases (a conversion: load, convert, write): a bar of `len(names)`
    steps showing the phase under way; the function calls `next_phase()` where each phase ends (the last ends with
    the function)."""
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with progress(len(names), desc, "step") as progress_bar:
                progress_bar.set_postfix_str(names[0], refresh=False)
                token = _phases.set((progress_bar, names))
                try:
                    result = function(*args, **kwargs)
                finally:
                    _phases.reset(token)
                progress_bar.set_postfix_str("done", refresh=False)
                progress_bar.update(len(names) - progress_bar.n)
            return result
        return wrapper
    return decorate


def next_phase() -> None:
    """The current phase of the `with_phases` command running is done; the next one starts (no-op outside one)."""
    current = _phases.get()
    if current is None:
        return
    progress_bar, names = current
    if progress_bar.n + 1 < len(names):
        progress_bar.set_postfix_str(names[progress_bar.n + 1], refresh=False)
        progress_bar.update(1)


def step_progress_callback():
    """The Trainer's `ProgressCallback`, with `LineTqdm` off a terminal (one line per step at most every second) and
    the last loss and tokens/s as the bar's postfix. A function so that this module imports no transformers."""
    from transformers.trainer_callback import ProgressCallback

    class StepProgressCallback(ProgressCallback):
        """Trainer progress: step i/N with rate and ETA (tqdm), the last loss and tokens per second beside it, the
        evaluation's batches as their own bar."""

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.training_bar = bar(total=state.max_steps, desc="training", unit="step", interval=1.0)
            self.current_step = 0

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            if state.is_world_process_zero and self.prediction_bar is None and eval_dataloader is not None:
                try:
                    total = len(eval_dataloader)
                except TypeError:
                    total = None
                self.prediction_bar = bar(total=total, desc="evaluating", unit="batch", interval=5.0,
                                          leave=self.training_bar is None)
            if state.is_world_process_zero and self.prediction_bar is not None:
                self.prediction_bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                postfix = {"loss": f"{logs['loss']:.4g}"}
                if "train_tokens_per_second" in logs:
                    postfix["tokens/s"] = f"{logs['train_tokens_per_second']:,.0f}"
                self.training_bar.set_postfix(postfix, refresh=False)
            super().on_log(args, state, control, logs=logs, **kwargs)

    return StepProgressCallback()


def use_step_progress(trainer) -> None:
    """Give `trainer` the step progress above in place of its `ProgressCallback` (kept off when `disable_tqdm`)."""
    from transformers.trainer_callback import ProgressCallback

    if trainer.args.disable_tqdm:
        return
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(step_progress_callback())
