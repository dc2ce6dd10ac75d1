"""nanochat 2026's optimizer state through convert-nanochat (`nanochat_optimizer.tensors`) and SFT's warm start."""

import json
import sys
from pathlib import Path

import pytest
import torch
from model_fixtures import random_nanochat_optimizer, save_nanochat_optimizer, shard_nanochat_optimizer
from nanochat_fixtures import make_nanochat_tokenizer_dir
from reference_nanochat import random_nanochat_state
from safetensors import safe_open

from akshara_hf.conversion.convert import convert_nanochat, nanochat_key_to_ours
from akshara_hf.conversion.optimizer_state import (
    OPTIMIZER_FILE,
    OPTIMIZER_LAYOUT,
    nanochat_optimizer_groups,
    read_optimizer_state,
)
from akshara_hf.errors import AksharaError
from akshara_hf.loading import load_model
from akshara_hf.training.optim import MuonAdamW
from akshara_hf.training.warm_start import warm_start_optimizer

REFERENCE = Path(__file__).parent / "data" / "nanochat2026_optimizer_state_reference.safetensors"
with safe_open(str(REFERENCE), framework="pt") as _file:
    META = json.loads(_file.metadata()["settings"])
    REF = {key: _file.get_tensor(key) for key in _file.keys()}
MODEL, STEP = META["model_config"], META["step"]
VOCAB_TABLES = ("transformer.wte.weight", "lm_head.weight", "transformer.value_embeds.1.weight")


def nanochat_file() -> dict:
    """nanochat's own saved state (`optim_*_rank0.pt`), rebuilt from the reference."""
    state = {}
    for key, value in REF.items():
        _, index, name = key.split("/")
        state.setdefault(int(index), {})[name] = value.to(getattr(torch, META["dtypes"][f"{index}/{name}"]))
    for key, value in META["values"].items():
        index, name = key.split("/")
        state[int(index)][name] = value
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group for group in META["param_groups"]]
    return {"state": state, "param_groups": groups}


def checkpoint(base: Path, world: int = 1, optimizer: dict | None = None) -> Path:
    """A nanochat base dir with the reference model at step STEP and its optimizer state on `world` ranks."""
    make_nanochat_tokenizer_dir(base / "tokenizer", MODEL["vocab_size"])
    folder = base / "base_checkpoints" / "d2"
    folder.mkdir(parents=True)
    torch.save(random_nanochat_state(MODEL, seed=META["state_seed"], pad_vocab_to=64), folder / f"model_{STEP:06d}.pt")
    (folder / f"meta_{STEP:06d}.json").write_text(json.dumps({"step": STEP, "model_config": MODEL}))
    save_nanochat_optimizer(folder, STEP, nanochat_file() if optimizer is None else optimizer, world)
    return folder


def expected_by_name() -> dict[str, torch.Tensor]:
    """The reference state under our names, from nanochat's own index -> parameter mapping."""
    out = {}
    for group in META["param_groups"]:
        for position, index in enumerate(group["params"]):
            ours = nanochat_key_to_ours(META["names"][index])
            rows = slice(0, MODEL["vocab_size"]) if ours in VOCAB_TABLES else slice(None)
            if group["kind"] == "adamw":
                for key in ("exp_avg", "exp_avg_sq"):
                    out[f"{ours}/{key}"] = REF[f"state/{index}/{key}"][rows].float()
            else:
                first = group["params"][0]
                for key in ("momentum_buffer", "second_momentum_buffer"):
                    out[f"{ours}/{key}"] = REF[f"state/{first}/{key}"][position].float()
    return out


def test_group_order_is_nanochats():
    """The groups derived from the checkpoint alone number the tensors as nanochat's optimizer did (its order, read
    by identity in the reference), whatever the order of the checkpoint's keys."""
    state = random_nanochat_state(MODEL, seed=0, pad_vocab_to=64)
    shapes = {key: tuple(value.shape) for key, value in reversed(state.items())}
    names = [name for _, members in nanochat_optimizer_groups(shapes) for name in members]
    assert names == META["names"]
    kinds = [(kind, len(members)) for kind, members in nanochat_optimizer_groups(shapes)]
    assert kinds == [(group["kind"], len(group["params"])) for group in META["param_groups"]]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_convert_carries_nanochats_state_by_name(tmp_path, world):
    """nanochat's saved state, on 1 process and sharded as on 2 or 4 ranks, arrives under our names, unpadded."""
    out = convert_nanochat(checkpoint(tmp_path / "base", world), tmp_path / "hf")
    assert not list(out.glob("*optim*.safetensors"))  # no name a weight loader would read
    tensors, layout = read_optimizer_state(out)
    expected = expected_by_name()
    assert sorted(tensors) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(tensors[key].float(), value), key
    assert layout["ranks"] == world and len(layout["source"]) == world
    steps = {name: entry["step"] for name, entry in layout["parameters"].items() if entry["optimizer"] == "adamw"}
    assert set(steps.values()) == {STEP} and len(steps) == 8
    assert layout["parameters"]["transformer.wte.weight"]["shape"] == [MODEL["vocab_size"], MODEL["n_embd"]]


