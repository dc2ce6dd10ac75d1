"""One optimizer step of the seed SFT recipe (`training/recipes/nanochat-telugu-d20-sft-v1.yaml`: its LRs,
init_lr_frac, optimizer and loss) on a d20-shaped model (random weights, vocabulary 65,536), on CPU, with its peak
memory; and from that, the device batch sizes that fit a 24 GB and an 80 GB GPU.

Each measurement is a fresh subprocess (`--child`): it imports everything, builds the model, then runs one
`MuonSFTTrainer` step (1 micro-batch of `batch` rows x `seq` tokens, every token supervised) and reports its peak
RSS (`resource.getrusage` maxrss: the only peak that counts every allocator; tracemalloc does not see torch's).
Two token counts at the same dtype give the activation memory per token: the difference of the forward + backward
peaks (RSS when the optimizer step begins; a fresh optimizer allocates its state only then) over the difference of
the tokens, so everything that does not grow with the tokens cancels. The GPU table then adds, per micro-batch of `b` rows x 2,048 tokens (the recipe's `max_length`;
SFT pads to the longest row, so this is the worst case), b x 2,048 x the measured bytes per token (bf16 autocast,
as `bf16: true` trains) to the fixed memory of bf16 training on a GPU counted from the parameters: fp32 weights and
gradients, AdamW's two moments, Muon's momentum, autocast's bf16 copies of the matrices (kept for the backward), and
1 GiB for the CUDA context and workspaces; a card fits `b` when that stays within 95 % of its memory.

Usage:
    python bench/bench_d20_step.py                     # d20, bf16 autocast, 1 x 256 and 1 x 1024 tokens
    python bench/bench_d20_step.py --dtype float32 --points 1x128,1x256
    python bench/bench_d20_step.py --tiny              # the CPU smoke run (small shape, a few tokens)
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "training" / "recipes" / "nanochat-telugu-d20-sft-v1.yaml"
GIB = 2**30
CARDS = {"A30 (24 GB)": 24, "A100 / H100 (80 GB)": 80}  # GiB of device memory
CUDA_CONTEXT_GIB, USABLE_FRACTION = 1.0, 0.95


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def model_config(shape: dict):
    from akshara_hf import AksharaConfig

    return AksharaConfig.from_nanochat(shape)


def parameter_counts(config) -> dict:
    """Parameters per optimizer group of the model `config` describes (built on the meta device: no memory)."""
    import torch

    from akshara_hf import AksharaForCausalLM
    from akshara_hf.training.optim import split_parameters

    with torch.device("meta"):
        model = AksharaForCausalLM(config)
    return {name: sum(p.numel() for _, p in members) for name, members in split_parameters(model).items()}


def gpu_fixed_bytes(counts: dict) -> float:
    """Fixed memory of bf16-autocast training on a GPU: fp32 weights (4 B) and gradients (4 B) of every parameter,
    AdamW's two fp32 moments (8 B) on its tensors, Muon's fp32 momentum (4 B) on its matrices, autocast's bf16 copy
    (2 B) of every matrix a matmul reads (the blocks and the head: saved for the backward), and the CUDA context."""
    total = sum(counts.values())
    adamw = total - counts["muon"]
    matmul_weights = counts["muon"] + counts["unembedding"]
    return 8 * total + 8 * adamw + 4 * counts["muon"] + 2 * matmul_weights + CUDA_CONTEXT_GIB * GIB


def child(batch: int, seq: int, dtype: str, shape_name: str) -> dict:
    """One optimizer step in this process; the peak RSS at each stage."""
    import torch
    from datasets import Dataset

    from akshara_hf import AksharaForCausalLM
    from akshara_hf.training.recipe import parse_config
    from akshara_hf.training.run import AksharaRunArguments
    from akshara_hf.training.trainer import MuonSFTTrainer
    from common import SHAPES
    from dist_train_script import tiny_tokenizer
    from transformers import TrainerCallback

    torch.manual_seed(0)
    imported = maxrss_bytes()
    with tempfile.TemporaryDirectory() as output_dir:
        args, _ = parse_config([
            "--config", str(RECIPE), "--output_dir", output_dir, "--use_cpu", "true",
            "--bf16", str(dtype == "bfloat16").lower(), "--per_device_train_batch_size", str(batch),
            "--target_examples_per_step", str(batch), "--max_steps", "1", "--save_strategy", "no",
            "--eval_strategy", "no", "--report_to", "none", "--logging_steps", "1", "--disable_tqdm", "true",
            "--dataloader_num_workers", "0", "--train_sampling_strategy", "sequential",
        ], AksharaRunArguments)  # fmt: skip
        shape = SHAPES[shape_name]
        model = AksharaForCausalLM(model_config(shape))  # fp32 weights, as bf16 autocast trains them
        built = maxrss_bytes()
        generator = torch.Generator().manual_seed(0)
        rows = [{"input_ids": torch.randint(0, shape["vocab_size"], (seq,), generator=generator).tolist(),
                 "assistant_masks": [1] * seq} for _ in range(batch)]  # fmt: skip
        times = {}

        class StepTimer(TrainerCallback):
            def on_step_begin(self, *a, **k):
                times["begin"] = time.perf_counter()

            def on_pre_optimizer_step(self, *a, **k):
                times["backward_peak"] = maxrss_bytes()  # forward + backward: before the optimizer allocates its state

            def on_step_end(self, *a, **k):
                times["end"] = time.perf_counter()

        trainer = MuonSFTTrainer(model, args, train_dataset=Dataset.from_list(rows), processing_class=tiny_tokenizer(),
                                 callbacks=[StepTimer()])  # fmt: skip
        before_step = maxrss_bytes()
        trainer.train()
        loss = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    return {"batch": batch, "seq": seq, "tokens": batch * seq, "dtype": dtype, "loss": loss,
            "imported": imported, "built": built, "before_step": before_step, "backward_peak": times["backward_peak"],
            "peak": maxrss_bytes(),
            "step_seconds": times["end"] - times["begin"], "init_lr_frac": args.init_lr_frac,
            "matrix_lr": args.matrix_lr, "threads": torch.get_num_threads()}  # fmt: skip


def measure(batch: int, seq: int, dtype: str, shape: str) -> dict:
    command = [sys.executable, __file__, "--child", str(batch), str(seq), dtype, shape]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"bench_d20_step: the {batch} x {seq} {dtype} step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", default="1x256,1x1024", help="two micro-batches, BATCHxSEQ, of different sizes")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="bfloat16: autocast over fp32 weights (the recipe's bf16: true); float32: plain")
    parser.add_argument("--seq-for-table", type=int, default=2048, help="tokens per row in the GPU table")
    parser.add_argument("--tiny", action="store_true", help="smoke run: the small 'cpu' shape, 1x16 and 1x32 tokens")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        batch, seq, dtype, shape = options.child
        print(json.dumps(child(int(batch), int(seq), dtype, shape)))
        return
    from common import SHAPES, environment, print_table

    import torch

    shape = "cpu" if options.tiny else "d20"
    points = ["1x16", "1x32"] if options.tiny else options.points.split(",")
    points = [tuple(int(n) for n in point.split("x")) for point in points]
    if len(points) != 2 or points[0][0] * points[0][1] == points[1][0] * points[1][1]:
        parser.error("--points: two micro-batches with different token counts, e.g. 1x256,1x512")
    config = model_config(SHAPES[shape])
    counts = parameter_counts(config)
    total = sum(counts.values())
    need = 16 * total + 4 * 2**20 * max(b * s for b, s in points)  # weights, grads, states; ~4 MB per token at most
    free = available_bytes()
    if free is not None and free < need:
        raise SystemExit(f"bench_d20_step: needs about {need / GIB:.1f} GiB of free memory, {free / GIB:.1f} GiB "
                         "available: run it on a quieter machine (or --tiny)")
    runs = [measure(b, s, options.dtype, shape) for b, s in points]
    small, large = sorted(runs, key=lambda r: r["tokens"])
    # One step from a fresh optimizer: its state is allocated after the backward, so the forward + backward peak is
    # where the tokens' memory shows (the step's own peak can be higher and is the same for any token count).
    per_token = (large["backward_peak"] - small["backward_peak"]) / (large["tokens"] - small["tokens"])
    fixed = small["backward_peak"] - per_token * small["tokens"]
    env = environment(torch.bfloat16 if options.dtype == "bfloat16" else torch.float32, "cpu")
    rows = [{"micro-batch": f"{r['batch']} x {r['seq']}", "loss": r["loss"], "step s": r["step_seconds"],
             "tok/s": r["tokens"] / r["step_seconds"], "after imports GiB": r["imported"] / GIB,
             "model built GiB": r["built"] / GIB, "fwd+bwd peak GiB": r["backward_peak"] / GIB,
             "step peak GiB": r["peak"] / GIB} for r in runs]  # fmt: skip
    print_table(f"one optimizer step of {RECIPE.name}, shape {shape}, CPU", env | {
        "parameters": total, "muon": counts["muon"], "init_lr_frac": small["init_lr_frac"]}, rows, list(rows[0]))
    print(f"activation memory per token ({options.dtype}): {per_token / 2**20:.3f} MiB; fixed part of the forward + "
          f"backward peak: {fixed / GIB:.2f} GiB (fp32 weights + grads alone: {8 * total / GIB:.2f} GiB; the optimizer "
          f"state adds {(8 * (total - counts['muon']) + 4 * counts['muon']) / GIB:.2f} GiB at the step)")
    gpu_fixed = gpu_fixed_bytes(counts)
    table = []
    for card, gib in CARDS.items():
        usable = USABLE_FRACTION * gib * GIB
        per_row = per_token * options.seq_for_table
        fits = max(0, int((usable - gpu_fixed) // per_row)) if per_row > 0 else 0
        table.append({"card": card, "fixed GiB": gpu_fixed / GIB, "per row GiB": per_row / GIB,
                      "device batch that fits": fits,
                      "memory at that batch GiB": (gpu_fixed + fits * per_row) / GIB})  # fmt: skip
    print_table(f"device batch (rows of {options.seq_for_table} tokens) that fits, bf16 training, from the measured "
                f"per-token memory", {"per token MiB": round(per_token / 2**20, 4), "dtype measured": options.dtype,
                                     "usable": f"{USABLE_FRACTION:.0%} of the card"}, table, list(table[0]))


if __name__ == "__main__":
    main()
