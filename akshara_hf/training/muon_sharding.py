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

Under FSDP2 (`fully_shard`) every matrix is a `Shard(0)` DTensor: each rank holds a block of rows of the weight and
of its gradient, and orthogonalising that block is not Muon's update of the matrix. There each owner receives the
whole gradient and weight of its matrices (one `all_to_all` each, every rank sending its row blocks to their owners),
runs the same optimizer on them as one process would, and sends the updated rows back (a third `all_to_all`). The
owner keeps its matrices' Muon state whole, as under DDP. torch's FSDP2 has no such hook (its optimizers step each
rank's shard, right only for elementwise rules such as AdamW), hence `gather_to_owners` / `scatter_from_owners`.
"""

import contextlib

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard

from akshara_hf.errors import AksharaError


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
    state: dict, params: list[torch.Tensor], owners: list[int], rank: int, template, group=None
) -> dict:
    """Every matrix's optimizer state on every rank (a collective: all ranks must call it).

    `state` is this rank's optimizer state (by parameter); `template(param)` gives the state's tensors' shapes by key
    (zeros of the parameter's dtype and device are allocated to receive them). A matrix whose owner has no state yet
    (no step taken) has none in the result either. `group`: the process group whose ranks `owners` and `rank` count
    (None: the default group)."""
    present = torch.zeros(len(params), dtype=torch.int32, device=params[0].device)
    for index, (param, owner) in enumerate(zip(params, owners)):
        if owner == rank and state.get(param):
            present[index] = 1
    dist.all_reduce(present, group=group)
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
                handles.append(dist.broadcast(value, group=group, group_src=owner, async_op=True))
    for handle in handles:
        handle.wait()
    return gathered


def fully_sharded_mesh(params: list[torch.Tensor]):
    """The device mesh of FSDP2's sharding when the matrices are DTensors, None when none is.

    Only FSDP2's layout is taken: every matrix a DTensor split by rows (`Shard(0)`) over one 1-D mesh. Other
    placements (tensor parallelism's column or replicated weights, a 2-D hybrid mesh) or a mix of plain and sharded
    matrices are refused in one line: the gather below would not rebuild the matrix from them."""
    sharded = [param for param in params if isinstance(param, DTensor)]
    if not sharded:
        return None
    mesh = sharded[0].device_mesh
    for param in params:
        if not isinstance(param, DTensor) or param.device_mesh != mesh or mesh.ndim != 1 or tuple(
                param.placements) != (Shard(0),):  # fmt: skip
            found = (f"a matrix sharded as {tuple(param.placements)} on a {param.device_mesh.ndim}-D mesh"
                     if isinstance(param, DTensor) else "sharded and whole matrices together")  # fmt: skip
            raise AksharaError(
                f"Muon got {found}; it takes whole matrices (one process, DDP) or FSDP2's "
                "(every matrix split by rows, Shard(0), over one 1-D mesh): tensor parallelism and hybrid sharding "
                "are not supported"
            )
    return mesh


def shard_rows(rows: int, world: int) -> list[tuple[int, int]]:
    """The row range [start, stop) each rank holds of a matrix with `rows` rows split `Shard(0)` over `world` ranks
    (`torch.chunk`'s split, as DTensor and FSDP2 make it: ceil(rows / world) each, the last ones shorter or empty)."""
    size = -(-rows // world)
    return [(min(r * size, rows), min((r + 1) * size, rows)) for r in range(world)]


def _check_shards(locals_: list[torch.Tensor | None], shapes: list[torch.Size], rank: int, world: int) -> None:
    for local, shape in zip(locals_, shapes):
        if local is None:
            continue
        start, stop = shard_rows(shape[0], world)[rank]
        if tuple(local.shape) != (stop - start, *shape[1:]):
            raise AksharaError(f"a Muon matrix of shape {tuple(shape)} has a local shard of {tuple(local.shape)} on "
                               f"rank {rank} of {world}, not rows {start}:{stop} (not FSDP2's even row split)")


def _all_to_all(pieces: list[list[torch.Tensor]], received: list[int], like: torch.Tensor, group) -> list[torch.Tensor]:
    """Send `pieces[d]` (flattened, concatenated) to rank d; return what each rank sent here, as flat tensors of
    `received[s]` elements."""
    sends = [piece.reshape(-1) for dest in pieces for piece in dest]
    send = torch.cat(sends) if sends else like.new_empty(0)
    out = like.new_empty(sum(received))
    dist.all_to_all_single(out, send, received, [sum(piece.numel() for piece in dest) for dest in pieces], group=group)
    return list(out.split(received))


def gather_to_owners(
    locals_: list[torch.Tensor | None], shapes: list[torch.Size], owners: list[int], rank: int, world: int, group
) -> dict[int, torch.Tensor]:
    """The whole matrices this rank owns, from every rank's row block (`locals_[i]`: this rank's rows of matrix i, or
    None for a matrix to leave out, the same on every rank). A collective: one `all_to_all` per dtype. Returns
    {index: matrix} for the owned matrices."""
    _check_shards(locals_, shapes, rank, world)
    full = {}
    for dtype in sorted({t.dtype for t in locals_ if t is not None}, key=str):
        chosen = [i for i, t in enumerate(locals_) if t is not None and t.dtype == dtype]
        mine = [i for i in chosen if owners[i] == rank]
        pieces = [[locals_[i] for i in chosen if owners[i] == dest] for dest in range(world)]
        rows = {i: shard_rows(shapes[i][0], world) for i in mine}
        sizes = [[(rows[i][src][1] - rows[i][src][0]) * shapes[i][1] for i in mine] for src in range(world)]
        like = next(locals_[i] for i in chosen)
        flat = _all_to_all(pieces, [sum(s) for s in sizes], like, group)
        blocks = {i: [] for i in mine}
        for src in range(world):
            for i, block in zip(mine, flat[src].split(sizes[src])):
                blocks[i].append(block.view(-1, shapes[i][1]))
        full.update({i: torch.cat(blocks[i]) for i in mine})
    return full


def scatter_from_owners(
    full: dict[int, torch.Tensor], locals_: list[torch.Tensor | None], shapes: list[torch.Size], owners: list[int],
    rank: int, world: int, group,
) -> None:
    """The inverse of `gather_to_owners`: each owner sends every rank its rows of the matrices in `full`, which are
    copied into `locals_` in place. A collective: one `all_to_all` per dtype."""
    for dtype in sorted({t.dtype for t in locals_ if t is not None}, key=str):
        chosen = [i for i, t in enumerate(locals_) if t is not None and t.dtype == dtype]
        mine = [i for i in chosen if owners[i] == rank]
        rows = {i: shard_rows(shapes[i][0], world) for i in chosen}
        pieces = [[full[i][slice(*rows[i][dest])].to(dtype) for i in mine] for dest in range(world)]
        sizes = [[(rows[i][rank][1] - rows[i][rank][0]) * shapes[i][1] for i in chosen if owners[i] == src]
                 for src in range(world)]  # fmt: skip
        flat = _all_to_all(pieces, [sum(s) for s in sizes], locals_[chosen[0]], group)
        for src in range(world):
            theirs = [i for i in chosen if owners[i] == src]
            for i, block in zip(theirs, flat[src].split(sizes[src])):
                locals_[i].copy_(block.view_as(locals_[i]))


@contextlib.contextmanager
def stand_ins(optimizer: torch.optim.Optimizer, replacements: dict):
    """Step `optimizer` on other tensors: each parameter in `replacements` is replaced in its group by its stand-in
    (with the stand-in's gradient), and its state moves along; the others leave the groups for the while. Afterwards
    the groups are as before and the state, updated, is the parameters' again."""
    groups = [group["params"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["params"] = [replacements[p] for p in group["params"] if p in replacements]
    for param, stand_in in replacements.items():
        if param in optimizer.state:
            optimizer.state[stand_in] = optimizer.state.pop(param)
    try:
        yield
    finally:
        for group, params in zip(optimizer.param_groups, groups):
            group["params"] = params
        for param, stand_in in replacements.items():
            if stand_in in optimizer.state:
                optimizer.state[param] = optimizer.state.pop(stand_in)


__all__ = [
    "data_parallel_rank", "assign_owners", "only_owned_gradients", "broadcast_from_owners", "gather_states",
    "fully_sharded_mesh", "shard_rows", "gather_to_owners", "scatter_from_owners", "stand_ins",
]