def test_warm_start_takes_the_moments_and_keeps_our_learning_rates(tmp_path):
    folder = convert_nanochat(checkpoint(tmp_path / "base"), tmp_path / "hf")
    model = load_model(str(folder))
    optimizer = MuonAdamW.from_model(model, init_lr_frac=0.8, embedding_lr=0.3)
    groups = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    assert warm_start_optimizer(optimizer, folder) == len(list(model.parameters()))
    assert [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups] == groups
    expected = expected_by_name()
    params = dict(model.named_parameters())
    for name, param in params.items():
        part = optimizer.muon if param in optimizer.muon.state else optimizer.adamw
        state = part.state[param]
        keys = ("momentum_buffer", "second_momentum_buffer") if part is optimizer.muon else ("exp_avg", "exp_avg_sq")
        for key in keys:
            assert torch.equal(state[key], expected[f"{name}/{key}"].to(param.dtype)), (name, key)
        if part is optimizer.adamw:
            assert state["step"].item() == STEP
    before = {name: p.detach().clone() for name, p in params.items()}
    for param in params.values():
        param.grad = torch.randn_like(param) * 1e-3
    optimizer.step()  # the warm state steps like any other
    assert all(torch.isfinite(p).all() and not torch.equal(p, before[n]) for n, p in params.items())


def test_trainer_warm_starts_a_fresh_run_only(tmp_path):
    from dist_train_script import conversations, tiny_config
    from transformers import AutoTokenizer

    from akshara_hf.training.trainer import MuonSFTTrainer

    folder = convert_nanochat(checkpoint(tmp_path / "base"), tmp_path / "hf")
    model = load_model(str(folder))
    args = tiny_config(tmp_path / "run", schedule="sft-2026", warm_start_optimizer=True, max_steps=1)
    rows = conversations(8).map(lambda row: {"input_ids": [i % MODEL["vocab_size"] for i in row["input_ids"]]})
    trainer = MuonSFTTrainer(model, args, train_dataset=rows, processing_class=AutoTokenizer.from_pretrained(folder))
    trainer.create_optimizer()
    wte = dict(model.named_parameters())["transformer.wte.weight"]
    expected = expected_by_name()["transformer.wte.weight/exp_avg"]
    assert torch.equal(trainer.optimizer.adamw.state[wte]["exp_avg"], expected)
    trainer.optimizer, trainer.state.global_step = None, 3  # as on resume_from_checkpoint: the checkpoint's state wins
    trainer.create_optimizer()
    assert not trainer.optimizer.adamw.state


def test_under_fsdp_the_trainer_warm_starts_once_accelerate_has_sharded_the_model(tmp_path):
    """Under FSDP2 the Trainer makes the optimizer before Accelerate shards the model and then switches its groups to
    the sharded parameters, leaving behind state keyed by the old ones: the warm start waits for `create_scheduler`,
    which the Trainer calls after that switch (the sharded loading itself is `MuonAdamW.load_state_dict`'s, tested in
    test_muon_sharding.py)."""
    from dist_train_script import conversations, tiny_config
    from transformers import AutoTokenizer

    from akshara_hf.training.trainer import MuonSFTTrainer

    folder = convert_nanochat(checkpoint(tmp_path / "base"), tmp_path / "hf")
    model = load_model(str(folder))
    args = tiny_config(tmp_path / "run", schedule="sft-2026", warm_start_optimizer=True, max_steps=1)
    rows = conversations(8).map(lambda row: {"input_ids": [i % MODEL["vocab_size"] for i in row["input_ids"]]})
    trainer = MuonSFTTrainer(model, args, train_dataset=rows, processing_class=AutoTokenizer.from_pretrained(folder))
    trainer.is_fsdp_enabled = True  # as Accelerate sets it up on GPUs
    trainer.create_optimizer()
    assert not trainer.optimizer.adamw.state and not trainer.optimizer.muon.state
    trainer.create_scheduler(num_training_steps=1)
    wte = dict(model.named_parameters())["transformer.wte.weight"]
    expected = expected_by_name()["transformer.wte.weight/exp_avg"]
    assert torch.equal(trainer.optimizer.adamw.state[wte]["exp_avg"], expected)
    trainer.optimizer.adamw.state[wte]["exp_avg"].zero_()
    trainer.lr_scheduler = None
    trainer.create_scheduler(num_training_steps=1)
    assert not trainer.optimizer.adamw.state[wte]["exp_avg"].any()  # warm-started once only


