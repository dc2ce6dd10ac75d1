"""nanochat checkpoint -> HF folder: the command, what it writes, and what it refuses."""

import json
import pickle

import pytest
import torch
from model_fixtures import TINY_NANOCHAT, make_nanochat_run
from reference_nanochat import nanochat_forward
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from akshara_hf.cli import main as cli
from akshara_hf.conversion.convert import convert_nanochat
from akshara_hf.errors import AksharaError

@pytest.fixture(scope="module")
def nanochat_run(tmp_path_factory):
    return make_nanochat_run(tmp_path_factory.mktemp("nanochat"))


def test_converted_folder_loads_with_auto_classes_and_matches_nanochat(nanochat_run, tmp_path):
    base, checkpoints, states = nanochat_run
    out = convert_nanochat(checkpoints, tmp_path / "hf")  # newest step, tokenizer found two levels up
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json",
            "modeling_akshara.py", "configuration_akshara.py", "nanochat_meta.json"} <= names
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert json.loads((out / "nanochat_meta.json").read_text())["step"] == 200
    idx = torch.randint(0, 300, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(idx).logits - nanochat_forward(states[200], TINY_NANOCHAT, idx)).abs().max() <= 1e-5
    end, bos = tokenizer.convert_tokens_to_ids(["<|assistant_end|>", "<|bos|>"])
    assert model.generation_config.eos_token_id == [end, bos] and model.generation_config.pad_token_id == end
    assert model.generation_config.temperature == 0.6 and model.generation_config.top_k == 50


def test_step_selection_and_bf16_weights(nanochat_run, tmp_path):
    base, checkpoints, states = nanochat_run
    bf16_dir = tmp_path / "bf16"
    bf16_dir.mkdir()
    torch.save({k: v.bfloat16() for k, v in states[100].items()}, bf16_dir / "model_000100.pt")
    (bf16_dir / "meta_000100.json").write_text((checkpoints / "meta_000100.json").read_text())
    out = convert_nanochat(bf16_dir, tmp_path / "hf", tokenizer_dir=base / "tokenizer", step=100)
    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert model.dtype == torch.bfloat16
    reference = {k: v.bfloat16() for k, v in states[100].items()}
    assert torch.equal(model.lm_head.weight, reference["lm_head.weight"][:300])
    with pytest.raises(AksharaError, match="no checkpoint for step 7"):
        convert_nanochat(checkpoints, tmp_path / "x", step=7)


def test_pipeline_answers_a_telugu_chat_message(nanochat_run, tmp_path):
    _, checkpoints, _ = nanochat_run
    out = convert_nanochat(checkpoints, tmp_path / "hf")
    chat = pipeline("text-generation", model=str(out))
    reply = chat([{"role": "user", "content": "తెలుగు గురించి చెప్పండి"}], max_new_tokens=8, do_sample=False)
    message = reply[0]["generated_text"][-1]
    assert message["role"] == "assistant" and isinstance(message["content"], str)


def _checkpoint_with(tmp_path, state, model_config=TINY_NANOCHAT):
    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    torch.save(state, folder / "model_000001.pt")
    (folder / "meta_000001.json").write_text(json.dumps({"step": 1, "model_config": model_config}))
    return folder


def test_refuses_newer_architecture_and_unmapped_or_missing_tensors(nanochat_run, tmp_path):
    base, _, states = nanochat_run
    state = dict(states[100])
    newer = _checkpoint_with(tmp_path, {**state, "transformer.h.0.attn.rel_bias": torch.zeros(4)})
    with pytest.raises(AksharaError, match=r"does not have.*\['transformer.h.0.attn.rel_bias'\]"):
        convert_nanochat(newer, tmp_path / "out", tokenizer_dir=base / "tokenizer")
    # a 2026 tensor makes it a 2026 checkpoint (nanochat reads a missing window_pattern as "L"): the rest is missing
    partial = _checkpoint_with(tmp_path, {**state, "value_embeds.1.weight": torch.zeros(320, 32)})
    with pytest.raises(AksharaError, match=r"missing tensors: \['backout_lambda', 'resid_lambdas', 'smear_gate"):
        convert_nanochat(partial, tmp_path / "out", tokenizer_dir=base / "tokenizer")
    missing = _checkpoint_with(tmp_path, {k: v for k, v in state.items() if "h.1.mlp" not in k})
    with pytest.raises(AksharaError, match=r"missing tensors.*transformer\.h\.1\.mlp"):
        convert_nanochat(missing, tmp_path / "out", tokenizer_dir=base / "tokenizer")
    windowed = _checkpoint_with(tmp_path, state, {**TINY_NANOCHAT, "window_pattern": "SSSL"})  # 2026 meta, 2025 state
    with pytest.raises(AksharaError, match=r"missing tensors: \['backout_lambda'"):
        convert_nanochat(windowed, tmp_path / "out", tokenizer_dir=base / "tokenizer")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_bad_tokenizer_and_missing_files_are_one_line_errors(nanochat_run, tmp_path, capsys):
    _, checkpoints, _ = nanochat_run
    not_tiktoken = tmp_path / "tok"
    not_tiktoken.mkdir()
    (not_tiktoken / "tokenizer.pkl").write_bytes(pickle.dumps({"a": 1}))
    assert cli(["convert-nanochat", str(checkpoints), str(tmp_path / "o"), "--tokenizer-dir", str(not_tiktoken)]) == 2
    assert cli(["convert-nanochat", str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["convert-nanochat", str(empty), str(tmp_path / "o")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 3 and all(line.startswith("akshara-hf convert-nanochat: error:") for line in errors)
    assert "tokenizer.pkl" in errors[0] and "nowhere" in errors[1] and "model_<step>.pt" in errors[2]
