"""Muon split by matrix across processes (`akshara_hf.training.muon_sharding`, `MuonAdamW`): the pieces that need no
second process. The 2-process runs (gloo) are in tests/test_trainer.py."""

import pytest
import torch

from akshara_hf.errors import AksharaError
from akshara_hf.training import optim as optim_module
from akshara_hf.training.muon_sharding import assign_owners
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
