"""MuonAdamW on FSDP2's sharded parameters against the same optimizer on whole ones, for tests/test_muon_sharding.py.

Run with `torchrun --nproc_per_node N tests/fsdp_optim_script.py --out RESULT.json --generation late-2025|2026` (gloo
on CPU; N = 1 also works with plain `python` and torchrun's environment variables set). Every rank builds the tiny
model twice: one copy sharded with `fully_shard` (blocks, then the root) over a CPU mesh of N, one whole. Each step's
gradients are computed once on the whole copy and given to the sharded one as its shards, so the two optimizers see
the same numbers and their results must be bit-identical. Rank 0 writes what differs (nothing, if exact), which rank
holds each Muon matrix's state, and a resume check: a fresh sharded copy of the step-2 weights loading the step-2
state dict must take step 3 exactly as the run that went on. `--refusals` also tries layouts MuonAdamW refuses.
"""

import argparse
import copy
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from akshara_hf.errors import AksharaError
from akshara_hf.training.optim import MuonAdamW
from dist_train_script import tiny_model


def shard(model, mesh):
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def give_gradients(sharded, whole) -> None:
    for param, reference in zip(sharded.parameters(), whole.parameters()):
        param.grad = distribute_tensor(reference.grad, param.device_mesh, param.placements, src_data_rank=None)


def differences(sharded, whole) -> list[str]:
    return [name for (name, param), (_, reference) in zip(sharded.named_parameters(), whole.named_parameters())
            if not torch.equal(param.full_tensor(), reference)]  # fmt: skip


def state_differences(state: dict, reference: dict) -> list[str]:
    found = []
    for part in ("muon", "adamw"):
        if state[part]["state"].keys() != reference[part]["state"].keys():
            found.append(f"{part}: tensors {sorted(state[part]['state'])} vs {sorted(reference[part]['state'])}")
        for index, entry in reference[part]["state"].items():
            for key, value in entry.items():
                mine = state[part]["state"].get(index, {}).get(key)
                if not isinstance(mine, torch.Tensor) or isinstance(mine, DTensor) or not torch.equal(mine, value):
                    found.append(f"{part}/{index}/{key}")
    return found


def compare(generation: str, mesh, rank: int) -> dict:
    whole = tiny_model(generation=generation)
    sharded = shard(copy.deepcopy(whole), mesh)
    optimizer = MuonAdamW.from_model(sharded)
    reference = MuonAdamW.from_model(whole, shard=False)
    generator = torch.Generator().manual_seed(0)
    saved = None
    for step in range(3):
        if step == 2:  # the state a checkpoint of step 2 holds, and the weights it would resume from
            optimizer.consolidate_state_dict()
            saved = copy.deepcopy((optimizer.state_dict(), whole, reference.state_dict()))
            optimizer.release_consolidated_state()
        ids = torch.randint(0, 500, (4, 16), generator=generator)
        whole(input_ids=ids, labels=ids).loss.backward()
        give_gradients(sharded, whole)
        optimizer.step()
        reference.step()
        if step == 2:
            last = {p: p.grad.clone() for p in whole.parameters()}
        optimizer.zero_grad()
        reference.zero_grad()
    holders = torch.zeros(mesh.size(), len(optimizer._muon_params()), dtype=torch.int32)
    holders[rank] = torch.tensor([int(p in optimizer.muon.state) for p in optimizer._muon_params()])
    dist.all_reduce(holders)
    optimizer.consolidate_state_dict()
    result = {
        "weights": differences(sharded, whole),
        "state": state_differences(optimizer.state_dict(), reference.state_dict()),
        "muon_states_by_rank": holders.tolist(),
        "muon_class": type(optimizer.muon).__name__,
    }
    # Resume: the step-2 weights sharded afresh, the step-2 state loaded, step 3's gradients.
    state, weights, reference_state = saved
    result["saved_state"] = state_differences(state, reference_state)
    resumed_model = shard(copy.deepcopy(weights), mesh)
    resumed = MuonAdamW.from_model(resumed_model)
    resumed.load_state_dict(state)
    adamw_states = [v for entry in resumed.adamw.state.values() for k, v in entry.items() if k != "step"]
    result["adamw_state_sharded"] = bool(adamw_states) and all(isinstance(v, DTensor) for v in adamw_states)
    for param, original in zip(weights.parameters(), whole.parameters()):
        param.grad = last[original]
    give_gradients(resumed_model, weights)
    resumed.step()
    result["resumed"] = differences(resumed_model, whole)
    return result


def refusals(mesh) -> list[str]:
    """Layouts that are not FSDP2's: one line each."""
    messages = []
    for placements in ([Shard(1)], [Replicate()], None):
        model = tiny_model()
        matrix = model.transformer.h[0].attn.c_q
        if placements is None:  # one matrix sharded, the others whole
            matrix.weight = torch.nn.Parameter(distribute_tensor(matrix.weight.detach(), mesh, [Shard(0)]))
        else:
            matrix.weight = torch.nn.Parameter(distribute_tensor(matrix.weight.detach(), mesh, placements))
            for block in model.transformer.h:
                for name, param in list(block.named_parameters()):
                    if param is not matrix.weight and not isinstance(param, DTensor):
                        owner, _, leaf = name.rpartition(".")
                        setattr(block.get_submodule(owner), leaf,
                                torch.nn.Parameter(distribute_tensor(param.detach(), mesh, [Shard(0)])))  # fmt: skip
        try:
            MuonAdamW.from_model(model)
            messages.append("accepted")
        except AksharaError as error:
            messages.append(str(error))
    return messages


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--generation", default="late-2025", choices=["late-2025", "2026"])
    parser.add_argument("--refusals", action="store_true")
    options = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    result = compare(options.generation, mesh, rank)
    if options.refusals:
        result["refusals"] = refusals(mesh)
    if rank == 0:
        with open(options.out, "w") as file:
            json.dump(result, file)
    sys.stdout.flush()
    os._exit(0)  # skip gloo's teardown, which can abort at exit (see dist_train_script.py)


if __name__ == "__main__":
    main()
