"""Muon split by matrix across processes (`akshara_hf.training.muon_sharding`, `MuonAdamW`): the pieces that need no
second process, and MuonAdamW on FSDP2's sharded parameters (tests/fsdp_optim_script.py, one process here, three in
the slow test). The Trainer's 2-process runs (DDP and FSDP2, gloo) are in tests/test_trainer.py."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from akshara_hf.errors import AksharaError
from akshara_hf.training import optim as optim_module
from akshara_hf.training.muon_sharding import assign_owners, shard_rows
from akshara_hf.training.optim import MuonAdamW
from dist_train_script import tiny_model


def test_owners_balance_the_orthogonalisation_cost():
    shapes = [torch.Size(s) for s in [(1280, 1280)] * 80 + [(5120, 1280)] * 20 + [(1280, 5120)] * 20 + [(10, 12)] * 10]
    for world in (2, 3, 8):
        owners = assign_owners(shapes, world)
        assert owners == assign_owners(shapes, world)  # every rank computes the same
        loads = [sum(s[0] * s[1] * min(s) for s, o in zip(shapes, owners) if o == r) for r in range(world)]
        assert max(loads) / min(loads) < 1.1, (world, loads)
    assert assign_owners(shapes[:3], 8)[:3] == [0, 1, 2]  # fewer matrices than ranks: one each, the rest idle


@pytest.mark.parametrize("generation", ["late-2025", "2026"])
def test_rank_0_of_2_steps_and_keeps_only_its_matrices(monkeypatch, generation):
    """As rank 0 of 2 (the process group and the broadcast stood in for): only rank 0's matrices move and get state;
    the other matrices are left for their owner (whose broadcast would overwrite them); a full state loaded back keeps
    rank 0's share; state_dict() before the collective consolidation is refused rather than partial."""
    monkeypatch.setattr(optim_module, "data_parallel_rank", lambda: (0, 2))
    monkeypatch.setattr(optim_module, "broadcast_from_owners", lambda params, owners: [])
    model = tiny_model(generation=generation)
    full = MuonAdamW.from_model(model, shard=False)
    optimizer = MuonAdamW.from_model(model)
    assert optimizer.state_dict()["muon"]["state"] == {}  # no step yet: nothing anywhere (Accelerate asks then)
    matrices = optimizer.muon.param_groups[0]["params"]
    owners = assign_owners([p.shape for p in matrices], 2)
    before = [p.detach().clone() for p in matrices]
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    grads = [p.grad for p in matrices]
    optimizer.step()
    assert all(p.grad is g for p, g in zip(matrices, grads))  # every gradient given back
    for param, old, owner in zip(matrices, before, owners):
        assert (param in optimizer.muon.state) == (owner == 0)
        assert torch.equal(param.detach(), old) == (owner != 0)
    with pytest.raises(AksharaError, match="call consolidate_state_dict\\(\\) on every process first"):
        optimizer.state_dict()

    full.step()  # the unsharded optimizer's whole state, as a checkpoint holds it
    optimizer.load_state_dict(full.state_dict())
    assert [p in optimizer.muon.state for p in matrices] == [owner == 0 for owner in owners]
    with pytest.raises(AksharaError, match="consolidate_state_dict"):
        optimizer.state_dict()


def test_a_state_for_other_parameters_is_one_line():
    optimizer = MuonAdamW.from_model(tiny_model())
    other = MuonAdamW.from_model(tiny_model(generation="2026"), muon="late-2025")
    with pytest.raises(AksharaError, match="MuonAdamW state: its 'muon' part does not fit this optimizer"):
        optimizer.load_state_dict(other.state_dict())


REPO = Path(__file__).resolve().parents[1]


def test_shard_rows_are_torch_chunks():
    """FSDP2 and DTensor split rows as torch.chunk does (uneven, last ranks short or empty)."""
    for rows in (1, 2, 5, 63, 64, 65, 256):
        for world in (1, 2, 3, 4, 8):
            chunks = [len(chunk) for chunk in torch.arange(rows).chunk(world)]
            sizes = [stop - start for start, stop in shard_rows(rows, world)]
            assert sizes == chunks + [0] * (world - len(chunks)), (rows, world)
            assert shard_rows(rows, world)[0][0] == 0 and shard_rows(rows, world)[-1][1] == rows


def fsdp_optim(tmp_path, processes: int, *options: str) -> dict:
    """tests/fsdp_optim_script.py on `processes` gloo processes (torchrun; plain python for one): rank 0's result."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "fsdp_optim.json"
    script = [str(REPO / "tests" / "fsdp_optim_script.py"), "--out", str(out), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    if processes == 1:
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        command = [sys.executable, *script]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_addr", "127.0.0.1", "--master_port", str(port), *script]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return json.loads(out.read_text())


def assert_exact(result: dict, processes: int) -> None:
    assert result["weights"] == [] and result["state"] == [] and result["saved_state"] == [], result
    assert result["resumed"] == [] and result["adamw_state_sharded"], result
    by_rank = result["muon_states_by_rank"]
    assert len(by_rank) == processes and [sum(column) for column in zip(*by_rank)] == [1] * len(by_rank[0]), by_rank
    assert all(any(row) for row in by_rank), by_rank  # every rank owns some matrices


def test_fsdp2_sharded_parameters_step_as_whole_ones_and_other_layouts_are_refused(tmp_path):
    """On a 1-process mesh (`fully_shard`: every weight a DTensor): MuonAdamW's steps, state dict and resume are
    bit-identical to the same optimizer on the whole model; tensor parallelism's placements (Shard(1), Replicate)
    and a mix of sharded and whole matrices are one line each."""
    result = fsdp_optim(tmp_path, 1, "--generation", "2026", "--refusals")
    assert_exact(result, 1)
    assert result["muon_class"] == "PolarExpressMuon"
    shard1, replicate, mixed = result["refusals"]
    assert shard1.startswith("Muon got a matrix sharded as (Shard(dim=1),) on a 1-D mesh; it takes whole matrices")
    assert "tensor parallelism and hybrid sharding are not supported" in shard1
    assert replicate.startswith("Muon got a matrix sharded as (Replicate(),) on a 1-D mesh")
    assert mixed.startswith("Muon got sharded and whole matrices together")


@pytest.mark.slow
@pytest.mark.parametrize("generation", ["late-2025", "2026"])
def test_fsdp2_on_three_processes_is_bit_identical_to_one(tmp_path, generation):
    """3 gloo processes: uneven row blocks (64 rows as 22/22/20, nanochat 2026's 2-row ve_gate as 1/1/0: a rank with
    an empty shard). Each owner steps whole matrices, so weights, the consolidated state and a resumed step equal the
    unsharded optimizer's bit for bit; each Muon matrix's state lives on one rank only."""
    result = fsdp_optim(tmp_path, 3, "--generation", generation)
    assert_exact(result, 3)
    assert result["muon_class"] == ("PolarExpressMuon" if generation == "2026" else "Muon")
