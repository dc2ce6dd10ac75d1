"""FLOPs per token (nanochat's `estimate_flops`, `akshara_hf.training.flops`) against the seeds' logged totals, and the
achieved model FLOP/s and MFU of a training step at the chosen shape.

The reference is the seed write-ups' own FLOP counts and times (1 x A30, bf16): our formula times steps times
524,288 tokens per step must give their totals. MFU needs a GPU's dense bf16 peak: known GPUs are listed below
(override with --peak-tflops); on CPU the achieved FLOP/s is printed and MFU is left empty.

Usage: python bench/bench_flops.py [--shape cpu|d20] [--steps N] [--batch B] [--seq T] [--dtype bfloat16] [--peak-tflops X]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from bench_train_step import make_step  # noqa: E402
from common import SHAPES, environment, print_table, step_parser, timed  # noqa: E402

from akshara_hf import AksharaConfig  # noqa: E402
from akshara_hf.training.flops import flops_per_token  # noqa: E402

# The seeds' mid-training runs: (steps, logged FLOPs, logged seconds). 524,288 tokens per step, sequence 2048.
SEED_RUNS = {
    "nanochat-telugu-d20-mid-smoltalk-100k": (262, 479_639_957_384_724_500, 5655.47),
    "nanochat-telugu-d20-mid-v1-akshara": (1047, 1.917e18, 24586.0),  # the write-up gives 1.917 EFLOP (rounded)
}
TOKENS_PER_STEP = 524_288
# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"A30": 165.0, "A100": 312.0, "H100": 989.0, "H200": 989.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device_name: str) -> float | None:
    return next((peak for name, peak in PEAK_BF16_TFLOPS.items() if name in device_name), None)


def main():
    parser = step_parser(steps=5)
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()

    d20 = AksharaConfig.from_nanochat(SHAPES["d20"])
    per_token = flops_per_token(d20, 2048)
    rows = []
    for run, (steps, logged, seconds) in SEED_RUNS.items():
        ours = per_token * steps * TOKENS_PER_STEP
        rows.append({
            "run": run, "steps": steps, "seed FLOPs": f"{logged:,}" if isinstance(logged, int) else f"{logged:.4g}",
            "ours FLOPs": f"{ours:,}", "ratio": f"{ours / logged:.6f}", "seed TFLOP/s": ours / seconds / 1e12,
            "seed MFU (A30)": ours / seconds / 1e12 / PEAK_BF16_TFLOPS["A30"],
        })
    print(f"d20 FLOPs per token at sequence 2048: {per_token:,}")
    print_table("FLOPs: our formula vs the seeds' logged totals", {"source": "docs/akshara-runs.md"}, rows, list(rows[0]))

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    step = make_step("akshara", args, device, dtype)
    seconds = timed(step, steps=args.steps, warmup=2, device=device)
    achieved = flops_per_token(step.model.config, args.seq) * args.batch * args.seq / seconds / 1e12
    env = environment(dtype, device)
    peak = args.peak_tflops or (peak_tflops(env["device"]) if device == "cuda" else None)
    row = {"shape": args.shape, "batch x seq": f"{args.batch} x {args.seq}", "tok/s": args.batch * args.seq / seconds,
           "achieved TFLOP/s": achieved, "peak TFLOP/s": peak or "", "MFU": achieved / peak if peak else ""}
    print_table(f"achieved model FLOP/s, training step (median of {args.steps})", env, [row], list(row))


if __name__ == "__main__":
    main()
