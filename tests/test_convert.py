"""nanochat checkpoint -> HF folder: the command, what it writes, and what it refuses."""

import json
import os
import pickle
import shutil

import pytest
import torch
from model_fixtures import FP32_LOGITS_ATOL, TINY_NANOCHAT, make_nanochat_run
from reference_nanochat import nanochat_forward
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from akshara_hf.cli import main as cli
from akshara_hf.conversion.convert import convert_nanochat
from akshara_hf.errors import AksharaError
from akshara_hf.tokenization.tokenizer import load_tiktoken_encoding

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
        assert (model(idx).logits - nanochat_forward(states[200], TINY_NANOCHAT, idx)).abs().max() <= FP32_LOGITS_ATOL
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


# --- hostile checkpoints: bounds before work, one line each, nothing written ------------------------------------


def _variant(nanochat_run, tmp_path, edit_meta=None, edit_state=None):
    """The tiny run's step-200 checkpoint (with its tokenizer beside it), its meta and/or state edited."""
    base, checkpoints, _ = nanochat_run
    folder = tmp_path / "variant"
    folder.mkdir()
    shutil.copytree(base / "tokenizer", folder / "tokenizer")
    meta = json.loads((checkpoints / "meta_000200.json").read_text())
    state = torch.load(checkpoints / "model_000200.pt", weights_only=True)
    if edit_state:
        state = edit_state(state)
    torch.save(state, folder / "model_000200.pt")
    meta_text = edit_meta(meta) if edit_meta else json.dumps(meta)
    (folder / "meta_000200.json").write_bytes(meta_text if isinstance(meta_text, bytes) else meta_text.encode())
    return folder


def _sizes(**changes):
    return lambda meta: json.dumps({**meta, "model_config": {**meta["model_config"], **changes}})


def _retyped(name, dtype):
    return lambda state: {key: value.to(dtype) if key.endswith(name) else value for key, value in state.items()}


HOSTILE_CHECKPOINTS = {
    "meta not UTF-8": (lambda meta: b"\xff\xfe{", None, "meta_000200.json: not UTF-8 text"),
    "meta a list": (lambda meta: "[1, 2]", None, "meta_000200.json: not a nanochat meta file"),
    "meta step text": (lambda meta: json.dumps({**meta, "step": "abc"}), None, "step must be a non-negative integer"),
    "n_layer text": (_sizes(n_layer="2"), None, "model_config.n_layer must be an integer, got '2'"),
    "n_layer 10**7": (_sizes(n_layer=10**7), None, "n_layer 10,000,000: a model of this size needs at least"),
    "sequence_len 10**9": (_sizes(sequence_len=10**9), None, "sequence_len 1,000,000,000: a model of this size"),
    "n_embd 10**7": (_sizes(n_embd=10**7, n_head=10**5, n_kv_head=10**5), None, "n_embd 10,000,000: a model of"),
    "n_layer 5000 (fits, wrong)": (_sizes(n_layer=5000), None, "holds layers 0-1, the meta file's model_config says "
                                                                "n_layer 5000"),
    "complex weights": (None, _retyped("lm_head.weight", torch.complex64),
                        "_orig_mod.lm_head.weight is complex64, not a floating-point weight"),
    "int64 weights": (None, _retyped("c_q.weight", torch.int64), "c_q.weight is int64, not a floating-point weight"),
    "int8 weights": (None, _retyped("transformer.wte.weight", torch.int8), "wte.weight is int8, not a floating"),
    "x and _orig_mod.x": (None, lambda state: {**state, "lm_head.weight": torch.zeros(320, 64)},
                          "holds both lm_head.weight and _orig_mod.lm_head.weight"),
}


@pytest.mark.parametrize("case", HOSTILE_CHECKPOINTS)
def test_hostile_checkpoints_are_one_line_before_work(nanochat_run, tmp_path, capsys, no_hang, case):
    edit_meta, edit_state, expected = HOSTILE_CHECKPOINTS[case]
    folder = _variant(nanochat_run, tmp_path, edit_meta, edit_state)
    with no_hang(60):  # n_layer 10**7 built modules for hours; sequence_len 10**9 allocated 160 GB of rotary tables
        code = cli(["convert-nanochat", str(folder), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("akshara-hf convert-nanochat: error: "), err
    assert expected in err, err
    assert not (tmp_path / "out").exists()


def test_the_size_estimate_is_a_lower_bound_of_the_real_model():
    """`model_bytes` must never refuse a model that fits: it stays at or below the parameters' real size (and the
    rotary tables), for both generations."""
    from akshara_hf import AksharaConfig, AksharaForCausalLM
    from akshara_hf.bounds import model_bytes

    for nanochat_config in (TINY_NANOCHAT, {**TINY_NANOCHAT, "n_layer": 3, "window_pattern": "SSL"}):
        config = AksharaConfig.from_nanochat(nanochat_config)
        model = AksharaForCausalLM(config)
        parameters = sum(p.numel() * p.element_size() for p in model.parameters())
        tables = sum(b.numel() * 4 for name, b in model.named_buffers() if name.endswith(("cos", "sin")))
        estimate = model_bytes(config.to_dict())
        assert parameters <= estimate <= parameters + tables * 2 + 1, (parameters, tables, estimate)
        assert estimate >= parameters + 0.9 * tables


@pytest.mark.parametrize("which", ["model_000200.pt", "meta_000200.json", "tokenizer/tokenizer.pkl"])
def test_a_named_pipe_in_a_checkpoint_is_refused_at_once(nanochat_run, tmp_path, capsys, no_hang, which):
    folder = _variant(nanochat_run, tmp_path)
    (folder / which).unlink()
    os.mkfifo(folder / which)
    with no_hang():
        assert cli(["convert-nanochat", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{folder / which}: is a named pipe, not a regular file" in err, err


def test_a_crafted_split_pattern_in_the_pickle_is_refused(nanochat_run, tmp_path, capsys):
    """`(a|a)*b` converted without a word, then tiktoken panicked (aborting the process) on 24 x "a"."""
    import tiktoken

    folder = _variant(nanochat_run, tmp_path)
    encoding = load_tiktoken_encoding(folder / "tokenizer")
    crafted = tiktoken.Encoding(name="x", pat_str=r"(a|a)*b|" + encoding._pat_str,
                                mergeable_ranks=encoding._mergeable_ranks, special_tokens=encoding._special_tokens)
    (folder / "tokenizer" / "tokenizer.pkl").write_bytes(pickle.dumps(crafted))
    assert cli(["convert-nanochat", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tokenizer.pkl: tiktoken.Encoding pat_str " in err and "(a|a)*b|" in err, err
    assert "is not nanochat's split pattern" in err and not (tmp_path / "out").exists()


def test_a_negative_step_is_refused(nanochat_run, tmp_path, capsys):
    _, checkpoints, _ = nanochat_run
    assert cli(["convert-nanochat", str(checkpoints), str(tmp_path / "out"), "--step", "-200"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "akshara-hf convert-nanochat: error: --step -200: must be a non-negative integer (nanochat's files "\
                  "are model_NNNNNN.pt)", err
