"""Training-step throughput (forward + backward + Muon/AdamW step) and peak memory: Akshara vs transformers' native
`NanoChatForCausalLM` holding identical weights, eager vs SDPA, with and without gradient checkpointing, on
padded-shape batches (`batch x seq`, every token real) or, with `--batching padding-free`, on TRL's padding-free
batch of `batch` rows of random lengths in [seq/4, seq] (one flattened row with `cu_seq_lens_*`, as SFT trains).

Speed: one subprocess per (attention, checkpointing) builds both models and alternates their steps (after
`--warmup` steps each), so that load changes on a shared machine hit both alike; the ratio is the median of the
per-step-pair ratios, with its interquartile range. Memory: one subprocess per model and variant, so that its peak is
its own (on CPU: peak RSS above the RSS after imports, i.e. what building and training the model added; RSS moves
by ±30 MB between identical runs, so the median of `--memory-repeats` processes).
Usage:
    python bench/bench_train_step.py [--shape cpu|d20] [--steps N] [--warmup W] [--batch B] [--seq T] [--dtype float32|bfloat16]
        [--batching padded,padding-free]
"""

import argparse
import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import torch   # noqa: E402
from common import SHAPES, environment, peak_memory_mb, print_table, step_parser, timed  # noqa: E402


def build(impl: str, shape: dict, attn: str, dtype, device):
    from reference_nanochat import random_nanochat_state

    from akshara_hf import AksharaConfig, AksharaForCausalLM
    from akshara_hf.conversion.convert import akshara_to_native, nanochat_state_to_akshara

    config = AksharaConfig.from_nanochat(shape)
    config._attn_implementation = attn
    with torch.device("meta"):
        model = AksharaForCausalLM(config)
    state = nanochat_state_to_akshara(random_nanochat_state(shape, pad_vocab_to=1), config)
    model.load_state_dict(state, assign=True)
    model.transformer.rotary_emb.to_empty(device="cpu")
    model._init_weights(model.transformer.rotary_emb)
    if impl == "native":
        model = akshara_to_native(model)
    return model.to(device=device, dtype=dtype).train()


