"""Optimizer cost: `torch.optim.Muon` on the block matrices vs AdamW on the same matrices (reference), the embedding
and head AdamW step, and the total optimizer time as a fraction of a full training step at the same shape.

Usage: python bench/bench_optimizer.py [--shape cpu|d20] [--steps N] [--batch B] [--seq T]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from bench_train_step import build  # noqa: E402
from common import SHAPES, environment, print_table, step_parser, timed  # noqa: E402

from akshara_hf.training.optim import MuonAdamW, split_parameters  # noqa: E402


def main():
    parser = step_parser(steps=5)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    model = build("akshara", SHAPES[args.shape], "sdpa", dtype, device)
    for param in model.parameters():
        param.grad = torch.randn_like(param) * 1e-3
    groups = split_parameters(model)
    matrices = [p for _, p in groups["muon"]]
    others = [p for name in ("embedding", "unembedding", "other") for _, p in groups[name]]

    muon = torch.optim.Muon(matrices, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, adjust_lr_fn="original")
    adamw_matrices = torch.optim.AdamW(matrices, lr=0.02, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    adamw_rest = torch.optim.AdamW(others, lr=0.004, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    combined = MuonAdamW.from_model(model, matrix_lr=0.02, embedding_lr=0.2, unembedding_lr=0.004, init_lr_frac=1.0)
    t_muon = timed(muon.step, args.steps, 1, device)
    t_adamw = timed(adamw_matrices.step, args.steps, 1, device)
    t_rest = timed(adamw_rest.step, args.steps, 1, device)
    t_combined = timed(combined.step, args.steps, 1, device)

    idx = torch.randint(0, SHAPES[args.shape]["vocab_size"], (args.batch, args.seq), device=device)

    def step():
        model(input_ids=idx, labels=idx, use_cache=False).loss.backward()
        combined.step()
        combined.zero_grad(set_to_none=False)

    t_step = timed(step, args.steps, 1, device)
    n_matrices = sum(p.numel() for p in matrices)
    rows = [
        {"what": f"block matrices ({len(matrices)}, {n_matrices / 1e6:.1f}M params)", "reference": "AdamW",
         "ref ms": 1e3 * t_adamw, "ours": "Muon (bf16 Newton-Schulz)", "ours ms": 1e3 * t_muon, "ratio": t_muon / t_adamw},
        {"what": "embedding + head", "reference": "", "ref ms": "", "ours": "AdamW", "ours ms": 1e3 * t_rest, "ratio": ""},
        {"what": f"full step, batch {args.batch} x seq {args.seq}", "reference": "forward+backward+optimizer",
         "ref ms": 1e3 * t_step, "ours": "MuonAdamW.step", "ours ms": 1e3 * t_combined,
         "ratio": t_combined / t_step},
    ]
    print_table(f"optimizer, shape {args.shape} (median of {args.steps})", environment(dtype, device), rows, list(rows[0]))
    print(f"optimizer fraction of the training step: {t_combined / t_step:.3f}")


if __name__ == "__main__":
    main()
