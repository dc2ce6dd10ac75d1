"""Akshara against nanochat's own late-2025 GPT and Engine (and transformers' native NanoChat), same weights.

nanochat is imported from a checkout the user supplies (`--nanochat-src`, the directory holding `nanochat/gpt.py`);
this project ships none of its code. All three models hold the same random nanochat weights.

Decode: greedy tokens/s after a `--prompt`-token prompt, at each `--batches` size, as users run each model:
nanochat's `Engine.generate` (one batch-1 prefill, its KV cache replicated to the batch), and `generate` for the
transformers models (the prompt repeated to the batch). Decode time = time(`--new` tokens) - time(1 token), so the
prefill cancels. Train: one forward + backward of the loss on `--train-batch x --train-seq` tokens.
Every contender runs once per round, rounds interleaved, so that load on a shared machine hits them alike; tables give
medians over rounds and the range of the per-round ratios. `--clock process` (default) times the CPU seconds of
this process (with `--threads 1`: the work done, insensitive to other users' load on a shared machine); `wall` times
wall-clock seconds. `--compile` adds `torch.compile` rows (inductor): Akshara's static-cache compiled `generate` (as
transformers compiles it, and with the weights frozen and the GEMMs autotuned: inference only), and compiled training
steps of all three models.

Usage: python bench/bench_nanochat.py --nanochat-src PATH [--shape cpu|d20] [--prompt 32] [--new 64] [--batches 1,8]
           [--rounds 7] [--threads 1] [--clock process|wall] [--train-batch 4] [--train-seq 256] [--compile]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from bench_train_step import build  # noqa: E402
from common import SHAPES, environment, frozen_compile_config, print_table  # noqa: E402


def import_nanochat(src: str):
    if not (Path(src) / "nanochat" / "gpt.py").is_file():
        raise SystemExit(f"bench_nanochat.py: error: {src}: not a nanochat checkout (no nanochat/gpt.py)")
    sys.path.insert(0, str(Path(src).resolve()))
    from nanochat import engine, gpt

    return gpt, engine


def build_nanochat(gpt_module, model, shape: dict):
    """nanochat's GPT holding `model`'s weights (Akshara keeps nanochat's parameter names)."""
    with torch.device("meta"):
        gpt = gpt_module.GPT(gpt_module.GPTConfig(**shape), pad_vocab_size_to=1)
    gpt.to_empty(device="cpu")
    gpt.load_state_dict({name: p.detach().clone() for name, p in model.named_parameters()}, strict=True)
    gpt.cos, gpt.sin = gpt._precompute_rotary_embeddings(gpt.rotary_seq_len, shape["n_embd"] // shape["n_head"])
    return gpt


class NoSpecialTokens:
    """`Engine` asks its tokenizer for the tool-use and stop ids; ids outside the vocabulary are never sampled."""

    def encode_special(self, text):
        return -1

    def get_bos_token_id(self):
        return -2


def clock(kind: str):
    return time.process_time if kind == "process" else time.perf_counter


def ratio_row(rates: dict, ours: str, reference: str, unit: str, **fields) -> dict:
    ratios = sorted(o / r for o, r in zip(rates[ours], rates[reference]))
    return {**fields, "ours": ours, "reference": reference, f"ours {unit}": statistics.median(rates[ours]),
            f"ref {unit}": statistics.median(rates[reference]), "ratio": statistics.median(ratios),
            "ratio range": f"{ratios[0]:.2f}-{ratios[-1]:.2f}"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nanochat-src", required=True)
    parser.add_argument("--shape", default="cpu", choices=SHAPES)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", default="process", choices=["process", "wall"])
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-seq", type=int, default=256)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gpt_module, engine_module = import_nanochat(args.nanochat_src)
    from transformers import CompileConfig

    shape, now = SHAPES[args.shape], clock(args.clock)
    akshara = build("akshara", shape, "sdpa", torch.float32, "cpu").eval()
    native = build("native", shape, "sdpa", torch.float32, "cpu").eval()
    gpt = build_nanochat(gpt_module, akshara, shape).eval()
    engine = engine_module.Engine(gpt, NoSpecialTokens())
    compile_config = CompileConfig(fullgraph=True, dynamic=False)
    compile_config._compile_all_devices = True  # generate compiles only on accelerators unless told
    frozen_config = frozen_compile_config()  # the README's: weights frozen, GEMMs autotuned (inference only)
    env = {**environment(torch.float32, "cpu"), "clock": args.clock}

    def hf_generate(model, prompt, new, **kwargs):
        return model.generate(prompt, do_sample=False, min_new_tokens=new, max_new_tokens=new, eos_token_id=None,
                              pad_token_id=0, **kwargs)[:, prompt.shape[1]:]

    def engine_generate(prompt, new):
        columns = [c for c, _ in engine.generate(prompt[0].tolist(), num_samples=prompt.shape[0], max_tokens=new,
                                                  temperature=0.0)]
        return torch.tensor(columns).T

    decoders = {
        "nanochat Engine": engine_generate,
        "native NanoChat generate": lambda p, n: hf_generate(native, p, n),
        "akshara generate": lambda p, n: hf_generate(akshara, p, n),
    }
    if args.compile:
        decoders["akshara generate, static cache, compiled"] = lambda p, n: hf_generate(
            akshara, p, n, cache_implementation="static", compile_config=compile_config)
        decoders["akshara generate, static cache, compiled, frozen + max-autotune"] = lambda p, n: hf_generate(
            akshara, p, n, cache_implementation="static", compile_config=frozen_config)
    rows = []
    with torch.inference_mode():
        for batch in (int(b) for b in args.batches.split(",")):
            prompt = torch.randint(0, shape["vocab_size"], (1, args.prompt), generator=torch.Generator().manual_seed(0))
            prompt = prompt.expand(batch, -1)
            same = {name: torch.equal(fn(prompt, 8), engine_generate(prompt, 8)) for name, fn in decoders.items()}
            rates = {name: [] for name in decoders}
            for round_ in range(args.rounds + 1):  # round 0 warms up (and compiles)
                for name, fn in decoders.items():
                    start = now()
                    fn(prompt, 1)
                    middle = now()
                    fn(prompt, args.new)
                    seconds = (now() - middle) - (middle - start)
                    if round_:
                        rates[name].append(batch * (args.new - 1) / max(seconds, 1e-9))
            for ours in (name for name in decoders if name.startswith("akshara")):
                for reference in ("nanochat Engine", "native NanoChat generate"):
                    rows.append(ratio_row(rates, ours, reference, "tok/s", batch=batch,
                                          **{"same greedy tokens as nanochat": same[ours]}))
    print_table(f"decode vs nanochat, shape {args.shape}, prompt {args.prompt}, {args.new} new tokens (greedy, medians "
                f"of {args.rounds} interleaved rounds)", env, rows, list(rows[0]))

    idx = torch.randint(0, shape["vocab_size"], (args.train_batch, args.train_seq),
                        generator=torch.Generator().manual_seed(1))
    targets = torch.cat([idx[:, 1:], torch.full_like(idx[:, :1], -1)], 1)  # nanochat's ignore_index is -1
    models = {"nanochat GPT": gpt, "native NanoChat": native, "akshara": akshara}
    losses = {"nanochat GPT": lambda m: m(idx, targets=targets), "native NanoChat": lambda m: m(idx, labels=idx).loss,
              "akshara": lambda m: m(idx, labels=idx).loss}
    steppers = {}
    for name, model in models.items():
        model.train()
        steppers[name] = (model, losses[name])
        if args.compile:
            steppers[f"{name}, compiled"] = (torch.compile(model), losses[name])
    loss_values = {}
    for name, (model, loss) in steppers.items():  # warm-up: compiles forward and backward before the timed rounds
        value = loss(model)
        value.backward()
        loss_values[name] = value.item()
    rates = {name: [] for name in steppers}
    for _ in range(args.rounds):
        for name, (model, loss) in steppers.items():
            model.zero_grad(set_to_none=True)
            start = now()
            loss(model).backward()
            rates[name].append(idx.numel() / (now() - start))
    rows = []
    for ours in (name for name in steppers if name.startswith("akshara")):
        for reference in (name for name in steppers if not name.startswith("akshara")):
            rows.append(ratio_row(rates, ours, reference, "tok/s",
                                  **{"loss diff": f"{abs(loss_values[ours] - loss_values[reference]):.1e}"}))
    print_table(f"train forward+backward vs nanochat, shape {args.shape}, {args.train_batch} x {args.train_seq} "
                f"(medians of {args.rounds} interleaved rounds)", env, rows, list(rows[0]))


if __name__ == "__main__":
    main()
