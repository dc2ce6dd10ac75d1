"""Muon across data-parallel processes: each matrix has one owner rank, which alone orthogonalises it and keeps its
momentum; the others receive the updated matrix.

Under DDP every rank holds the same averaged gradients after backward, so running Muon on every rank repeats the same
work W times (the orthogonalisation is most of an optimizer step's cost, and its state is a full copy of every block
matrix). Here the work and the state are split by matrix, as nanochat 2026 splits them: the result per matrix is
computed by the same code on the same numbers, so it equals the single-process step exactly. Neither torch's
`Muon` nor DDP offers this (torch's `ZeroRedundancyOptimizer` shards by parameter too, but steps a single wrapped
optimizer class on flat buckets and has no place for our Muon + AdamW pair), hence these few functions.

Communication is one broadcast per matrix from its owner (asynchronous, all in flight together); the AdamW part runs
replicated on every rank meanwhile (its tensors are embeddings and scalars, cheap to update).
"""

import contextlib

import torch
import torch.distributed as dist


def data_parallel_rank() -> tuple[int, int] | None:
    """(rank, world size) of the default process group when there are several processes, else None."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    return (dist.get_rank(), world) if world > 1 else None


def assign_owners(shapes: list[torch.Size], world_size: int) -> list[int]:
    """The rank that orthogonalises each matrix: longest first, each to the least loaded rank, where a matrix's load is
    its orthogonalisation's cost m * n * min(m, n). Deterministic (ties go to the lower index and rank), so every rank
    computes the same assignment."""
    costs = [shape[0] * shape[1] * min(shape[0], shape[1]) for shape in shapes]
    loads = [0] * world_size
    owners = [0] * len(shapes)
    for index in sorted(range(len(shapes)), key=lambda i: (-costs[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owners[index] = rank
        loads[rank] += costs[index]
    return owners


@contextlib.contextmanager
def only_owned_gradients(params: list[torch.Tensor], owners: list[int], rank: int):
    """Hide the gradients of the matrices another rank owns (`grad = None`: torch's optimizers, ours included, skip
    such parameters and create no state for them), and give them back afterwards."""
    hidden = [(param, param.grad) for param, owner in zip(params, owners) if owner != rank]
    for param, _ in hidden:
        param.grad = None
    try:
        yield
    finally:
        for param, grad in hidden:
            param.grad = grad


def broadcast_from_owners(params: list[torch.Tensor], owners: list[int]):
    """Start sending each matrix from its owner to every rank (in place); returns the handles to wait on."""
    return [dist.broadcast(param.detach(), src=owner, async_op=True) for param, owner in zip(params, owners)]


def gather_states(
    state: dict, params: list[torch.Tensor], owners: list[int], rank: int, template
) -> dict:
    """Every matrix's optimizer state on every rank (a collective: all ranks must call it).

    `state` is this rank's optimizer state (by parameter); `template(param)` gives the state's tensors' shapes by key
    (zeros of the parameter's dtype and device are allocated to receive them). A matrix whose owner has no state yet
    (no step taken) has none in the result either."""
    present = torch.zeros(len(params), dtype=torch.int32, device=params[0].device)
    for index, (param, owner) in enumerate(zip(params, owners)):
        if owner == rank and state.get(param):
            present[index] = 1
    dist.all_reduce(present)
    gathered, handles = {}, []
    for index, (param, owner) in enumerate(zip(params, owners)):
        if not present[index]:
            continue
        if owner == rank:
            gathered[param] = dict(state[param])
        else:
            gathered[param] = {key: torch.zeros(shape, dtype=param.dtype, device=param.device)
                               for key, shape in template(param).items()}  # fmt: skip
        for key in sorted(gathered[param]):
            value = gathered[param][key]
            if isinstance(value, torch.Tensor):
                handles.append(dist.broadcast(value, src=owner, async_op=True))
    for handle in handles:
        handle.wait()
    return gathered


__all__ = ["data_parallel_rank", "assign_owners", "only_owned_gradients", "broadcast_from_owners", "gather_states"]
