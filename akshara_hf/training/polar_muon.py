"""nanochat 2026's Muon: Polar Express orthogonalisation, row equilibration, Frobenius rescale, a NorMuon second moment
and cautious weight decay, as one `torch.optim.Optimizer` over 2-D parameters.

Written here because `torch.optim.Muon` (which late-2025 models keep) has none of these pieces: it runs Keller
Jordan's fixed quintic Newton-Schulz in bf16 on the raw momentum and applies the result as is. What each step does,
per matrix W (m x n) with gradient G, is in `docs/nanochat-2026.md` ("Optimizer"); the functions below are its steps,
so tests can check each against the numbers nanochat's own optimizer gives (`tests/data/make_nanochat2026_optim_reference.py`).
"""

import math

import torch

# Polar Express (Amsel, Persson, Musco, Gower, 2025, arXiv:2505.16932): one (a, b, c) per iteration, the quintic
# X <- a X + b (X X^T) X + c (X X^T)^2 X. These are the paper's coefficients for 5 iterations with a 2e-2 safety
# factor and cushion 2, the ones nanochat 2026 uses.
POLAR_EXPRESS_COEFFICIENTS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
ORTHOGONALIZE_DTYPES = {"auto": None, "bfloat16": torch.bfloat16, "float32": torch.float32}


def nesterov(grad: torch.Tensor, buffer: torch.Tensor, momentum: float) -> torch.Tensor:
    """Update the momentum buffer in place (an EMA of the gradients) and return the Nesterov look-ahead
    `grad + momentum * (buffer - grad)`. `grad` is left as it is."""
    buffer.lerp_(grad, 1 - momentum)
    return grad.lerp(buffer, momentum)


