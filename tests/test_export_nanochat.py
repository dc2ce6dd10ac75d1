"""HF folder -> nanochat checkpoint dir (`export-nanochat`): nanochat -> HF -> nanochat gives back the same tensors
(dtype and vocab padding rows included) and meta; what a folder without nanochat's extras gets; what it refuses.

That nanochat's own loaders accept the exported directories was checked outside the project with the 2025 and 2026
snapshots' `checkpoint_manager.build_model` (README, "nanochat generations")."""

import json

import pytest
import torch
from model_fixtures import TINY_NANOCHAT, make_nanochat_run, tiny_akshara
from reference_nanochat import nanochat_forward

from akshara_hf.cli import main as cli
from akshara_hf.conversion.convert import convert_nanochat, export_nanochat
from akshara_hf.errors import AksharaError
from akshara_hf.tokenization.tokenizer import load_tiktoken_encoding


def assert_same_checkpoint(exported: dict, original: dict) -> None:
    original = {k.removeprefix("_orig_mod."): v for k, v in original.items()}
    assert set(exported) == set(original)
    for key, tensor in original.items():
        assert exported[key].dtype == tensor.dtype and torch.equal(exported[key], tensor), key


@pytest.fixture(scope="module")
def run_2025(tmp_path_factory):
    return make_nanochat_run(tmp_path_factory.mktemp("nanochat2025"))


def test_round_trip_2025_is_bit_identical_with_meta_and_tokenizer(run_2025, tmp_path):
    base, checkpoints, states = run_2025
    folder = convert_nanochat(checkpoints, tmp_path / "hf")
    out = export_nanochat(folder, tmp_path / "back")
    assert {p.name for p in out.iterdir()} == {"model_000200.pt", "meta_000200.json", "tokenizer.pkl", "token_bytes.pt",
                                               ".akshara-hf.json"}  # the folder helper's marker
    assert_same_checkpoint(torch.load(out / "model_000200.pt", weights_only=True), states[200])
    assert json.loads((out / "meta_000200.json").read_text()) == json.loads((checkpoints / "meta_000200.json").read_text())
    source, exported = load_tiktoken_encoding(base / "tokenizer"), load_tiktoken_encoding(out)
    assert exported._mergeable_ranks == source._mergeable_ranks and exported._special_tokens == source._special_tokens
    assert torch.equal(torch.load(out / "token_bytes.pt"), torch.load(base / "tokenizer" / "token_bytes.pt"))
    # and back again: the exported directory converts to the same model
    again = convert_nanochat(out, tmp_path / "hf2")
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


def test_padding_rows_live_where_no_weight_loader_reads_them(run_2025, tmp_path):
    """Loaders that read every `*.safetensors` of a folder (vLLM, TGI, llama.cpp's converter) took the padding rows,
    named `lm_head.weight` / `transformer.wte.weight`, for a second copy of the weights. The folder's only
    `*.safetensors` is the model, its `auto_map` names every class we register (vLLM builds `AutoModel`)."""
    base, checkpoints, states = run_2025
    folder = convert_nanochat(checkpoints, tmp_path / "hf")
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["model.safetensors"]
    assert sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt")) == []
    assert (folder / "nanochat_padding.tensors").is_file()
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_akshara.AksharaConfig", "AutoModel": "modeling_akshara.AksharaModel",
                        "AutoModelForCausalLM": "modeling_akshara.AksharaForCausalLM"}


def test_a_folder_converted_before_the_rename_still_exports_bit_identically(run_2025, tmp_path):
    """Older folders hold the same bytes as `nanochat_padding.safetensors`; export reads them there too (README:
    renaming the file is the whole migration). A damaged padding file is one line naming it."""
    base, checkpoints, states = run_2025
    folder = convert_nanochat(checkpoints, tmp_path / "hf")
    (folder / "nanochat_padding.tensors").rename(folder / "nanochat_padding.safetensors")
    out = export_nanochat(folder, tmp_path / "back")
    assert_same_checkpoint(torch.load(out / "model_000200.pt", weights_only=True), states[200])
    (folder / "nanochat_padding.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(AksharaError, match="nanochat_padding.safetensors: not the padding rows convert-nanochat wrote"):
        export_nanochat(folder, tmp_path / "back2")


def test_round_trip_of_a_bf16_checkpoint_keeps_bf16(run_2025, tmp_path):
    base, checkpoints, states = run_2025
    bf16 = {f"_orig_mod.{k}": v.bfloat16() for k, v in states[100].items()}
    source = tmp_path / "bf16"
    source.mkdir()
    torch.save(bf16, source / "model_000100.pt")
    (source / "meta_000100.json").write_text((checkpoints / "meta_000100.json").read_text())
    folder = convert_nanochat(source, tmp_path / "hf", tokenizer_dir=base / "tokenizer")
    out = export_nanochat(folder, tmp_path / "back")
    assert_same_checkpoint(torch.load(out / "model_000100.pt", weights_only=True), bf16)


def test_folder_without_nanochat_extras_exports_zero_padding_and_its_own_dtype(run_2025, tmp_path):
    base, checkpoints, _ = run_2025
    folder = convert_nanochat(checkpoints, tmp_path / "hf")
    model, _ = tiny_akshara(seed=4)  # e.g. fine-tuned here: a folder saved by the Trainer has no nanochat extras
    model.save_pretrained(tmp_path / "trained")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (tmp_path / "trained" / name).write_bytes((folder / name).read_bytes())
    assert cli(["export-nanochat", str(tmp_path / "trained"), str(tmp_path / "back"), "--step", "7"]) == 0
    state = torch.load(tmp_path / "back" / "model_000007.pt", weights_only=True)
    assert state["transformer.wte.weight"].shape == (320, 64) and not state["lm_head.weight"][300:].any()
    meta = json.loads((tmp_path / "back" / "meta_000007.json").read_text())
    assert meta == {"step": 7, "model_config": TINY_NANOCHAT}
    idx = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(idx).logits - nanochat_forward(state, TINY_NANOCHAT, idx)).abs().max() <= 1e-5


def test_export_refuses_a_folder_without_tokenizer_or_of_another_model_type(run_2025, tmp_path, capsys):
    model, _ = tiny_akshara()
    model.save_pretrained(tmp_path / "weights_only")
    with pytest.raises(AksharaError, match="no tokenizer.json"):
        export_nanochat(tmp_path / "weights_only", tmp_path / "out")
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(tmp_path / "llama")  # fmt: skip
    assert cli(["export-nanochat", str(tmp_path / "llama"), str(tmp_path / "out")]) != 0
    assert "model_type 'llama', expected 'akshara'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
