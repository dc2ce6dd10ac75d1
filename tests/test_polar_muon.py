"""nanochat 2026's optimizer (`PolarExpressMuon` + torch's AdamW in `MuonAdamW`) against numbers made by nanochat's own
code (`tests/data/make_nanochat2026_optim_reference.py`): its optimizer alone, and one whole chat_sft step."""

import io
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from torch import nn
from transformers import PreTrainedTokenizerFast

from akshara_hf import AksharaConfig, AksharaForCausalLM
from akshara_hf.conversion.convert import nanochat_state_to_akshara, our_key_to_nanochat
from akshara_hf.errors import AksharaError
from akshara_hf.training.optim import MuonAdamW
from akshara_hf.training.polar_muon import PolarExpressMuon, polar_express
from dist_train_script import SPECIALS, tiny_config
from dist_train_script import tiny_model as late_2025_model
from reference_nanochat import random_nanochat_state

REFERENCE = Path(__file__).parent / "data" / "nanochat2026_optim_reference.safetensors"
with safe_open(REFERENCE, "pt") as _file:
    SETTINGS = json.loads(_file.metadata()["settings"])
TENSORS = load_file(REFERENCE)


def reference(prefix: str) -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): value for key, value in TENSORS.items() if key.startswith(prefix)}


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return nn.functional.cosine_similarity(x.flatten().double(), y.flatten().double(), dim=0).item()


def optimizers_like_the_reference(ref: dict, orthogonalize_dtype: str):
    """Our optimizers over the reference's tensors: PolarExpressMuon for its Muon matrices, torch's AdamW for the rest
    (each AdamW tensor its own group with nanochat's settings)."""
    names = [*SETTINGS["optim_muon"], *SETTINGS["optim_adamw"]]
    params = {name: nn.Parameter(ref[f"init/{name}"].clone()) for name in names}
    settings = SETTINGS["optim_muon_settings"]
    muon = PolarExpressMuon([params[name] for name in SETTINGS["optim_muon"]], beta2=settings["beta2"],
                            weight_decay=settings["weight_decay"], ns_steps=settings["ns_steps"],
                            orthogonalize_dtype=orthogonalize_dtype)  # fmt: skip
    adamw = torch.optim.AdamW([
        {"params": [params[name]], **group, "betas": tuple(group["betas"]), "initial_lr": group["lr"]}
        for name, (_, group) in SETTINGS["optim_adamw"].items()
    ])  # fmt: skip
    return params, muon, adamw


def step_like_the_reference(step: int, ref: dict, params: dict, muon, adamw) -> None:
    settings = SETTINGS["optim_steps"][step]
    for name, param in params.items():
        param.grad = ref[f"grad/{step}/{name}"].clone()
    for group in muon.param_groups:
        group["lr"], group["momentum"] = settings["muon_lr"], settings["momentum"]
    for group in adamw.param_groups:
        group["lr"] = group["initial_lr"] * settings["adamw_lrm"]
    muon.step()
    adamw.step()


def test_three_steps_equal_nanochats_optimizer_in_fp32():
    """nanochat's CPU compute dtype (fp32): every value after each of 3 steps (momentum and LR changing, cautious weight
    decay on, two matrices sharing a stacked group there) within 1e-4 of that step's update (measured: 1.4e-5 Muon,
    2.4e-6 AdamW), and the final state equals nanochat's, its stacked Muon buffers unstacked per matrix."""
    ref = reference("optim/float32/")
    params, muon, adamw = optimizers_like_the_reference(ref, "float32")
    for step in range(len(SETTINGS["optim_steps"])):
        step_like_the_reference(step, ref, params, muon, adamw)
        for name, param in params.items():
            expected = ref[f"param/{step}/{name}"]
            previous = ref[f"init/{name}"] if step == 0 else ref[f"param/{step - 1}/{name}"]
            scale = (expected - previous).abs().max().item()
            torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-4 * scale, msg=f"{name} step {step}")
    for name in SETTINGS["optim_muon"]:
        state = muon.state[params[name]]
        for key in ("momentum_buffer", "second_momentum_buffer"):
            torch.testing.assert_close(state[key], ref[f"state/{name}/{key}"], rtol=1e-4, atol=1e-7)
    for name in SETTINGS["optim_adamw"]:
        state = adamw.state[params[name]]
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[key], ref[f"state/{name}/{key}"], rtol=1e-5, atol=1e-9)


