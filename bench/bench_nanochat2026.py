"""nanochat 2026 vs late 2025 at the same size, and what the 2026 sliding windows save, at 4x the short window.

Three models with the same shape (random weights): "late-2025"; "2026" (window pattern SSSL: value embeddings,
lambdas, smear, backout, and windows of S + 1 keys on 3 of 4 layers); "2026, no windows" (the same model with every
layer full attention). Inputs are 4x the short window long (S = 128 keys back for sequence_len <= 512, so 512
tokens), where the windowed layers see a quarter of the keys. Rows:

- forward (prefill) tokens/s, batch `--batch`: 2026 against late 2025, then windows against no windows;
- decode tokens/s: one-token forwards through the KV cache after a prompt of 4x the short window (batch 1; a
  copy of the prefilled cache per round): the same two comparisons;
- KV cache after the prompt: bytes held (sliding layers keep only their window).

Configurations run interleaved, one call each per round; medians over rounds and the spread of per-round ratios.

Usage: python bench/bench_nanochat2026.py [--shape cpu|d20] [--rounds 5] [--new 16] [--batch 2] [--dtype float32]
"""

import argparse
import copy
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import SHAPES, environment, print_table, timed  # noqa: E402

from akshara_hf import AksharaConfig, AksharaForCausalLM  # noqa: E402
from akshara_hf.model.modeling_akshara import AksharaCache  # noqa: E402


def models(shape: dict, dtype, device) -> dict:
    late = AksharaConfig.from_nanochat(shape)
    new = AksharaConfig.from_nanochat({**shape, "window_pattern": "SSSL"})
    no_windows = AksharaConfig.from_nanochat({**shape, "window_pattern": "L"})  # every layer full attention
    torch.manual_seed(0)
    built = {"late-2025": AksharaForCausalLM(late), "2026": AksharaForCausalLM(new)}
    built["2026, no windows"] = AksharaForCausalLM(no_windows)
    built["2026, no windows"].load_state_dict(built["2026"].state_dict())  # the same weights
    return {name: model.to(device, dtype).eval() for name, model in built.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="cpu", choices=SHAPES)
    parser.add_argument("--sequence-len", type=int, default=512, help="nanochat's sequence_len (S = ceil(it/4/128)*128)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new", type=int, default=16, help="decode steps timed per round")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    shape = {**SHAPES[args.shape], "sequence_len": args.sequence_len}
    built = models(shape, dtype, device)
    window = built["2026"].config.sliding_window  # keys seen, the query's own included
    length = 4 * (window - 1)
    ids = torch.randint(0, shape["vocab_size"], (args.batch, length), device=device)
    prompt = ids[:1]

    def decode(model, cache, steps):
        """`steps` one-token forwards through a copy of the prefilled cache (greedy: each feeds its argmax back)."""
        cache, token = copy.deepcopy(cache), prompt[:, -1:]
        for _ in range(steps):
            token = model(token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)

    rates = {name: {"forward": [], "decode": []} for name in built}
    with torch.no_grad():
        prefilled = {}
        for name, model in built.items():
            prefilled[name] = AksharaCache(config=model.config)
            model(prompt, past_key_values=prefilled[name], use_cache=True)
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for name, model in built.items():
                forward = timed(lambda: model(ids, use_cache=False), 1, 0, device)
                steps = timed(lambda: decode(model, prefilled[name], args.new), 1, 0, device)
                if round_:
                    rates[name]["forward"].append(args.batch * length / forward)
                    rates[name]["decode"].append(args.new / steps)
        cache_bytes = {name: sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
                       for name, cache in prefilled.items()}

    rows = []
    for phase in ("forward", "decode"):
        for reference, ours in (("late-2025", "2026"), ("2026, no windows", "2026")):
            ref, mine = rates[reference][phase], rates[ours][phase]
            ratios = sorted(o / r for o, r in zip(mine, ref))
            rows.append({"what": f"{phase} tok/s", "reference": reference, "ours": ours,
                         "ref": statistics.median(ref), "ours value": statistics.median(mine),
                         "ratio": statistics.median(ratios), "ratio range": f"{ratios[0]:.2f}-{ratios[-1]:.2f}"})
    for reference in ("late-2025", "2026, no windows"):
        rows.append({"what": "KV cache bytes", "reference": reference, "ours": "2026", "ref": float(cache_bytes[reference]),
                     "ours value": float(cache_bytes["2026"]), "ratio": cache_bytes["2026"] / cache_bytes[reference],
                     "ratio range": "exact"})
    title = (f"nanochat 2026 vs late 2025, shape {args.shape}, sequence_len {args.sequence_len}, input {length} tokens "
             f"= 4 x short window ({window} keys), batch {args.batch}, {args.new} decoded (medians of {args.rounds} "
             "interleaved rounds)")
    print_table(title, environment(dtype, device), rows, list(rows[0]))


if __name__ == "__main__":
    main()
