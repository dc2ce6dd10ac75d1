"""Akshara follows the conventions transformers' own model tests check (scripts/transformers_model_tests.py runs
those tests; these are the project's own checks of the same behaviour, without transformers' test tree)."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from akshara_hf import AksharaConfig, AksharaForCausalLM
from akshara_hf.model.modeling_akshara import AksharaRotaryEmbedding, rope_frequencies

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64)


def new_model(**overrides) -> AksharaForCausalLM:
    torch.manual_seed(0)
    return AksharaForCausalLM(AksharaConfig(**{**TINY, **overrides})).eval()


def test_initializer_range_unset_keeps_nanochat_zero_init():
    model = new_model()
    zeroed = [name for name, p in model.named_parameters() if p.ndim == 2 and not p.any()]
    assert "lm_head.weight" in zeroed
    assert sum(".c_proj." in name for name in zeroed) == 2 * TINY["num_hidden_layers"]  # attention and MLP
    logits = model(torch.randint(0, 99, (2, 5))).logits
    assert not logits.any()  # an untrained nanochat model predicts the uniform distribution


def test_initializer_range_gives_transformers_init_everywhere():
    model = new_model(initializer_range=0.02)
    for name, p in model.named_parameters():
        if p.ndim == 2:  # every matrix and embedding, the zero-init ones included
            assert abs(p.std().item() - 0.02) < 0.006, name
    logits = model(torch.randint(0, 99, (2, 5))).logits
    assert logits.abs().max() > 0


@pytest.mark.parametrize("bad", [0, -0.02, math.inf, math.nan, "0.02", True])
def test_initializer_range_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="initializer_range") as error:
        AksharaConfig(**TINY, initializer_range=bad)
    assert "\n" not in str(error.value)


def test_initializer_range_survives_save_and_load(tmp_path):
    model = new_model(initializer_range=0.05)
    model.save_pretrained(tmp_path)
    loaded = AksharaForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.initializer_range == 0.05
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name  # loading never re-initializes


def test_rotary_returns_transformers_layout_and_inv_freq():
    config = AksharaConfig(**TINY)
    rotary = AksharaRotaryEmbedding(config)
    positions = torch.arange(7)[None].expand(3, 7)
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    assert cos.shape == sin.shape == (3, 7, config.head_dim)  # (batch, seq, head_dim), like modeling_llama
    assert torch.equal(rotary.inv_freq, rope_frequencies(config)[0])
    short, _ = rotary(torch.zeros(1), torch.arange(3)[None])
    assert torch.equal(short[0], cos[0, :3])  # a position's table does not depend on the length


def test_rotary_buffers_are_rebuilt_after_loading(tmp_path):
    model = new_model(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0})
    model.save_pretrained(tmp_path)
    loaded = AksharaForCausalLM.from_pretrained(tmp_path)
    fresh, reloaded = model.transformer.rotary_emb, loaded.transformer.rotary_emb
    for name in ("inv_freq", "cos", "sin"):
        assert torch.equal(getattr(fresh, name), getattr(reloaded, name)), name
    assert torch.allclose(reloaded.inv_freq * 4, rope_frequencies(AksharaConfig(**TINY))[0])


def test_linear_rope_scaling_maps_positions_with_fp32_tables():
    """Position x under linear scaling by 10 sees the table of position x / 10 (fp32 tables: bf16 ones round)."""
    plain = AksharaRotaryEmbedding(AksharaConfig(**TINY, rotary_dtype="float32"))
    scaled = AksharaRotaryEmbedding(AksharaConfig(
        **TINY, rotary_dtype="float32", rope_parameters={"rope_type": "linear", "factor": 10.0, "rope_theta": 10000.0}))  # fmt: skip
    x = torch.zeros(1)
    cos_plain, sin_plain = plain(x, torch.arange(10)[None])
    cos_scaled, sin_scaled = scaled(x, torch.arange(0, 100, 10)[None])
    torch.testing.assert_close(cos_scaled, cos_plain)
    torch.testing.assert_close(sin_scaled, sin_plain)


def test_loss_is_taken_against_shift_labels():
    """Sequence/context parallel trainers pass already-shifted targets as `shift_labels`: the loss uses them as is."""
    model = new_model(initializer_range=0.02)
    ids = torch.randint(0, 99, (2, 6), generator=torch.Generator().manual_seed(1))
    shift_labels = torch.randint(0, 99, (2, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(ids, labels=ids, shift_labels=shift_labels)
        other_labels = model(ids, labels=torch.zeros_like(ids), shift_labels=shift_labels).loss
    expected = F.cross_entropy(out.logits.reshape(-1, 99), shift_labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert torch.equal(out.loss, other_labels)  # `labels` is ignored when `shift_labels` is given


def test_transformers_tests_runner_refuses_a_tree_without_transformers_tests(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "scripts" / "transformers_model_tests.py"
    (tmp_path / "tests").mkdir()
    done = subprocess.run([sys.executable, str(script), "--transformers-tests", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"transformers_model_tests.py: error: {tmp_path}: no tests/test_modeling_common.py (not a transformers tests tree)"
    ]


@pytest.mark.parametrize("new_size", [120, 64])
def test_resize_token_embeddings_resizes_value_embeddings(new_size):
    """nanochat 2026's value embeddings are tables over the vocabulary: resizing the vocabulary resizes them too, so
    the new ids run (before, a new id raised an IndexError deep in torch) and the kept rows are unchanged."""
    model = new_model(initializer_range=0.02, use_value_embeddings=True, num_hidden_layers=2)
    before = {name: table.weight.detach().clone() for name, table in model.transformer.value_embeds.items()}
    assert before  # the tiny config has a value embedding
    model.resize_token_embeddings(new_size)
    assert model.config.vocab_size == new_size
    kept = min(new_size, 99)
    for name, table in model.transformer.value_embeds.items():
        assert table.weight.shape == (new_size, before[name].shape[1])
        assert torch.equal(table.weight[:kept], before[name][:kept])
        assert table.weight.requires_grad
    logits = model(torch.tensor([[0, new_size - 1, 5]])).logits
    assert logits.shape == (1, 3, new_size) and torch.isfinite(logits).all()


def _runner():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "scripts" / "transformers_model_tests.py"
    spec = importlib.util.spec_from_file_location("transformers_model_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transformers_tests_runner_counts_and_finds_the_gap(capsys):
    """The runner's bookkeeping on made-up pytest reports: a failed subtest fails its test, a test skipped on Akshara
    but run on native is the gap (exit 1), a documented not-applicable skip is not, and a clean run exits 0."""
    runner = _runner()

    def make(kind, nodeid, when, outcome, reason=""):
        cls = type(kind, (), {})
        report = cls()
        report.nodeid, report.when, report.outcome = nodeid, when, outcome
        report.passed, report.failed, report.skipped = outcome == "passed", outcome == "failed", outcome == "skipped"
        report.longrepr = ("f.py", 1, f"Skipped: {reason}") if outcome == "skipped" else None
        return report

    def collect(*rows):
        collector = runner.Collector()
        for kind, cls, test, when, outcome, *reason in rows:
            collector.pytest_runtest_logreport(make(kind, f"x.py::{cls}::{test}", when, outcome, *reason))
        return collector.results

    native, late, new = "NanoChatModelTest", "AksharaModelTest", "Akshara2026ModelTest"
    rows = [
        ("TestReport", native, "test_a", "call", "passed"), ("TestReport", late, "test_a", "call", "passed"),
        ("TestReport", new, "test_a", "call", "passed"),
        ("TestReport", native, "test_b", "call", "passed"), ("TestReport", late, "test_b", "call", "passed"),
        ("TestReport", new, "test_b", "call", "passed"),
        ("TestReport", native, "test_inputs_embeds", "call", "passed"),
        ("TestReport", late, "test_inputs_embeds", "call", "passed"),
        ("TestReport", new, "test_inputs_embeds", "setup", "skipped", "value embeddings"),
    ]  # fmt: skip
    results = collect(*rows)
    assert results[(late, "test_a")] == ("passed", "")
    assert runner.report(results) == 0
    assert "not applicable, skipped: test_inputs_embeds" in capsys.readouterr().out

    gap = collect(*rows[:4], ("TestReport", late, "test_b", "setup", "skipped", "Model does not have a TP plan."),
                  *rows[5:])  # fmt: skip
    assert runner.report(gap) == 1
    out = capsys.readouterr().out
    assert "Akshara: skipped, but run on native NanoChat (1; target: 0):" in out
    assert "test_b" in out and "Model does not have a TP plan." in out

    subtest = collect(*rows, ("SubtestReport", late, "test_b", "call", "failed"))
    assert subtest[(late, "test_b")] == ("failed", "a subtest failed")
    assert runner.report(subtest) == 1
    assert "Akshara failures (1):\n  test_b" in capsys.readouterr().out


@pytest.mark.parametrize("switches", [{}, {"use_value_embeddings": True, "use_smear": True}], ids=["2025", "2026"])
def test_parallel_plans_name_existing_modules(switches):
    """Every entry of the TP, FSDP and PP plans names modules of the model (transformers' default FSDP plan names
    Llama's `embed_tokens` / `layers.*`, which Akshara does not have: the plan silently sharded nothing)."""
    import re

    model = new_model(**switches)
    names = [name for name, _ in model.named_modules()]
    for kind, plan in (("tp", model.tp_plan), ("fsdp", model.fsdp_plan), ("pp", model.pp_plan)):
        assert plan, kind
        for key in plan:
            pattern = re.escape(key).replace(r"\*", r"\d+")
            assert any(re.fullmatch(pattern, name) for name in names), (kind, key)
    assert set(model.fsdp_plan) == {"lm_head", "transformer.wte", "transformer.h.*", "transformer.norm"}


def test_auto_model_from_a_config_alone():
    """A process holding only the config (a spawned FSDP worker unpickles just that) builds the model through the
    Auto classes, as with transformers' own configs (before: "Unrecognized configuration class")."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from akshara_hf.model.configuration_akshara import AksharaConfig\n"
        "from transformers import AutoModel, AutoModelForCausalLM\n"
        "config = AksharaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)\n"
        "print(type(AutoModelForCausalLM.from_config(config)).__name__, type(AutoModel.from_config(config)).__name__)\n"
    )
    root = str(Path(__file__).parent.parent)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": root})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["AksharaForCausalLM", "AksharaModel"]