def test_bf16_orthogonalisation_agrees_with_nanochats_on_a_gpu_dtype():
    """nanochat's GPU compute dtype (bf16, `NANOCHAT_DTYPE=bfloat16`): its compiled kernel rounds differently from our
    eager ops, so one step is compared by direction and size (measured: cosine >= 0.9939, norm within 0.15%); the
    fp32 result is farther from it than that."""
    ref = reference("optim/bfloat16/")
    params, muon, adamw = optimizers_like_the_reference(ref, "bfloat16")
    step_like_the_reference(0, ref, params, muon, adamw)
    for name in SETTINGS["optim_muon"]:
        ours, theirs = params[name].detach() - ref[f"init/{name}"], ref[f"param/0/{name}"] - ref[f"init/{name}"]
        assert cosine(ours, theirs) >= 0.99, name
        assert (ours.norm() / theirs.norm()).item() == pytest.approx(1.0, abs=0.005), name
    # The bf16 path is really taken: an fp32 orthogonalisation of the same matrix differs from it.
    matrix = ref["grad/0/square"]
    fp32, bf16 = polar_express(matrix, dtype=torch.float32), polar_express(matrix, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and not torch.allclose(fp32, bf16.float(), atol=1e-4)


# ---- one whole chat_sft step -------------------------------------------------------------------------------------


def sft_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Word-level ids 0 .. vocab - 10 and nanochat's 9 special tokens at the top (the pad token of the batches)."""
    first_special = vocab_size - len(SPECIALS)
    vocab = {f"t{i}": i for i in range(first_special)} | {s: first_special + i for i, s in enumerate(SPECIALS)}
    backend = Tokenizer(WordLevel(vocab, unk_token="t0"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|bos|>", additional_special_tokens=SPECIALS)


def test_one_sft_step_equals_nanochat_2026_chat_sft(tmp_path):
    """The issue's "done when": one MuonSFTTrainer step on a nanochat 2026 model (schedule sft-2026: LRs x 0.8, Muon
    momentum 0.85 at step 0; 2 micro-batches of 2 rows) against one step of nanochat 2026's chat_sft on the same
    weights and rows. The loss within 2e-3 relative and every tensor's update within 3% in cosine and norm ratio are
    what the issue asks; measured: loss 5.688757 both, every cosine and norm ratio 1.000000, so the test holds them
    to 1e-5 / 1e-3. (torch's Muon on the same step: cosine 0.79-0.97, norm ratio 0.68-0.94 on the matrices.)"""
    ref = reference("sft/float32/")
    model_config = SETTINGS["sft_model"]
    config = AksharaConfig.from_nanochat(model_config)
    model = AksharaForCausalLM(config)
    state = random_nanochat_state(model_config, seed=SETTINGS["sft_state_seed"])
    model.load_state_dict(nanochat_state_to_akshara(state, config), strict=True)
    rows = [{"input_ids": ref[f"row/{i}/input_ids"].tolist(), "assistant_masks": ref[f"row/{i}/mask"].tolist()}
            for i in range(SETTINGS["sft_settings"]["rows"])]  # fmt: skip
    # The first step of a 3-step run (the reference rows first, in order): sft-2026's LR goes by data progress, which
    # after this step is 1/3, so the multiplier is 1 as in the reference; stopped after that step.
    args = tiny_config(tmp_path, max_steps=3, per_device_train_batch_size=2, target_examples_per_step=4,
                       schedule="sft-2026", **SETTINGS["sft_lrs"])  # fmt: skip
    assert (args.init_lr_frac, args.gradient_accumulation_steps) == (0.8, 2)
    from transformers import TrainerCallback

    from akshara_hf.training.trainer import MuonSFTTrainer

    class StopAfterOneStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = True

    trainer = MuonSFTTrainer(model, args, train_dataset=Dataset.from_list(rows * 3), callbacks=[StopAfterOneStep()],
                             processing_class=sft_tokenizer(model_config["vocab_size"]))  # fmt: skip
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer.muon, PolarExpressMuon)  # inside Accelerate's wrapper
    (log,) = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert log["muon_momentum"] == 0.85 and log["lrm"] == 1.0
    expected_loss = ref["losses"].mean().item()
    assert log["loss"] == pytest.approx(expected_loss, rel=2e-3)
    assert log["loss"] == pytest.approx(expected_loss, rel=1e-5)
    for name, param in model.named_parameters():
        ours, theirs = param.detach() - before[name], ref[f"update/{our_key_to_nanochat(name)}"]
        assert theirs.norm() > 0, name
        assert cosine(ours, theirs) >= 1 - 1e-5, name
        assert (ours.norm() / theirs.norm()).item() == pytest.approx(1.0, abs=1e-3), name


# ---- the optimizer object ----------------------------------------------------------------------------------------


def tiny_2026_model() -> AksharaForCausalLM:
    config = AksharaConfig.from_nanochat(SETTINGS["sft_model"])
    torch.manual_seed(0)
    return AksharaForCausalLM(config)


def fill_gradients(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=generator)


def test_a_2026_model_gets_the_2026_muon_and_late_2025_keeps_torchs():
    assert isinstance(MuonAdamW.from_model(tiny_2026_model()).muon, PolarExpressMuon)
    assert type(MuonAdamW.from_model(late_2025_model()).muon) is torch.optim.Muon
    chosen = MuonAdamW.from_model(late_2025_model(), muon="2026")
    assert isinstance(chosen.muon, PolarExpressMuon) and chosen.state_dict()["muon_variant"] == "2026"
    muon = MuonAdamW.from_model(tiny_2026_model(), weight_decay=0.2).muon.param_groups[0]
    assert (muon["momentum"], muon["beta2"], muon["ns_steps"], muon["weight_decay"]) == (0.95, 0.9, 5, 0.2)
    assert muon["param_names"][0] == "transformer.h.0.attn.c_q.weight"
    with pytest.raises(AksharaError, match="muon must be one of"):
        MuonAdamW.from_model(tiny_2026_model(), muon="2027")


def test_state_dict_round_trip_continues_bit_identically():
    """Saved as the Trainer saves it (torch.save, then torch.load with weights_only=True), a fresh optimizer loaded from
    it takes exactly the step the original takes."""
    model = tiny_2026_model()
    optimizer = MuonAdamW.from_model(model)
    fill_gradients(model, seed=1)
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["muon_variant"] == "2026"
    first = saved["muon"]["state"][0]
    assert set(first) == {"momentum_buffer", "second_momentum_buffer"} and first["second_momentum_buffer"].shape == (32, 1)

    twin = tiny_2026_model()
    twin.load_state_dict(model.state_dict())
    restored = MuonAdamW.from_model(twin)
    restored.load_state_dict(saved)
    for net, opt in ((model, optimizer), (twin, restored)):
        fill_gradients(net, seed=2)
        opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name


def test_a_state_of_the_other_muon_is_refused():
    late = MuonAdamW.from_model(tiny_2026_model(), muon="late-2025")
    state = late.state_dict()
    del state["muon_variant"]  # as checkpoints written before the 2026 Muon existed
    with pytest.raises(AksharaError, match="saved by the late-2025 Muon, but this optimizer runs the 2026 Muon"):
        MuonAdamW.from_model(tiny_2026_model()).load_state_dict(state)
    with pytest.raises(AksharaError, match="saved by the 2026 Muon, but this optimizer runs the late-2025 Muon"):
        late.load_state_dict(MuonAdamW.from_model(tiny_2026_model()).state_dict())
    with pytest.raises(AksharaError, match="not a MuonAdamW optimizer state"):
        late.load_state_dict({**state, "extra": 1})


def test_zero_and_missing_gradients():
    """A zero gradient gives no update but the (cautious, here full) weight decay, and no NaN; a parameter without a
    gradient is left alone and gets no state."""
    weight, frozen = nn.Parameter(torch.randn(6, 4)), nn.Parameter(torch.randn(4, 4))
    optimizer = PolarExpressMuon([weight, frozen], lr=0.1, weight_decay=0.5)
    before, frozen_before = weight.detach().clone(), frozen.detach().clone()
    weight.grad = torch.zeros(6, 4)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), before * (1 - 0.1 * (6 / 4) ** 0.5 * 0.5))
    assert torch.equal(frozen.detach(), frozen_before) and frozen not in optimizer.state


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"orthogonalize_dtype": "float16"}, "orthogonalize_dtype must be one of"),
        ({"ns_steps": 6}, r"ns_steps must be in \[1, 5\]"),
        ({"momentum": 1.0}, "momentum and beta2 must be in"),
        ({"beta2": -0.1}, "momentum and beta2 must be in"),
        ({"lr": -1.0}, "lr must be >= 0"),
        ({"weight_decay": float("nan")}, "weight_decay must be >= 0"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PolarExpressMuon([nn.Parameter(torch.randn(3, 3))], **kwargs)


def test_only_matrices():
    with pytest.raises(ValueError, match=r"2-D parameters only, got shape \(3,\)"):
        PolarExpressMuon([nn.Parameter(torch.randn(3))])
