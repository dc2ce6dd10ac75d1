"""HF folder -> nanochat checkpoint dir (`export-nanochat`): nanochat -> HF -> nanochat gives back the same tensors
(dtype and vocab padding rows included) and meta; what a folder without nanochat's extras gets; what it refuses.

That nanochat's own loaders accept the exported directories was checked outside the project with the 2025 and 2026
snapshots' `checkpoint_manager.build_model` (README, "nanochat generations")."""

import json
import os
import shutil

import pytest
import torch
from model_fixtures import FP32_LOGITS_ATOL, TINY_NANOCHAT, make_nanochat_run, tiny_akshara
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
        assert (model(idx).logits - nanochat_forward(state, TINY_NANOCHAT, idx)).abs().max() <= FP32_LOGITS_ATOL


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


# --- hostile folders: every sidecar field checked, one line each, nothing written --------------------------------


@pytest.fixture(scope="module")
def converted_2025(run_2025, tmp_path_factory):
    return convert_nanochat(run_2025[1], tmp_path_factory.mktemp("hf") / "hf")


def _edited_meta(**changes):
    def edit(folder):
        meta = json.loads((folder / "nanochat_meta.json").read_text())
        (folder / "nanochat_meta.json").write_text(json.dumps({**meta, **changes}))
    return edit


def _write(name, data: bytes | str):
    def edit(folder):
        path = folder / name
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return edit


def _crafted_pattern(folder):
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    split = tokenizer["pre_tokenizer"]["pretokenizers"][0]["pattern"]
    split["Regex"] = r"(a|a)*b|" + split["Regex"]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


def _fifo(name):
    def edit(folder):
        (folder / name).unlink()
        os.mkfifo(folder / name)
    return edit


HOSTILE_FOLDERS = {
    "tokenizer.json not JSON": (_write("tokenizer.json", "{bad"), "the tokenizer does not load (JSONDecodeError"),
    "tokenizer.json empty object": (_write("tokenizer.json", "{}"), "the tokenizer does not load"),
    "crafted split pattern": (_crafted_pattern, 'tokenizer.json: regex "(a|a)*b|'),  # refused when loaded
    "meta not JSON": (_write("nanochat_meta.json", "{bad"), "nanochat_meta.json: not valid JSON"),
    "meta not UTF-8": (_write("nanochat_meta.json", b"\xff{}"), "nanochat_meta.json: not UTF-8 text"),
    "meta a list": (_write("nanochat_meta.json", "[1]"), "nanochat_meta.json: must be a JSON object, got list"),
    "meta step text": (_edited_meta(step="abc"), "step must be a non-negative integer, got 'abc'"),
    "meta step negative": (_edited_meta(step=-3), "step must be a non-negative integer, got -3"),
    "meta step bool": (_edited_meta(step=True), "step must be a non-negative integer, got True"),
    "meta model_config list": (_edited_meta(model_config=[1]), "model_config must be a dict"),
    "akshara a string": (_edited_meta(akshara="x"), "akshara must be an object with a dtypes object, got 'x'"),
    "dtypes a list": (_edited_meta(akshara={"dtypes": []}), "akshara must be an object with a dtypes object"),
    "dtype unknown": (_edited_meta(akshara={"dtypes": {"lm_head.weight": "float128"}}),
                      "akshara.dtypes.lm_head.weight is 'float128', not one of"),
    "dtype int8 (was obeyed)": (_edited_meta(akshara={"dtypes": {"lm_head.weight": "int8"}}),
                                "akshara.dtypes.lm_head.weight is 'int8', not one of"),
    "dtype of no tensor": (_edited_meta(akshara={"dtypes": {"nope.weight": "float32"}}),
                           "akshara.dtypes names 'nope.weight', a tensor this model does not have"),
    "padding corrupt": (_write("nanochat_padding.tensors", b"garbage"),
                        "nanochat_padding.tensors: not the padding rows convert-nanochat wrote"),
    "padding a named pipe": (_fifo("nanochat_padding.tensors"), "nanochat_padding.tensors: is a named pipe"),
    "meta a named pipe": (_fifo("nanochat_meta.json"), "nanochat_meta.json: is a named pipe, not a regular file"),
    "tokenizer a named pipe": (_fifo("tokenizer.json"), "tokenizer.json: is a named pipe, not a regular file"),
}


@pytest.mark.parametrize("case", HOSTILE_FOLDERS)
def test_hostile_folders_are_one_line(converted_2025, tmp_path, capsys, no_hang, case):
    edit, expected = HOSTILE_FOLDERS[case]
    folder = tmp_path / "folder"
    shutil.copytree(converted_2025, folder)
    edit(folder)
    with no_hang():
        code = cli(["export-nanochat", str(folder), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("akshara-hf export-nanochat: error: "), err
    assert expected in err, err
    assert not (tmp_path / "out").exists()


def test_padding_file_of_integer_rows_is_refused(converted_2025, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "folder"
    shutil.copytree(converted_2025, folder)
    save_file({"lm_head.weight": torch.zeros(20, 64, dtype=torch.int8)}, folder / "nanochat_padding.tensors")
    with pytest.raises(AksharaError, match="lm_head.weight is int8, not a floating-point weight"):
        export_nanochat(folder, tmp_path / "out")


@pytest.mark.parametrize("step", ["-7", "-1"])
def test_a_negative_step_is_refused_in_one_line(converted_2025, tmp_path, capsys, step):
    """`--step -7` wrote model_-00007.pt."""
    assert cli(["export-nanochat", str(converted_2025), str(tmp_path / "out"), "--step", step]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"akshara-hf export-nanochat: error: --step {step}: must be a non-negative") and "\n" not in err
    assert not (tmp_path / "out").exists()
