"""From which model size frozen compiled CPU decoding (README "Fast CPU decoding") pays: per depth, what compiling
costs and what it saves per `generate` call, against plain `generate` (the folder default: dynamic cache, eager).

Each depth is nanochat's shape at that depth (width 64 x depth, heads of 128, `--vocab`), random weights, fp32,
batch 1, greedy. Per round, one eager and one compiled `generate` of `--new` tokens after a `--prompt`-token prompt,
interleaved so that load on a shared machine hits both alike (medians and the range of per-round ratios). Before the
rounds: the compiled path's first call (it compiles: wall seconds), and after them one compiled call with a prompt 8
tokens longer (another static-cache length: does it compile again?). Derived: the compile cost (first call minus a
warm one) and the calls to break even (compile cost / seconds saved per call; "never" when compiled is not faster).
The greedy tokens of both paths are compared.

Usage: python bench/bench_compiled_decode.py [--depths 4,8,12,20] [--vocab 65536] [--prompt 32] [--new 64] [--rounds 3]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from bench_train_step import build  # noqa: E402
from common import environment, frozen_compile_config, print_table  # noqa: E402


def nanochat_shape(depth: int, vocab: int) -> dict:
    """nanochat's depth rule (model_dim = depth * 64, head_dim 128)."""
    width = depth * 64
    heads = max(1, (width + 127) // 128)
    return {"sequence_len": 2048, "vocab_size": vocab, "n_layer": depth, "n_head": heads, "n_kv_head": heads,
            "n_embd": width}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--depths", default="4,8,12,20")
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fast = frozen_compile_config()
    rows = []
    for depth in (int(d) for d in args.depths.split(",")):
        shape = nanochat_shape(depth, args.vocab)
        model = build("akshara", shape, "sdpa", torch.float32, "cpu").eval()
        prompt = torch.randint(0, args.vocab, (1, args.prompt), generator=torch.Generator().manual_seed(depth))
        longer = torch.randint(0, args.vocab, (1, args.prompt + 8), generator=torch.Generator().manual_seed(-depth))

        def generate(ids, **kwargs):
            return model.generate(ids, do_sample=False, min_new_tokens=args.new, max_new_tokens=args.new,
                                  eos_token_id=None, pad_token_id=0, **kwargs)

        def timed(fn):
            start = time.perf_counter()
            out = fn()
            return time.perf_counter() - start, out

        with torch.inference_mode():
            eager_ids = generate(prompt)  # warm-up of the eager path
            first, compiled_ids = timed(lambda: generate(prompt, cache_implementation="static", compile_config=fast))
            eager, compiled = [], []
            for _ in range(args.rounds):
                eager.append(timed(lambda: generate(prompt))[0])
                compiled.append(timed(lambda: generate(prompt, cache_implementation="static",
                                                       compile_config=fast))[0])
            new_length, _ = timed(lambda: generate(longer, cache_implementation="static", compile_config=fast))
        ratios = sorted(e / c for e, c in zip(eager, compiled))
        eager_s, compiled_s = statistics.median(eager), statistics.median(compiled)
        compile_cost = first - compiled_s
        saved = eager_s - compiled_s
        rows.append({
            "depth": depth, "params": f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M",
            "eager s/call": eager_s, "compiled s/call": compiled_s, "speed ratio": statistics.median(ratios),
            "ratio range": f"{ratios[0]:.2f}-{ratios[-1]:.2f}", "first compiled call s": first,
            "prompt +8 tokens s": new_length, "calls to break even": f"{compile_cost / saved:.0f}" if saved > 0 else "never",
            "same tokens": bool(torch.equal(eager_ids, compiled_ids)),
        })
        del model
    title = (f"frozen compiled decoding vs plain generate, batch 1, prompt {args.prompt}, {args.new} new tokens, "
             f"vocab {args.vocab} (wall clock, medians of {args.rounds} interleaved rounds)")
    print_table(title, environment(torch.float32, "cpu"), rows, list(rows[0]))


if __name__ == "__main__":
    main()