def polar_express(update: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with the singular vectors of `update` (the last two dimensions).

    Rows are first equilibrated (each scaled to the mean row norm, MuonEq: a better conditioned spectrum), then the
    whole divided by 1.01 x its Frobenius norm so every singular value is below 1, then `steps` Polar Express
    iterations run on the smaller Gram matrix, in `dtype` (nanochat: bf16 on GPUs, fp32 elsewhere). Returned in `dtype`.
    """
    x = update.to(dtype) if dtype is not None else update
    x32 = x.float()
    mean_row_norm = x32.norm(dim=(-2, -1), keepdim=True) / math.sqrt(x.size(-2))
    row_norms = x32.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    x = x * (mean_row_norm / row_norms).to(x.dtype)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-6)
    tall = x.size(-2) > x.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFICIENTS[:steps]:
        if tall:  # the n x n Gram matrix, multiplied from the right
            gram = x.mT @ x
            x = a * x + x @ (b * gram + c * (gram @ gram))
        else:
            gram = x @ x.mT
            x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x


def rescale_frobenius(update: torch.Tensor) -> torch.Tensor:
    """Scale to Frobenius norm sqrt(min(m, n)), an exactly semi-orthogonal matrix's (Muon+): corrects the polar
    iteration's under-convergence."""
    target = math.sqrt(min(update.size(-2), update.size(-1)))
    norm = update.float().norm(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return update * (target / norm).to(update.dtype)


def second_moment_dim(shape: torch.Size) -> int:
    """The dimension NorMuon averages over: columns (-1, one value per row) for square and tall matrices, rows (-2)
    for wide ones."""
    return -1 if shape[-2] >= shape[-1] else -2


def normalize_second_moment(update: torch.Tensor, second_moment: torch.Tensor, beta2: float) -> torch.Tensor:
    """NorMuon (arXiv:2510.05491): divide each row (or column, `second_moment_dim`) by the root of an EMA of its mean
    squared update, then restore the update's Frobenius norm. Updates `second_moment` (m x 1 or 1 x n) in place."""
    dim = second_moment_dim(update.shape)
    size = update.size(dim)
    mean_square = update.float().square().mean(dim=dim, keepdim=True)
    norm = (mean_square.sum(dim=(-2, -1), keepdim=True) * size).sqrt()
    second_moment.lerp_(mean_square.to(second_moment.dtype), 1 - beta2)
    scale = second_moment.clamp_min(1e-10).rsqrt()
    new_norm = (mean_square * size * scale.float().square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    return update * (scale * (norm / new_norm.clamp_min(1e-10))).to(update.dtype)


def cautious_step_(param: torch.Tensor, update: torch.Tensor, lr: float, weight_decay: float) -> None:
    """`param -= lr * update + lr * weight_decay * param`, the decay only where update and param agree in sign
    (cautious weight decay: decay never pushes against the update)."""
    agree = (update * param) >= 0
    param.sub_(lr * update + lr * weight_decay * param * agree)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto": bf16 on a CUDA device that has it (nanochat's compute dtype on Ampere and later), else fp32."""
    if name not in ORTHOGONALIZE_DTYPES:
        raise ValueError(f"orthogonalize_dtype must be one of {list(ORTHOGONALIZE_DTYPES)}, got {name!r}")
    if name != "auto":
        return ORTHOGONALIZE_DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class PolarExpressMuon(torch.optim.Optimizer):
    """nanochat 2026's Muon for 2-D parameters. Per step and matrix W (m x n), gradient G:

    1. Nesterov momentum (`momentum`, EMA form): M <- lerp(M, G, 1 - momentum); U = lerp(G, M, momentum).
    2. `polar_express`: row equilibration, Frobenius normalisation, `ns_steps` Polar Express iterations in
       `orthogonalize_dtype` ("auto": bf16 on CUDA, fp32 elsewhere, as nanochat's compute dtype).
    3. `rescale_frobenius` to sqrt(min(m, n)).
    4. `normalize_second_moment` with `beta2` (state: one value per row, or per column for wide matrices).
    5. `cautious_step_` at `lr * sqrt(max(1, m / n))` with `weight_decay`.

    State per parameter: "momentum_buffer" (m x n) and "second_momentum_buffer" (m x 1, or 1 x n when m < n), both
    in the parameter's dtype. nanochat keeps the same numbers stacked per shape: see `MuonAdamW` for the mapping.
    A parameter whose `grad` is None is skipped (no state is created for it), as in torch's optimizers.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        beta2: float = 0.9,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        orthogonalize_dtype: str = "auto",
    ):
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0 <= momentum < 1 or not 0 <= beta2 < 1:
            raise ValueError(f"momentum and beta2 must be in [0, 1), got {momentum} and {beta2}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 1 <= ns_steps <= len(POLAR_EXPRESS_COEFFICIENTS):
            raise ValueError(f"ns_steps must be in [1, {len(POLAR_EXPRESS_COEFFICIENTS)}], got {ns_steps}")
        resolve_dtype(orthogonalize_dtype, torch.device("cpu"))  # validates the name
        defaults = {"lr": lr, "momentum": momentum, "beta2": beta2, "weight_decay": weight_decay,
                    "ns_steps": ns_steps, "orthogonalize_dtype": orthogonalize_dtype}  # fmt: skip
        super().__init__(params, defaults)
        for group in self.param_groups:
            for param in group["params"]:
                if param.ndim != 2:
                    raise ValueError(f"PolarExpressMuon takes 2-D parameters only, got shape {tuple(param.shape)}")

    @staticmethod
    def state_shapes(param: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """The shape of each state tensor of `param` (all in its dtype)."""
        rows, cols = param.shape
        moment_shape = (rows, 1) if second_moment_dim(param.shape) == -1 else (1, cols)
        return {"momentum_buffer": (rows, cols), "second_momentum_buffer": moment_shape}

    def init_state(self, param: torch.Tensor) -> dict:
        state = self.state[param]
        if not state:
            for key, shape in self.state_shapes(param).items():
                state[key] = torch.zeros(shape, dtype=param.dtype, device=param.device)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.init_state(param)
                update = nesterov(param.grad, state["momentum_buffer"], group["momentum"])
                dtype = resolve_dtype(group["orthogonalize_dtype"], param.device)
                update = polar_express(update, group["ns_steps"], dtype).to(param.dtype)
                update = rescale_frobenius(update)
                update = normalize_second_moment(update, state["second_momentum_buffer"], group["beta2"])
                rows, cols = param.shape
                lr = group["lr"] * math.sqrt(max(1.0, rows / cols))
                cautious_step_(param, update, lr, group["weight_decay"])
        return loss


__all__ = ["PolarExpressMuon", "POLAR_EXPRESS_COEFFICIENTS", "polar_express", "nesterov", "rescale_frobenius",
           "normalize_second_moment", "cautious_step_"]
