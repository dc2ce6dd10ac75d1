"""Export to transformers' native `nanochat` type (no remote code) and import back."""

import json
import re

import pytest
import torch
from model_fixtures import tiny_akshara
from transformers import AutoModelForCausalLM, NanoChatForCausalLM

from akshara_hf import AksharaForCausalLM
from akshara_hf.conversion.convert import export_native, import_native
from akshara_hf.errors import AksharaError

# Measured on the tiny model below (random weights, 60 positions): native's fp32 rotary tables against the bf16 ones
# moved the logits by 0.0129 (16 positions), 0.0102 (60) and 0.0118 (640) at most; everything else is identical.
NATIVE_LOGIT_BOUND = 5e-2


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    model, _ = tiny_akshara()
    model.save_pretrained(root / "akshara")
    export_native(root / "akshara", root / "native")
    import_native(root / "native", root / "back")
    return model, root


def test_native_export_loads_without_remote_code_and_is_close(folders):
    model, root = folders
    config = json.loads((root / "native" / "config.json").read_text())
    assert config["model_type"] == "nanochat" and "auto_map" not in config
    native = AutoModelForCausalLM.from_pretrained(root / "native")
    assert isinstance(native, NanoChatForCausalLM)
    idx = torch.randint(0, 300, (2, 60), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(idx).logits, native(idx).logits
    diff = (ours - theirs).abs().max().item()
    assert 0 < diff < NATIVE_LOGIT_BOUND  # differs (fp32 rotary) but only by the rotary rounding
    # the difference is the rotary rounding alone: give our model fp32 tables and it matches native to float noise
    rotary = model.transformer.rotary_emb
    saved = rotary.cos, rotary.sin
    positions = torch.arange(rotary.cos.shape[0], dtype=torch.float32)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    freqs = torch.outer(positions, inv_freq)
    rotary.cos, rotary.sin = freqs.cos(), freqs.sin()
    with torch.no_grad():
        assert (model(idx).logits - theirs).abs().max().item() < 1e-4
    rotary.cos, rotary.sin = saved
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=1)
    assert torch.equal(model.generate(idx[:1, :6], **kwargs), native.generate(idx[:1, :6], **kwargs))


def test_import_back_round_trips_exactly(folders):
    model, root = folders
    back = AutoModelForCausalLM.from_pretrained(root / "back")
    assert isinstance(back, AksharaForCausalLM) and back.config.rms_norm_eps is None
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    idx = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back(idx).logits, model(idx).logits)


def test_import_refuses_what_akshara_cannot_express(folders, tmp_path):
    _, root = folders
    native = NanoChatForCausalLM.from_pretrained(root / "native")
    native.config.hidden_act = "gelu"
    native.save_pretrained(tmp_path / "gelu")
    with pytest.raises(AksharaError, match="hidden_act"):
        import_native(tmp_path / "gelu", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_of_a_folder_without_chat_template_gets_nanochats(converted_folder, tmp_path, capsys):
    """A tokenizer saved without a template would give a native folder that cannot chat or serve."""
    import shutil

    from transformers import AutoTokenizer

    from akshara_hf.tokenization.chat import load_chat_template

    source = tmp_path / "no-template"
    shutil.copytree(converted_folder, source)
    (source / "chat_template.jinja").unlink(missing_ok=True)
    config_path = source / "tokenizer_config.json"
    config_path.write_text(json.dumps({k: v for k, v in json.loads(config_path.read_text()).items() if k != "chat_template"}))
    assert not AutoTokenizer.from_pretrained(source).chat_template
    export_native(source, tmp_path / "native")
    assert "no chat template" in capsys.readouterr().err
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "native")
    assert tokenizer.chat_template == load_chat_template()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "నమస్తే"}], add_generation_prompt=True)["input_ids"]
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant_start|>")


@pytest.mark.parametrize("template, fragment", [
    ("{{ messages[0]['content'] }}", "the chat template renders a conversation (system user + generation prompt) as"),
    ("{% for m in messages %}{{ m.nope() }}{% endfor %}",
     "the chat template does not render a conversation (system user + generation prompt)"),
])
def test_export_of_a_folder_with_a_broken_chat_template_is_refused(converted_folder, tmp_path, template, fragment):
    """A broken or foreign template was copied into the native folder without a word (its pipelines prompted the
    model with a layout it never saw)."""
    import shutil

    source = tmp_path / "broken-template"
    shutil.copytree(converted_folder, source)
    (source / "chat_template.jinja").write_text(template)
    with pytest.raises(AksharaError, match=re.escape(fragment)):
        export_native(source, tmp_path / "native")
    assert not (tmp_path / "native").exists()
