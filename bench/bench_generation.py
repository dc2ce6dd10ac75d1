"""Generation throughput: prefill and decode tokens/s with the KV cache, against transformers' native NanoChat
(same weights) and against full recomputation without a cache; batch 1 and batch 8.

Usage: python bench/bench_generation.py [--shape cpu|d20] [--prompt 128] [--new 32] [--dtype float32|bfloat16]
"""

import argparse
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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    shape = SHAPES[args.shape]
    models = {impl: build(impl, shape, "sdpa", dtype, device).eval() for impl in ("native", "akshara")}
    rows = []
    for batch in (1, 8):
        prompt = torch.randint(0, shape["vocab_size"], (batch, args.prompt), device=device)
        kwargs = dict(do_sample=False, min_new_tokens=args.new, max_new_tokens=args.new, eos_token_id=None, pad_token_id=0)
        results = {}
        for name, model, use_cache in (("native", models["native"], True), ("akshara", models["akshara"], True),
                                       ("akshara, no cache", models["akshara"], False)):
            with torch.no_grad():
                prefill = timed(lambda: model(prompt, use_cache=use_cache), args.repeats, 1, device)
                total = timed(lambda: model.generate(prompt, use_cache=use_cache, **kwargs), args.repeats, 1, device)
            decode = max(total - prefill, 1e-9)
            results[name] = (batch * args.prompt / prefill, batch * args.new / decode)
        for reference in ("native", "akshara, no cache"):
            ref, ours = results[reference], results["akshara"]
            rows.append({
                "batch": batch, "ours": "akshara (KV cache)", "reference": reference,
                "ref prefill tok/s": ref[0], "ours prefill tok/s": ours[0], "prefill ratio": ours[0] / ref[0],
                "ref decode tok/s": ref[1], "ours decode tok/s": ours[1], "decode ratio": ours[1] / ref[1],
            })
    title = f"generation, shape {args.shape}, prompt {args.prompt}, {args.new} new tokens (greedy, median of {args.repeats})"
    print_table(title, environment(dtype, device), rows, list(rows[0]))


if __name__ == "__main__":
    main()
