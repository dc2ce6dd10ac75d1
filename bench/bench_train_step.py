"""Training-step throughput (forward + backward + Muon/AdamW step) and peak memory: Akshara vs transformers' native
`NanoChatForCausalLM` holding identical weights, eager vs SDPA, with and without gradient checkpointing.

Each variant runs in its own subprocess so that its peak memory is its own. Usage:
    python bench/bench_train_step.py [--shape cpu|d20] [--steps N] [--batch B] [--seq T] [--dtype float32|bfloat16]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import torch  # noqa: E402
from common import SHAPES, environment, peak_memory_mb, print_table, timed  # noqa: E402


def build(impl: str, shape: dict, attn: str, dtype, device):
    from reference_nanochat import random_nanochat_state

    from akshara_hf import AksharaConfig, AksharaForCausalLM
    from akshara_hf.convert import akshara_to_native, nanochat_state_to_akshara

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


def run_one(args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    shape = SHAPES[args.shape]
    torch.manual_seed(0)
    model = build(args.impl, shape, args.attn, dtype, device)
    if args.checkpointing:
        model.gradient_checkpointing_enable()
    optimizers = optimizer_for(model)
    idx = torch.randint(0, shape["vocab_size"], (args.batch, args.seq), device=device)

    def step():
        loss = model(input_ids=idx, labels=idx, use_cache=False).loss
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)

    seconds = timed(step, steps=args.steps, warmup=1, device=device)
    return {"tokens_per_s": args.batch * args.seq / seconds, "peak_mb": peak_memory_mb(device), "env": environment(dtype, device)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="cpu", choices=SHAPES)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--attn", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(run_one(args)))
        return

    def measure(impl, attn, checkpointing):
        cmd = [sys.executable, __file__, "--impl", impl, "--attn", attn, "--shape", args.shape, "--steps", str(args.steps),
               "--batch", str(args.batch), "--seq", str(args.seq), "--dtype", args.dtype]
        out = subprocess.run(cmd + (["--checkpointing"] if checkpointing else []), capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows, env = [], None
    for attn in ("eager", "sdpa"):
        for checkpointing in (False, True):
            ref, ours = measure("native", attn, checkpointing), measure("akshara", attn, checkpointing)
            env = ours["env"]
            rows.append({
                "attn": attn, "grad ckpt": "on" if checkpointing else "off",
                "native tok/s": ref["tokens_per_s"], "akshara tok/s": ours["tokens_per_s"],
                "speed ratio": ours["tokens_per_s"] / ref["tokens_per_s"],
                "native peak MB": ref["peak_mb"], "akshara peak MB": ours["peak_mb"],
                "memory ratio": ours["peak_mb"] / ref["peak_mb"],
            })
    title = f"training step, shape {args.shape}, batch {args.batch} x seq {args.seq}, {args.steps} timed steps (median)"
    print_table(title, env, rows, list(rows[0]))
    sdpa, eager = rows[2]["akshara tok/s"], rows[0]["akshara tok/s"]
    print(f"akshara sdpa/eager speed ratio: {sdpa / eager:.3f}")


if __name__ == "__main__":
    main()