# ---- bad input ----------------------------------------------------------------------------------------------------


class Code:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def broken(kind: str) -> dict:
    full = nanochat_file()
    if kind == "shape":  # another model's: a wider Muon group
        first = full["param_groups"][-1]["params"][0]
        full["state"][first]["momentum_buffer"] = torch.zeros(2, 128, 64)
    elif kind == "groups":
        full["param_groups"] = full["param_groups"][:-1]
    elif kind == "missing key":
        del full["state"][1]["exp_avg_sq"]
    elif kind == "steps":
        full["state"][3]["step"] = "two"
    return full


@pytest.mark.parametrize(
    "kind, message",
    [
        ("shape", r"the \[128, 32\] Muon group's momentum_buffer is \[2, 128, 64\], this checkpoint's model needs"),
        ("groups", "its parameter groups .* are not nanochat 2026's"),
        ("missing key", r"no exp_avg_sq for tensor 1 \(transformer.wte.weight\)"),
        ("steps", "resid_lambdas's AdamW step is"),
    ],
)
def test_bad_optimizer_states_are_one_line_errors(tmp_path, kind, message):
    with pytest.raises(AksharaError, match=message):
        convert_nanochat(checkpoint(tmp_path / "base", optimizer=broken(kind)), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_missing_ranks_pickles_and_garbage_are_refused(tmp_path, capsys):
    folder = checkpoint(tmp_path / "a", world=3)
    (folder / f"optim_{STEP:06d}_rank1.pt").unlink()
    with pytest.raises(AksharaError, match=r"optim_000002_rank1.pt is missing \(ranks found: \[0, 2\]\)"):
        convert_nanochat(folder, tmp_path / "hf")
    folder = checkpoint(tmp_path / "b", world=2)
    (folder / f"optim_{STEP:06d}_rank1.pt").unlink()  # rank 0 of 2 alone: half of each sharded tensor
    with pytest.raises(AksharaError, match="another model's optimizer state, or some ranks' files missing"):
        convert_nanochat(folder, tmp_path / "hf")
    folder = checkpoint(tmp_path / "c")
    torch.save({"state": {0: Code()}, "param_groups": []}, folder / f"optim_{STEP:06d}_rank0.pt")
    with pytest.raises(AksharaError, match="optim_000002_rank0.pt: not a plain optimizer state"):
        convert_nanochat(folder, tmp_path / "hf")
    assert "pickled code ran" not in capsys.readouterr().out
    (folder / f"optim_{STEP:06d}_rank0.pt").write_bytes(b"not a zip")
    with pytest.raises(AksharaError, match="optim_000002_rank0.pt: not a plain optimizer state"):
        convert_nanochat(folder, tmp_path / "hf")
    torch.save({"param_groups": []}, folder / f"optim_{STEP:06d}_rank0.pt")
    with pytest.raises(AksharaError, match="not a torch optimizer state"):
        convert_nanochat(folder, tmp_path / "hf")
    # Weights alone are still convertible
    out = convert_nanochat(folder, tmp_path / "hf", optimizer=False)
    assert not (out / OPTIMIZER_FILE).exists() and (out / "model.safetensors").is_file()


def test_late_2025_or_empty_states_are_not_carried(tmp_path, capsys):
    folder = checkpoint(tmp_path / "a")
    torch.save([{"state": {}, "param_groups": []}] * 2, folder / f"optim_{STEP:06d}_rank0.pt")  # late 2025: two optimizers
    out = convert_nanochat(folder, tmp_path / "hf")
    assert not (out / OPTIMIZER_FILE).exists() and "late-2025" in capsys.readouterr().err
    folder = checkpoint(tmp_path / "b", optimizer={**nanochat_file(), "state": {}})
    out = convert_nanochat(folder, tmp_path / "hf2")
    assert not (out / OPTIMIZER_FILE).exists() and "no optimizer state yet" in capsys.readouterr().err


def test_warm_start_refuses_states_that_do_not_fit(tmp_path):
    folder = convert_nanochat(checkpoint(tmp_path / "base"), tmp_path / "hf")
    model = load_model(str(folder))

    def fresh():
        return MuonAdamW.from_model(model)

    layout_path = folder / OPTIMIZER_LAYOUT
    good = layout_path.read_text()
    layout = json.loads(good)
    layout["parameters"]["transformer.h.9.attn.c_q.weight"] = {"optimizer": "muon", "shape": [32, 32]}
    layout_path.write_text(json.dumps(layout))
    with pytest.raises(AksharaError, match="no transformer.h.9.attn.c_q.weight/momentum_buffer"):
        warm_start_optimizer(fresh(), folder)
    layout = json.loads(good)
    del layout["parameters"]["lm_head.weight"]
    layout_path.write_text(json.dumps(layout))
    with pytest.raises(AksharaError, match="no state for lm_head.weight"):
        warm_start_optimizer(fresh(), folder)
    layout = json.loads(good)
    layout["parameters"]["lm_head.weight"]["optimizer"] = "muon"
    layout_path.write_text(json.dumps(layout))
    with pytest.raises(AksharaError, match="no lm_head.weight/momentum_buffer"):
        warm_start_optimizer(fresh(), folder)
    layout_path.write_text("{")
    with pytest.raises(AksharaError, match="nanochat_optimizer.json: not JSON"):
        warm_start_optimizer(fresh(), folder)
    layout_path.write_text(good)
    (folder / OPTIMIZER_FILE).write_bytes(b"\x00" * 40)
    with pytest.raises(AksharaError, match="nanochat_optimizer.tensors: not a safetensors file"):
        warm_start_optimizer(fresh(), folder)
    (folder / OPTIMIZER_FILE).unlink()
    with pytest.raises(AksharaError, match="no nanochat optimizer state"):
        warm_start_optimizer(fresh(), folder)


def test_warm_start_refuses_another_models_state(tmp_path):
    folder = convert_nanochat(checkpoint(tmp_path / "base"), tmp_path / "hf")
    other = {**MODEL, "n_embd": 64, "n_head": 4}
    other_folder = tmp_path / "other" / "base_checkpoints" / "d2"
    other_folder.mkdir(parents=True)
    state = random_nanochat_state(other, seed=1, pad_vocab_to=64)
    torch.save(state, other_folder / f"model_{STEP:06d}.pt")
    (other_folder / f"meta_{STEP:06d}.json").write_text(json.dumps({"step": STEP, "model_config": other}))
    make_nanochat_tokenizer_dir(tmp_path / "other" / "tokenizer", MODEL["vocab_size"])
    other_model = load_model(str(convert_nanochat(other_folder, tmp_path / "hf-other", optimizer=False)))
    with pytest.raises(AksharaError, match=r"nanochat_optimizer.tensors: transformer.h.0.attn.c_q.weight.s state is \[32, 32\], "
                                           r"the parameter is \[64, 64\]"):
        warm_start_optimizer(MuonAdamW.from_model(other_model), folder)
    from model_fixtures import tiny_akshara

    late_2025, _ = tiny_akshara()
    with pytest.raises(AksharaError, match="this model trains with the late-2025 Muon"):
        warm_start_optimizer(MuonAdamW.from_model(late_2025), folder)


def test_shards_round_trip():
    """The test's own sharding (nanochat's rule) loses nothing: rank chunks concatenate back."""
    full = random_nanochat_optimizer(random_nanochat_state(MODEL, seed=0, pad_vocab_to=64))
    ranks = shard_nanochat_optimizer(full, 3)  # 4 matrices in chunks of 2: the third rank holds padding only
    muon = next(g for g in full["param_groups"] if g["kind"] == "muon" and len(g["params"]) == 4)
    stacked = torch.cat([r["state"][muon["params"][0]]["momentum_buffer"] for r in ranks])
    assert torch.equal(stacked[:4], full["state"][muon["params"][0]]["momentum_buffer"]) and not stacked[4:].any()
    assert sys.modules.get("nanochat") is None  # nanochat's code never runs in the tests
