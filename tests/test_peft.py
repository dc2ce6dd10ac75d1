"""PEFT adapters through MuonSFTTrainer: LoRA trains (adapter weights on AdamW, base frozen), saves, reloads and
merges into a plain Akshara model whose logits equal the adapter model's; recipes take TRL's PEFT keys."""

import json
from pathlib import Path

import pytest
import torch
from dist_train_script import conversations, tiny_config, tiny_model, tiny_tokenizer
from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from akshara_hf import AksharaForCausalLM
from akshara_hf.training.adapters import AksharaPeftArguments, peft_config
from akshara_hf.errors import AksharaError
from akshara_hf.training.optim import MuonAdamW, split_parameters
from akshara_hf.training.trainer import MuonSFTTrainer
from model_card import write_model_card

REPO = Path(__file__).resolve().parents[1]
IDS = torch.tensor([[3, 17, 250, 9, 44, 101, 7, 300]])
STEPS = 8


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A saved tiny base model and a LoRA (all-linear, r 4) trained on it: the same 8 conversations every step."""
    root = tmp_path_factory.mktemp("lora")
    tiny_model().save_pretrained(root / "base")
    tiny_tokenizer().save_pretrained(root / "base")
    model = AutoModelForCausalLM.from_pretrained(root / "base")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    args = tiny_config(root / "out", max_steps=STEPS, adapter_lr=1e-2, target_examples_per_step=8)
    trainer = MuonSFTTrainer(
        model, args, train_dataset=conversations(8), processing_class=tiny_tokenizer(),
        peft_config=LoraConfig(target_modules="all-linear", r=4, lora_alpha=8, lora_dropout=0.0),
        card_writer=write_model_card, card_facts=lambda trainer: {"run_name": "lora", "stage": "sft"},
    )  # fmt: skip
    trainer.train()
    trainer.save_model(str(root / "adapter"))
    return root, trainer, base_state


def test_lora_trains_with_adapters_on_adamw_and_the_base_frozen(lora_run):
    _, trainer, base_state = lora_run
    groups = {group["name"]: group for group in trainer.optimizer.param_groups}
    # no Muon at all: LoRA freezes every base matrix (the Trainer wraps our optimizer in Accelerate's)
    assert list(groups) == ["adapter"] and trainer.optimizer.optimizer.muon is None
    assert groups["adapter"]["initial_lr"] == 1e-2  # adapter_lr as given, not times init_lr_frac
    # 2 layers x 6 linears (q, k, v, proj, fc, mlp proj) x (A, B); the head is not "all-linear"
    assert len(groups["adapter"]["params"]) == 24
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == STEPS and losses[-1] < 0.8 * losses[0], losses
    base = trainer.model.get_base_model()
    for name, value in base.state_dict().items():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(value, base_state[key]), name  # base weights untouched


def test_an_adapter_keeps_pefts_card_even_with_a_card_writer(lora_run):
    root, _, _ = lora_run
    card = ModelCard.load(root / "adapter" / "README.md")  # PEFT's: our card describes whole models
    assert card.data.library_name == "peft" and "akshara-hf model-card" not in card.text


def test_adapter_saves_reloads_and_merges_to_the_same_logits(lora_run, tmp_path):
    root, trainer, _ = lora_run
    adapter_dir = root / "adapter"
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(root / "base") and config["peft_type"] == "LORA"
    assert config["task_type"] == "CAUSAL_LM"  # set by the trainer when the LoraConfig has none
    assert not (adapter_dir / "config.json").exists()  # an adapter folder, not a copy of the model
    with torch.no_grad():
        trained = trainer.model.eval()(IDS).logits
        base = AutoModelForCausalLM.from_pretrained(root / "base").eval()(IDS).logits
        assert (trained - base).abs().max() > 1e-2  # the adapter changed the model
        reloaded = AutoPeftModelForCausalLM.from_pretrained(adapter_dir).eval()
        torch.testing.assert_close(reloaded(IDS).logits, trained, rtol=0, atol=1e-6)
        # transformers' own PEFT integration loads the adapter folder too
        via_transformers = AutoModelForCausalLM.from_pretrained(adapter_dir).eval()
        torch.testing.assert_close(via_transformers(IDS).logits, trained, rtol=0, atol=1e-6)
        merged = reloaded.merge_and_unload()
        assert type(merged) is AksharaForCausalLM
        assert not any("lora" in name for name, _ in merged.named_parameters())
        torch.testing.assert_close(merged(IDS).logits, trained, rtol=0, atol=1e-5)
        merged.save_pretrained(tmp_path / "merged")
        again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", trust_remote_code=True).eval()
        torch.testing.assert_close(again(IDS).logits, trained, rtol=0, atol=1e-5)


def test_split_sorts_adapters_modules_to_save_and_dora():
    model = get_peft_model(tiny_model(), LoraConfig(target_modules=["c_q", "c_v"], r=2, modules_to_save=["lm_head"]))
    groups = split_parameters(model)
    assert {k for k, v in groups.items() if v} == {"adapter", "unembedding"}
    assert len(groups["adapter"]) == 8 and all("lora_" in name for name, _ in groups["adapter"])
    assert [name for name, _ in groups["unembedding"]] == ["base_model.model.lm_head.modules_to_save.default.weight"]
    dora = get_peft_model(tiny_model(), LoraConfig(target_modules="all-linear", r=2, use_dora=True))
    groups = split_parameters(dora)  # DoRA's 1-D magnitude vectors are adapter weights too
    assert sum(p.ndim == 1 for _, p in groups["adapter"]) == 12 and not groups["other"]
    # a full model is split as before: no adapter group
    assert "adapter" not in split_parameters(tiny_model())


def test_adapter_only_optimizer_state_round_trips_and_refuses_a_full_models(tmp_path):
    model = get_peft_model(tiny_model(), LoraConfig(target_modules="all-linear", r=2))
    optimizer = MuonAdamW.from_model(model, adapter_lr=1e-3)
    loss = model(IDS, labels=IDS).loss
    loss.backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    state = torch.load(tmp_path / "optimizer.pt", weights_only=True)  # as the Trainer resumes
    assert state["muon"] is None and state["adamw"]["state"]
    fresh = MuonAdamW.from_model(model, adapter_lr=1e-3)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["name"] == "adapter" and fresh.adamw.param_groups[0] is fresh.param_groups[0]
    with pytest.raises(AksharaError, match="'muon' part is missing"):
        MuonAdamW.from_model(tiny_model()).load_state_dict(state)
    with pytest.raises(AksharaError, match="adapter_lr must be > 0"):
        MuonAdamW.from_model(model, adapter_lr=0)
    frozen = tiny_model().requires_grad_(False)
    with pytest.raises(AksharaError, match="no trainable 2-D weights"):
        MuonAdamW.from_model(frozen)


def test_recipe_peft_keys_are_trls():
    arguments = AksharaPeftArguments(use_peft=True, lora_r=8, lora_alpha=16, lora_target_modules=["c_q", "c_v"],
                                     use_rslora=True)
    config = peft_config(arguments)
    assert isinstance(config, LoraConfig)
    assert (config.r, config.lora_alpha, set(config.target_modules), config.use_rslora) == (8, 16, {"c_q", "c_v"}, True)
    assert peft_config(AksharaPeftArguments(use_peft=True, lora_target_modules=["all-linear"])).target_modules == (
        "all-linear"
    )  # fmt: skip
    assert peft_config(AksharaPeftArguments(use_peft=True)).target_modules == "all-linear"  # Akshara's default
    assert peft_config(AksharaPeftArguments()) is None
    for bad, message in (({"lora_r": 0}, "lora_r"), ({"lora_alpha": -1}, "lora_alpha"),
                         ({"lora_dropout": 1.0}, "lora_dropout")):
        with pytest.raises(AksharaError, match=message):
            AksharaPeftArguments(use_peft=True, **bad)


def test_sft_recipe_with_use_peft_saves_an_adapter(converted_folder, tmp_path, capsys):
    from akshara_hf.training.run import train

    out = train([
        "--config", str(REPO / "training" / "recipes" / "tiny-sft.yaml"), "--model_name_or_path", str(converted_folder),
        "--output_dir", str(tmp_path / "run"), "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
        "--disable_tqdm", "true", "--max_length", "96", "--use_peft", "true", "--lora_r", "4",
        "--lora_target_modules", "c_q", "c_v",
    ], script="sft.py", card_writer=write_model_card)  # fmt: skip
    assert ModelCard.load(out / "README.md").data.library_name == "peft"  # the adapter keeps PEFT's README
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], set(config["target_modules"])) == (4, {"c_q", "c_v"})
    assert json.loads((out / "run_facts.json").read_text())["num_steps"] == 2
    assert "LoRA adapter saved in" in capsys.readouterr().err
    merged = AutoPeftModelForCausalLM.from_pretrained(out).merge_and_unload()
    assert type(merged) is AksharaForCausalLM


def test_lora_on_a_nanochat_2026_layout_puts_adapters_on_adamw():
    from test_optim import nanochat_2026_layout

    base = nanochat_2026_layout()
    model = get_peft_model(base, LoraConfig(target_modules=["c_q", "c_v"], r=2))
    optimizer = MuonAdamW.from_model(model, adapter_lr=1e-3)
    assert optimizer.muon is None and [g["name"] for g in optimizer.param_groups] == ["adapter"]
    adapters = base.config.num_hidden_layers * 2 * 2  # c_q and c_v per layer, lora_A and lora_B each
    assert len(optimizer.param_groups[0]["params"]) == adapters and optimizer.param_groups[0]["lr"] == 1e-3
