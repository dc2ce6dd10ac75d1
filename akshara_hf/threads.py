"""CPU threads for the processes the project starts (training scripts, demo, evaluate, chat, serve, conversions).

torch's CPU kernels run on GNU OpenMP (the pip wheels' runtime), one thread per core. Between parallel regions its
idle threads spin, by default, for a long while before they sleep; on a machine whose cores other processes also
use, the spinning threads take CPU time from the thread that has work, and every small operation waits for them.
`bench/bench_threads.py` measures it: a depth-4 Akshara training step (the demo's) beside two busy processes on 2
cores took several times longer with torch's defaults than with `OMP_WAIT_POLICY=PASSIVE` (idle threads sleep at
once), which was also no slower when nothing else ran; one thread instead of two helped less than passive waiting
(bench/README.md has the figures). So the entry points call `configure_threads()` before torch is imported.

The user decides when they say so: an `OMP_WAIT_POLICY` (or `GOMP_SPINCOUNT`) already in the environment is kept,
and the thread count stays torch's (all usable cores) unless `OMP_NUM_THREADS` is set or the program calls
`torch.set_num_threads`. Light on purpose: no torch import here.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "PASSIVE"


def _torch_loaded() -> bool:
    """torch imported for real (`akshara_hf.lazy.lazy_import` leaves a placeholder that loads on first use)."""
    module = sys.modules.get("torch")
    return module is not None and type(module).__name__ != "_LazyModule"


def configure_threads() -> bool:
    """Let torch's idle OpenMP threads sleep instead of spinning (`OMP_WAIT_POLICY=PASSIVE`) unless the user chose a
    policy; it also reaches the processes this one starts. OpenMP reads the variable when torch loads it, so this must
    run before torch is imported: in a process that already has (a notebook, a test) it changes nothing and returns
    False."""
    if _torch_loaded():
        return False
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True
