"""Generation throughput: prefill and decode tokens/s with the KV cache, against transformers' native NanoChat
(same weights) and against full recomputation without a cache; batch 1 and batch 8.

Prefill is timed as `generate` of 1 new token (the prompt's forward plus one sampling step), decode as the difference
between `generate` of `--new` tokens and of 1, divided by `--new - 1`: both inside `generate`, as a user runs it.
The three configurations run interleaved, one call each per round, so that load changes on a shared machine hit
them alike; the table gives medians over rounds and the spread of the per-round ratios.

Usage: python bench/bench_generation.py [--shape cpu|d20] [--prompt 128] [--new 32] [--rounds 7] [--dtype float32|bfloat16]
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from bench_train_step import build  # noqa: E402
from common import SHAPES, environment, print_table, timed  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="cpu", choices=SHAPES)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    shape = SHAPES[args.shape]
    models = {impl: build(impl, shape, "sdpa", dtype, device).eval() for impl in ("native", "akshara")}
    configs = {"native": (models["native"], True), "akshara": (models["akshara"], True),
               "akshara, no cache": (models["akshara"], False)}

    def generate(model, prompt, use_cache, new):
        model.generate(prompt, use_cache=use_cache, do_sample=False, min_new_tokens=new, max_new_tokens=new,
                       eos_token_id=None, pad_token_id=0)
    rows = []
    for batch in (1, 8):
        prompt = torch.randint(0, shape["vocab_size"], (batch, args.prompt), device=device)
        rates = {name: [] for name in configs}  # per round: (prefill tok/s, decode tok/s)
        with torch.no_grad():
            for round_ in range(args.rounds + 1):  # round 0 warms up
                for name, (model, use_cache) in configs.items():
                    prefill = timed(lambda: generate(model, prompt, use_cache, 1), 1, 0, device)
                    total = timed(lambda: generate(model, prompt, use_cache, args.new), 1, 0, device)
                    if round_:
                        decode = batch * (args.new - 1) / max(total - prefill, 1e-9)
                        rates[name].append((batch * args.prompt / prefill, decode))
        for reference in ("native", "akshara, no cache"):
            row = {"batch": batch, "ours": "akshara (KV cache)", "reference": reference}
            for i, phase in enumerate(("prefill", "decode")):
                ref = [r[i] for r in rates[reference]]
                ours = [r[i] for r in rates["akshara"]]
                ratios = sorted(o / r for o, r in zip(ours, ref))
                row |= {f"ref {phase} tok/s": statistics.median(ref), f"ours {phase} tok/s": statistics.median(ours),
                        f"{phase} ratio": statistics.median(ratios), f"{phase} ratio range": f"{ratios[0]:.2f}-{ratios[-1]:.2f}"}
            rows.append(row)
    title = (f"generation, shape {args.shape}, prompt {args.prompt}, {args.new} new tokens "
             f"(greedy, medians of {args.rounds} interleaved rounds)")
    print_table(title, environment(dtype, device), rows, list(rows[0]))


if __name__ == "__main__":
    main()
