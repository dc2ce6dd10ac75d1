"""One table for one GPU (run by `bench/gpu.sh`, under 8 minutes on an H100-class card): d20 training step
tokens/s and MFU, padding-free SFT against pad-to-longest, compiled decoding, and what they project for the seeds.

Rows:
- train step: forward + backward + nanochat's Muon/AdamW step (`bench_train_step`'s model, batch and optimizer split)
  at `--batch x --seq`, bf16 autocast over fp32 weights (how `bf16: true` recipes train), for every attention in
  `--attn` that is installed (flash_attention_2 needs the flash-attn package), eager and `torch.compile`d. MFU =
  nanochat's FLOPs per token x tokens/s / the card's dense bf16 peak (`bench_flops.PEAK_BF16_TFLOPS`). Projection:
  the seeds' mid-v1 run, 1,047 steps x 524,288 tokens, at that rate.
- SFT: `MuonSFTTrainer` steps on v1-shaped conversations (`bench_sft_batching.v1_rows`), pad-to-longest (the seeds'
  batching, the reference) and TRL's padding-free, 32 conversations per optimizer step; supervised tokens/s and the
  ratio. Projection: the seeds' v1 SFT, 45,102 steps x 32 conversations.
- memory: one training step with the seed SFT recipe's optimizer (`MuonAdamW.from_model` at its LRs) at two
  micro-batches of `--seq` tokens (`--memory-batches`), bf16 autocast, after a first step has allocated the
  optimizer state: peak device memory of each (`torch.cuda.max_memory_allocated`), the memory per row from their
  difference, and the largest micro-batch of `--seq`-token rows that fits this card within 95 % of its memory (the
  GPU counterpart of `bench_d20_step.py`'s CPU estimate). On CPU (`--tiny`) only the step rows, without peaks.
- decode: greedy `generate` with a static cache and transformers' compiled forward (`compile_config`), batch 1 and
  32, against the same model's eager dynamic-cache decoding. Decode tokens/s = batch x (new - 1) / the median over
  `--rounds` of (time of `new` tokens - time of 1 token), after one warm-up call (where compilation happens).

`--tiny` runs everything at the CPU shape in seconds (CI's smoke test; the compiled rows then use the "eager"
backend: Dynamo's tracing without code generation). Figures from a GPU go in bench/README.md with the card named.
Usage: bash bench/gpu.sh [--steps N] [--batch B] [--seq T] [--attn sdpa,flash_attention_2] [--tiny]
"""

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import torch  # noqa: E402
import transformers  # noqa: E402
from bench_flops import peak_tflops  # noqa: E402
from bench_sft_batching import run_config, v1_rows  # noqa: E402
from bench_train_step import build, make_batch, optimizer_for  # noqa: E402
from common import SHAPES, environment, print_table, synchronize, timed  # noqa: E402

from akshara_hf.training.flops import flops_per_token  # noqa: E402

MID_V1 = (1047, 524_288)  # steps, tokens per step
SFT_V1 = (45_102, 32)  # steps, conversations per step
TINY = {"shape": "cpu", "batch": 2, "seq": 32, "steps": 1, "warmup": 1, "sft_batch": 2, "sft_accum": 2, "sft_steps": 1,
        "sft_max_length": 128, "v1_rows": 48, "prompt": 8, "new": 4, "rounds": 1, "compile_backend": "eager",
        "memory_batches": "1,2"}


def attention_available(attn: str) -> bool:
    if attn == "flash_attention_2":
        return torch.cuda.is_available() and transformers.utils.is_flash_attn_2_available()
    return attn in ("sdpa", "eager")


def autocast(device: str, bf16: bool):
    return torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train_step_row(args, attn: str, compiled: bool, device: str, peak: float | None) -> dict:
    model = build("akshara", SHAPES[args.shape], attn, torch.float32, device)
    if compiled:
        model.compile(backend=args.compile_backend)
    optimizers = optimizer_for(model)
    inputs = make_batch(args, "padded", device)

    def step():
        with autocast(device, args.bf16):
            loss = model(**inputs, use_cache=False).loss
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, args.steps, args.warmup, device)
    tokens_per_s = args.batch * args.seq / seconds
    tflops = flops_per_token(model.config, args.seq) * tokens_per_s / 1e12
    del model, optimizers
    if device == "cuda":
        torch.cuda.empty_cache()
    steps, tokens = MID_V1
    return {"measurement": f"train step, {args.batch} x {args.seq}",
            "config": f"{attn}, {'compiled' if compiled else 'eager'}",
            "tok/s": tokens_per_s, "TFLOP/s": tflops, "MFU": tflops / peak if peak else "", "ratio": "",
            "peak GiB": peak_gib(device),
            "projection": f"mid-v1 ({steps:,} x {tokens:,} tok): {steps * tokens / tokens_per_s / 3600:.2f} h"}


