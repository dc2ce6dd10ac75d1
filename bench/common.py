"""Shared benchmark plumbing: shapes, the environment record, timing, and the reference/ours/ratio table.

Every benchmark measures its reference in the same run on the same machine and prints ratios, never absolute targets.
"""

import argparse
import datetime
import json
import platform
import resource
import time

import torch
import transformers

# "cpu": small enough for a 2-core CI box. "d20": Akshara's real shape (run with few steps on CPU; in bf16 on a GPU).
SHAPES = {
    "cpu": {"sequence_len": 256, "vocab_size": 8192, "n_layer": 4, "n_head": 4, "n_kv_head": 4, "n_embd": 256},
    "d20": {"sequence_len": 2048, "vocab_size": 65536, "n_layer": 20, "n_head": 10, "n_kv_head": 10, "n_embd": 1280},
}


def environment(dtype: torch.dtype, device: str) -> dict:
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    return {
        "date": datetime.date.today().isoformat(),
        "device": gpu or f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps: int, warmup: int, device: str) -> float:
    """Median seconds per call after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; whole-process peak


def print_table(title: str, env: dict, rows: list[dict], columns: list[str]) -> None:
    print(f"\n## {title}")
    print("env: " + json.dumps(env))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{row[c]:.3g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        print("| " + " | ".join(cells) + " |")


def frozen_compile_config():
    """README "Fast CPU decoding": static-cache decoding compiled with the weights frozen into the graph and the GEMMs
    autotuned between ATen (MKL) and inductor's own CPU kernels (which need constant weights to pack); inference only
    (see AksharaForCausalLM.get_compiled_call). The autotuner's tables of kernel timings are not printed."""
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=True, dynamic=False, mode=None, options={
        "freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "ATEN,CPP",
        "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False})
    config._compile_all_devices = True  # transformers' generate compiles only on accelerators unless told
    return config


def step_parser(steps: int) -> argparse.ArgumentParser:
    """The options every model-step benchmark shares: shape, timed steps, batch x sequence, dtype."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="cpu", choices=SHAPES)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--dtype", default="float32")
    return parser