def optimizer_for(model):
    """nanochat's split: Muon on the block matrices, AdamW on embedding and head (same for both models)."""
    matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and (".h." in n or ".layers." in n)]
    others = [p for n, p in model.named_parameters() if not (p.ndim == 2 and (".h." in n or ".layers." in n))]
    muon = torch.optim.Muon(matrices, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, adjust_lr_fn="original")
    adamw = torch.optim.AdamW(others, lr=0.004, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    return muon, adamw


def make_batch(args, batching: str, device) -> dict:
    """The step's inputs, the same for both models (seeded)."""
    vocab = SHAPES[args.shape]["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    if batching == "padded":
        idx = torch.randint(0, vocab, (args.batch, args.seq), generator=generator)
        return {"input_ids": idx.to(device), "labels": idx.to(device)}
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    lengths = torch.randint(max(2, args.seq // 4), args.seq + 1, (args.batch,), generator=generator).tolist()
    rows = [{"input_ids": torch.randint(0, vocab, (n,), generator=generator).tolist()} for n in lengths]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def make_step(impl: str, args, device, dtype, attn: str = "sdpa", checkpointing: bool = False, batching: str = "padded"):
    """One training step of `impl` at `args`' shape/batch/seq: forward + backward + Muon/AdamW step."""
    model = build(impl, SHAPES[args.shape], attn, dtype, device)
    if checkpointing:
        model.gradient_checkpointing_enable()
    optimizers = optimizer_for(model)
    inputs = make_batch(args, batching, device)

    def step():
        loss = model(**inputs, use_cache=False).loss
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)

    step.model, step.tokens = model, inputs["input_ids"].numel()
    return step


def run_one(args) -> dict:
    """`--impl both`: alternating step times of both models; `--impl NAME`: that model's peak memory."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    env = environment(dtype, device)
    if args.impl == "both":
        steps = {
            impl: make_step(impl, args, device, dtype, args.attn, args.checkpointing, args.batching)
            for impl in ("native", "akshara")
        }
        seconds = {impl: [] for impl in steps}
        for index in range(args.warmup + args.steps):
            for impl, step in steps.items():
                elapsed = timed(step, steps=1, warmup=0, device=device)
                if index >= args.warmup:
                    seconds[impl].append(elapsed)
        return {"seconds": seconds, "tokens": steps["akshara"].tokens, "env": env}
    # Import everything `build` imports first, so that the baseline holds the code and the peak above it is the model's.
    import reference_nanochat  # noqa: F401
    import transformers.models.nanochat.modeling_nanochat  # noqa: F401

    import akshara_hf.conversion.convert  # noqa: F401

    baseline_mb = peak_memory_mb(device) if device == "cpu" else 0.0
    step = make_step(args.impl, args, device, dtype, args.attn, args.checkpointing, args.batching)
    for _ in range(2):
        step()
    return {"peak_mb": peak_memory_mb(device) - baseline_mb, "env": env}


def main():
    parser = step_parser(steps=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--memory-repeats", type=int, default=3, help="memory subprocesses per model (median)")
    parser.add_argument("--variants", default="eager,sdpa", help="attention implementations to compare")
    parser.add_argument("--checkpointing-modes", default="off,on", help="gradient checkpointing off and/or on")
    parser.add_argument("--batching", default="padded", help="padded and/or padding-free (comma list)")
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--attn", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.batching.split(",")) - {"padded", "padding-free"}
    if unknown:
        parser.error(f"--batching: unknown {sorted(unknown)}; choose from padded, padding-free")
    if args.impl:
        print(json.dumps(run_one(args)))
        return

    def measure(impl, attn, checkpointing, batching):
        cmd = [sys.executable, __file__, "--impl", impl, "--attn", attn, "--shape", args.shape, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq), "--dtype", args.dtype,
               "--batching", batching]
        out = subprocess.run(cmd + (["--checkpointing"] if checkpointing else []), capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows, env = [], None
    for batching, attn, checkpointing in itertools.product(
        args.batching.split(","), args.variants.split(","), (mode == "on" for mode in args.checkpointing_modes.split(","))
    ):
        timing = measure("both", attn, checkpointing, batching)
        env, seconds, tokens = timing["env"], timing["seconds"], timing["tokens"]
        ratios = sorted(n / a for n, a in zip(seconds["native"], seconds["akshara"]))
        quartiles = statistics.quantiles(ratios, n=4)
        peak = {impl: statistics.median(measure(impl, attn, checkpointing, batching)["peak_mb"]
                                        for _ in range(args.memory_repeats))
                for impl in ("native", "akshara")}
        rows.append({
            "batch": batching if batching == "padded" else f"padding-free, {tokens} tokens",
            "attn": attn, "grad ckpt": "on" if checkpointing else "off",
            "native tok/s": tokens / statistics.median(seconds["native"]),
            "akshara tok/s": tokens / statistics.median(seconds["akshara"]),
            "speed ratio": statistics.median(ratios), "ratio IQR": f"{quartiles[0]:.2f}-{quartiles[2]:.2f}",
            "native peak MB": peak["native"], "akshara peak MB": peak["akshara"],
            "memory ratio": peak["akshara"] / peak["native"],
        })
    title = f"training step, shape {args.shape}, batch {args.batch} x seq {args.seq}, {args.steps} alternating timed steps after {args.warmup}"
    print_table(title, env, rows, list(rows[0]))
    plain = {row["attn"]: row["akshara tok/s"] for row in rows if row["grad ckpt"] == "off" and row["batch"] == "padded"}
    if {"sdpa", "eager"} <= set(plain):
        print(f"akshara sdpa/eager speed ratio: {plain['sdpa'] / plain['eager']:.3f}")


if __name__ == "__main__":
    main()