def peak_gib(device: str) -> float | str:
    """Peak device memory since the last reset (CUDA); "" on CPU, where RSS never goes down (bench_d20_step.py)."""
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else ""


def memory_rows(args, device: str) -> list[dict]:
    """Peak memory of a training step at two micro-batch sizes with the seed SFT recipe's optimizer, and the largest
    micro-batch of `--seq`-token rows that fits this card (steady state: the optimizer state allocated)."""
    from akshara_hf.training.optim import MuonAdamW

    peaks, out = {}, []
    for batch in args.memory_batches:
        model = build("akshara", SHAPES[args.shape], "sdpa", torch.float32, device)
        optimizer = MuonAdamW.from_model(model, init_lr_frac=0.02)  # the seed SFT recipe's LRs and optimizer
        inputs = make_batch(argparse.Namespace(**{**vars(args), "batch": batch}), "padded", device)

        def step():
            with autocast(device, args.bf16):
                loss = model(**inputs, use_cache=False).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()  # allocates the optimizer state, as every later step finds it
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(step, 1, 0, device)
        peaks[batch] = peak_gib(device)
        out.append({"measurement": f"memory, {batch} x {args.seq}", "config": "MuonAdamW (seed SFT LRs), sdpa, eager",
                    "tok/s": batch * args.seq / seconds, "TFLOP/s": "", "MFU": "", "ratio": "",
                    "peak GiB": peaks[batch], "projection": ""})
        del model, optimizer, inputs
        if device == "cuda":
            torch.cuda.empty_cache()
    if device == "cuda":
        (b1, p1), (b2, p2) = sorted(peaks.items())
        per_row = (p2 - p1) / (b2 - b1)
        fixed = p1 - per_row * b1
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        fits = int((0.95 * total - fixed) // per_row) if per_row > 0 else 0
        out.append({"measurement": f"memory, rows of {args.seq} that fit", "config": f"{total:.0f} GiB card",
                    "tok/s": float("nan"), "TFLOP/s": "", "MFU": "", "ratio": "", "peak GiB": fixed + fits * per_row,
                    "projection": f"{fits} rows ({per_row:.2f} GiB per row, {fixed:.2f} GiB fixed)"})
    return out


def sft_rows(args, device: str) -> list[dict]:
    """pad-to-longest vs padding-free on v1-shaped rows, through MuonSFTTrainer (bench_sft_batching's runner)."""
    from dist_train_script import tiny_tokenizer  # nanochat's special tokens; v1_rows draws the other ids at random

    tokenizer = tiny_tokenizer()
    rows = v1_rows(tokenizer, args.v1_rows, args.sft_max_length)
    runner = argparse.Namespace(warmup=args.warmup, accum=args.sft_accum, batch=args.sft_batch, attn="sdpa")
    placement = {"use_cpu": device == "cpu", "bf16": args.bf16}
    configs = {"pad-to-longest (reference)": {"max_length": args.sft_max_length},
               "padding-free": {"padding_free": True, "max_length": None}}
    out, reference = [], None
    for name, overrides in configs.items():
        with contextlib.redirect_stdout(io.StringIO()):
            run = run_config(rows, tokenizer, SHAPES[args.shape], runner, args.sft_steps, overrides | placement, seed=0)
        seconds = sum(run["times"])
        supervised = sum(tally[0] for tally in run["tallies"]) / seconds
        conversations_per_s = args.sft_batch * args.sft_accum * len(run["times"]) / seconds
        reference = reference or supervised
        steps, per_step = SFT_V1
        out.append({"measurement": f"SFT, v1 lengths, {args.sft_batch} x {args.sft_accum} conv/step",
                    "config": f"{name}, sdpa", "tok/s": supervised, "TFLOP/s": "", "MFU": "",
                    "ratio": supervised / reference, "peak GiB": "",
                    "projection": f"v1 SFT ({steps:,} x {per_step} conv): "
                                  f"{steps * per_step / conversations_per_s / 3600:.2f} h"})
    return out


def decode_rows(args, device: str) -> list[dict]:
    """Compiled static-cache decoding vs eager dynamic-cache decoding of the same model, per batch size."""
    from transformers import CompileConfig, StaticCache

    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = build("akshara", SHAPES[args.shape], "sdpa", dtype, device).eval()
    compile_config = CompileConfig(backend=args.compile_backend, fullgraph=False)
    compile_config._compile_all_devices = device != "cuda"  # generate compiles on accelerators only by default

    def generate(prompt, new: int, compiled: bool):
        kwargs = {"do_sample": False, "min_new_tokens": new, "max_new_tokens": new, "eos_token_id": None,
                  "pad_token_id": 0}
        if compiled:  # a fresh cache of one fixed length: every call reuses the compiled graphs
            kwargs |= {"past_key_values": StaticCache(config=model.config, max_cache_len=args.prompt + args.new),
                       "compile_config": compile_config}
        with torch.no_grad():
            model.generate(prompt, **kwargs)

    out = []
    for batch in args.decode_batches:
        prompt = torch.randint(0, SHAPES[args.shape]["vocab_size"], (batch, args.prompt), device=device)
        rates = {}
        for compiled in (False, True):
            generate(prompt, args.new, compiled)  # warm-up (and compilation)
            decode_seconds = statistics.median(
                timed(lambda: generate(prompt, args.new, compiled), 1, 0, device)
                - timed(lambda: generate(prompt, 1, compiled), 1, 0, device)
                for _ in range(args.rounds)
            )
            # nan where the machine's noise exceeds the decode time (tiny runs on a busy CPU)
            rates[compiled] = batch * (args.new - 1) / decode_seconds if decode_seconds > 0 else float("nan")
        for compiled in (False, True):
            config = "static cache, compiled" if compiled else "dynamic cache, eager (reference)"
            out.append({"measurement": f"decode, batch {batch}, prompt {args.prompt}, {args.new} new",
                        "config": config, "tok/s": rates[compiled], "TFLOP/s": "", "MFU": "",
                        "ratio": rates[compiled] / rates[False], "peak GiB": "", "projection": ""})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="d20", choices=SHAPES)
    parser.add_argument("--batch", type=int, default=16, help="train step: rows of --seq tokens")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (train step; median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens there)")
    parser.add_argument("--attn", default="sdpa,flash_attention_2", help="train step attentions (installed ones run)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--sft-batch", type=int, default=8, help="conversations per micro-batch")
    parser.add_argument("--sft-accum", type=int, default=4, help="micro-batches per step (8 x 4 = the seeds' 32)")
    parser.add_argument("--sft-steps", type=int, default=4, help="timed SFT optimizer steps per batching")
    parser.add_argument("--sft-max-length", type=int, default=2048)
    parser.add_argument("--v1-rows", type=int, default=2000, help="synthetic v1-shaped conversations")
    parser.add_argument("--memory-batches", default="1,4", help="memory: two micro-batch sizes (rows of --seq)")
    parser.add_argument("--decode-batches", default="1,32")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="decode: timed calls per configuration (median)")
    parser.add_argument("--skip", default="", help="comma list of parts to leave out: train, memory, sft, decode")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny shape, one step each")
    args = parser.parse_args()
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    args.decode_batches = [int(b) for b in str(args.decode_batches).split(",")]
    args.memory_batches = [int(b) for b in str(args.memory_batches).split(",")]
    if len(set(args.memory_batches)) != 2:
        parser.error("--memory-batches: two different micro-batch sizes, e.g. 1,4")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.bf16 = device == "cuda"  # bf16 autocast on the GPU, as the recipes train; fp32 on CPU
    transformers.logging.set_verbosity_error()
    env = environment(torch.bfloat16 if args.bf16 else torch.float32, device)
    peak = peak_tflops(env["device"]) if device == "cuda" else None
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    rows = []

    def report(new_rows):
        for row in new_rows:
            print(f"[{time.perf_counter() - started:6.0f} s] {row['measurement']} | {row['config']} | "
                  f"{row['tok/s']:.4g} tok/s", flush=True)
        rows.extend(new_rows)

    if "train" not in skip:
        for attn in args.attn.split(","):
            if not attention_available(attn):
                print(f"{attn}: not installed, skipped", flush=True)
                continue
            for compiled in (False, True):
                report([train_step_row(args, attn, compiled, device, peak)])
    if "memory" not in skip:
        report(memory_rows(args, device))
    if "sft" not in skip:
        report(sft_rows(args, device))
    if "decode" not in skip:
        report(decode_rows(args, device))
    synchronize(device)
    minutes = round((time.perf_counter() - started) / 60, 1)
    env |= {"shape": args.shape, "peak bf16 TFLOP/s": peak or "n/a", "minutes": minutes}
    print_table("GPU benchmark (one card)", env, rows, list(rows[0]))


if __name__ == "__main__":
    main()
