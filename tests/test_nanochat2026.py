"""nanochat 2026 (value embeddings, sliding windows, lambdas, smear, backout): the independent reference against
numbers from nanochat's own code, then conversion, the model, generation and the round trip against the reference."""

import json
from pathlib import Path

import torch
from model_fixtures import FP32_LOGITS_ATOL, TINY_NANOCHAT_2026
from reference_nanochat import greedy, left_windows, nanochat_forward, random_nanochat_state

NANOCHAT_DATA = json.loads((Path(__file__).parent / "data" / "nanochat2026_reference.json").read_text())


def test_reference_forward_and_greedy_equal_nanochat_2026_outputs():
    """tests/data/nanochat2026_reference.json holds nanochat 2026's GPT logits and Engine tokens for this model
    (script beside it): positions before, at and past the short window (129 keys) and the long one (257)."""
    data = NANOCHAT_DATA
    assert data["model_config"] == TINY_NANOCHAT_2026 and left_windows(TINY_NANOCHAT_2026) == [128, 128, 128, 256]
    state = random_nanochat_state(TINY_NANOCHAT_2026, seed=data["state_seed"], embedding_dtype=torch.bfloat16)
    idx = torch.randint(0, 300, (1, data["idx_len"]), generator=torch.Generator().manual_seed(data["idx_seed"]))
    logits = nanochat_forward(state, TINY_NANOCHAT_2026, idx)[0, data["positions"]]
    assert (logits - torch.tensor(data["logits"])).abs().max() <= FP32_LOGITS_ATOL
    prompt = idx[0, : data["prompt_len"]].tolist()
    assert greedy(state, TINY_NANOCHAT_2026, prompt, 15) == data["engine_greedy"][:15]  # 135 tokens: past 129


# ---- conversion and the model --------------------------------------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import pytest  # noqa: E402
from model_fixtures import make_nanochat_run  # noqa: E402
from transformers import AutoModelForCausalLM, pipeline  # noqa: E402

from akshara_hf import AksharaConfig, AksharaForCausalLM  # noqa: E402
from akshara_hf.cli import main as cli  # noqa: E402
from akshara_hf.conversion.convert import convert_nanochat, export_nanochat, nanochat_state_to_akshara  # noqa: E402
from akshara_hf.errors import AksharaError  # noqa: E402
from akshara_hf.model.modeling_akshara import AksharaCache  # noqa: E402


def model_2026(state=None, **overrides):
    """An Akshara 2026 model with the weights of `state` (default: the pinned nanochat data's model), fp32."""
    state = state if state is not None else random_nanochat_state(TINY_NANOCHAT_2026, seed=5, embedding_dtype=torch.bfloat16)
    config = AksharaConfig.from_nanochat(TINY_NANOCHAT_2026, bos_token_id=0, eos_token_id=299, pad_token_id=299)
    for name, value in overrides.items():
        setattr(config, name, value)
    model = AksharaForCausalLM(config)
    full = AksharaConfig.from_nanochat(TINY_NANOCHAT_2026)
    weights = {k: v.float() for k, v in nanochat_state_to_akshara(state, full).items()}
    model.load_state_dict({k: v for k, v in weights.items() if k in model.state_dict()}, strict=False)
    return model.eval(), state


TINY_CONFIG_2025 = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def long_input(length=300, batch=2, seed=7):
    return torch.randint(0, 300, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def run_2026(tmp_path_factory):
    return make_nanochat_run(tmp_path_factory.mktemp("nanochat2026"), TINY_NANOCHAT_2026)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logits_match_reference_past_both_windows(attn):
    """300 tokens: past the short window (129 keys) and the long one (257) that nanochat 2026's L layers slide at."""
    model, state = model_2026()
    model.set_attn_implementation(attn)
    idx = long_input()
    with torch.no_grad():
        assert (model(idx).logits - nanochat_forward(state, TINY_NANOCHAT_2026, idx)).abs().max() <= FP32_LOGITS_ATOL


@pytest.mark.parametrize(
    "switch",
    [
        {"use_value_embeddings": False}, {"use_residual_lambdas": False}, {"use_smear": False},
        {"use_backout": False}, {"qk_scale": None}, {"layer_types": ["full_attention"] * 4}, {"full_attention_window": None},
        {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
    ],
    ids=lambda switch: next(iter(switch)),
)  # fmt: skip
def test_each_2026_feature_switched_off_alone_changes_the_logits(switch):
    """No parity test can pass with a feature silently ignored: each one, alone, moves the logits."""
    model, state = model_2026(**switch)
    idx = long_input()
    with torch.no_grad():
        assert (model(idx).logits - nanochat_forward(state, TINY_NANOCHAT_2026, idx)).abs().max() > 1e-3


def test_fp32_rotary_tables_are_the_2026_ones():
    model, _ = model_2026()
    assert model.transformer.rotary_emb.cos.dtype == torch.float32
    bf16, _ = model_2026(rotary_dtype="bfloat16")
    idx = long_input(60)
    with torch.no_grad():
        assert (model(idx).logits - bf16(idx).logits).abs().max() > 1e-4


def test_greedy_through_the_cache_equals_nanochats_engine_across_the_window_edge():
    """120-token prompt, 40 new tokens: decoding crosses the short window (129 keys) with the smear state, the
    sliding caches and the value embeddings all in play. Tokens from nanochat 2026's own Engine."""
    model, _ = model_2026()
    prompt = long_input(NANOCHAT_DATA["idx_len"], batch=1, seed=NANOCHAT_DATA["idx_seed"])[:, : NANOCHAT_DATA["prompt_len"]]
    new = len(NANOCHAT_DATA["engine_greedy"])
    out = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    assert out[0, prompt.shape[1]:].tolist() == NANOCHAT_DATA["engine_greedy"]


def test_left_padded_batch_decodes_as_each_prompt_alone():
    model, _ = model_2026()
    prompts = [long_input(125, 1, seed=1)[0], long_input(100, 1, seed=2)[0]]  # the first decodes past 129 keys
    alone = [model.generate(p[None], max_new_tokens=12, min_new_tokens=12, do_sample=False)[0, len(p):] for p in prompts]
    batch = torch.full((2, 125), 299)
    mask = torch.zeros(2, 125, dtype=torch.long)
    for row, p in enumerate(prompts):
        batch[row, 125 - len(p):], mask[row, 125 - len(p):] = p, 1
    together = model.generate(batch, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert together[0, 125:].tolist() == alone[0].tolist() and together[1, 125:].tolist() == alone[1].tolist()


def test_beam_search_and_sampling_run_and_the_cache_reorders_smear_state():
    model, _ = model_2026()
    prompt = long_input(130, 1)
    new = {"max_new_tokens": 8, "min_new_tokens": 8}  # the random model may say its eos (299) at any point
    beams = model.generate(prompt, num_beams=3, num_return_sequences=2, do_sample=False, **new)
    sampled = model.generate(prompt.expand(2, -1).contiguous(), attention_mask=torch.ones(2, 130, dtype=torch.long),
                             do_sample=True, top_k=20, temperature=0.8, **new)  # fmt: skip
    assert beams.shape == (2, 138) and sampled.shape == (2, 138)
    scores = model.generate(prompt, num_beams=3, do_sample=False, output_scores=True, return_dict_in_generate=True,
                            **new).sequences_scores  # fmt: skip
    assert torch.isfinite(scores).all()
    cache = AksharaCache(config=model.config)
    with torch.no_grad():
        model(long_input(20, 3), past_key_values=cache, use_cache=True)
    before = cache.smear_embedding.clone()
    cache.reorder_cache(torch.tensor([2, 0, 0]))
    assert torch.equal(cache.smear_embedding, before[[2, 0, 0]])


def test_packed_sequences_keep_smear_and_windows_apart():
    """TRL's padding-free rows: each sequence is smeared and windowed on its own (position ids reset)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, _ = model_2026()
    rows = [long_input(n, 1, seed=n)[0].tolist() for n in (150, 3, 140)]
    batch = DataCollatorForLanguageModeling(pad_token_id=299, padding_free=True)([{"input_ids": r} for r in rows])
    with torch.no_grad():
        separate = torch.cat([model(torch.tensor([r])).logits for r in rows], 1)
        for attn in ("sdpa", "eager"):
            model.set_attn_implementation(attn)
            assert (model(**batch, use_cache=False).logits - separate).abs().max() < 1e-5


SMEAR_REFUSED = "smear .*needs the previous token"


def test_a_token_without_its_predecessor_or_smear_state_is_refused():
    """What a runtime that calls the model without its cache does (vLLM's transformers backend): decode one token per
    request at position > 0, continue a cached prefix, or flatten requests into one row whose position ids restart
    anywhere but 0. Each would smear zeros in place of the previous token: refused, in one line naming smear."""
    model, _ = model_2026()
    idx = long_input(12, 1)
    with torch.no_grad():
        for call in (
            lambda: model(idx[:, -1:], position_ids=torch.tensor([[11]]), use_cache=False),  # a decode step
            lambda: model(idx[:, 5:], position_ids=torch.arange(5, 12)[None], use_cache=False),  # a cached prefix
            lambda: model(idx[:, -1:], position_ids=torch.tensor([[11]]), past_key_values=AksharaCache(config=model.config)),
            # a flattened batch: request A's prefill (0..5), then request B's decode token at 9
            lambda: model(idx[:, :7], position_ids=torch.tensor([[0, 1, 2, 3, 4, 5, 9]]), use_cache=False),
            # B's decode first, A's prefill after it (vLLM schedules running requests first)
            lambda: model(idx[:, :7], position_ids=torch.tensor([[9, 0, 1, 2, 3, 4, 5]]), use_cache=False),
        ):
            with pytest.raises(ValueError, match=SMEAR_REFUSED):
                call()


@pytest.mark.slow
def test_a_compiled_model_refuses_the_same_way():
    """vLLM compiles the model (dynamo + inductor), where a Python `if` on a tensor cannot stand: the check is a graph
    assertion there, raising the same line when the compiled forward runs. (Traced by dynamo whole; aot_eager spares
    the C++ build, and tests/test_vllm.py runs inductor's kernel through vLLM.)"""
    model, _ = model_2026()
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="aot_eager")
    idx = long_input(8, 1)
    with torch.no_grad():
        compiled(idx, position_ids=torch.arange(8)[None], use_cache=False)  # a prefill from 0 passes
        with pytest.raises(RuntimeError, match=SMEAR_REFUSED):
            compiled(idx, position_ids=torch.arange(3, 11)[None], use_cache=False)


def test_smear_still_runs_where_every_predecessor_is_at_hand():
    """Packed prefill rows (restarts at 0), left padding, and decoding from a cache that holds the smear state."""
    model, _ = model_2026()
    idx = long_input(12, 1)
    with torch.no_grad():
        whole = model(idx).logits
        packed = model(torch.cat([idx, idx], 1), position_ids=torch.arange(12).repeat(2)[None], use_cache=False).logits
        assert (packed[:, :12] - whole).abs().max() < 1e-5 and (packed[:, 12:] - whole).abs().max() < 1e-5
        padded = torch.cat([torch.full((1, 3), 299), idx], 1)
        mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 12, dtype=torch.long)], 1)
        positions = torch.cat([torch.ones(1, 3, dtype=torch.long), torch.arange(12)[None]], 1)  # as generate fills them
        left = model(padded, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, 3:]
        assert (left - whole).abs().max() < 1e-4
        cache = AksharaCache(config=model.config)
        model(idx[:, :11], past_key_values=cache, use_cache=True)
        step = model(idx[:, 11:], position_ids=torch.tensor([[11]]), past_key_values=cache, use_cache=True).logits
        assert (step[:, -1] - whole[:, -1]).abs().max() < 1e-4


def test_late_2025_models_need_no_predecessor_state():
    """Without smear a cacheless decode step is exact (what makes a late-2025 folder servable by vLLM)."""
    model, _ = model_2026(use_smear=False)
    idx = long_input(12, 1)
    with torch.no_grad():
        model(idx[:, -1:], position_ids=torch.tensor([[11]]), use_cache=False)


def test_value_embeddings_need_input_ids():
    model, _ = model_2026()
    with pytest.raises(ValueError, match="value embeddings.*input_ids"):
        model(inputs_embeds=torch.zeros(1, 4, 64))


def test_converted_2026_checkpoint_matches_reference_and_loads_with_remote_code_alone(run_2026, tmp_path):
    base, checkpoints, states = run_2026
    out = convert_nanochat(checkpoints, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["layer_types"][-1] == "full_attention" and config["sliding_window"] == 129
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32 and model.config.nanochat_generation == "2026"
    idx = long_input(200)  # past the short window
    with torch.no_grad():
        expected = nanochat_forward(states[200], TINY_NANOCHAT_2026, idx)
        assert (model(idx).logits - expected).abs().max() <= FP32_LOGITS_ATOL
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["akshara_hf"] = None
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        idx = torch.load({str(tmp_path / "idx.pt")!r})
        with torch.no_grad():
            torch.save(model(idx).logits, {str(tmp_path / "logits.pt")!r})
        """
    )
    torch.save(idx, tmp_path / "idx.pt")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (torch.load(tmp_path / "logits.pt") - expected).abs().max() <= FP32_LOGITS_ATOL
    chat = pipeline("text-generation", model=str(out))
    reply = chat([{"role": "user", "content": "తెలుగు గురించి చెప్పండి"}], max_new_tokens=6, do_sample=False)
    assert reply[0]["generated_text"][-1]["role"] == "assistant"


def test_round_trip_2026_is_bit_identical(run_2026, tmp_path):
    base, checkpoints, states = run_2026
    folder = convert_nanochat(checkpoints, tmp_path / "hf")
    out = export_nanochat(folder, tmp_path / "back")
    exported = torch.load(out / "model_000200.pt", weights_only=True)
    original = states[200]
    assert set(exported) == set(original)
    assert exported["transformer.wte.weight"].dtype == exported["value_embeds.3.weight"].dtype == torch.bfloat16
    assert exported["value_embeds.1.weight"].shape == (320, 32)  # padded vocab rows back
    for key, tensor in original.items():
        assert exported[key].dtype == tensor.dtype and torch.equal(exported[key], tensor), key
    assert json.loads((out / "meta_000200.json").read_text()) == json.loads((checkpoints / "meta_000200.json").read_text())


def test_export_native_refuses_a_2026_model_in_one_line(run_2026, tmp_path, capsys):
    _, checkpoints, _ = run_2026
    folder = convert_nanochat(checkpoints, tmp_path / "hf")
    assert cli(["export-native", str(folder), str(tmp_path / "native")]) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot represent a nanochat 2026 model" in errors[0]
    assert not (tmp_path / "native").exists()


def test_a_config_mixing_the_generations_cannot_be_exported_to_nanochat(tmp_path):
    config = AksharaConfig.from_nanochat(TINY_NANOCHAT_2026)
    config.qk_scale = 1.0
    with pytest.raises(ValueError, match=r"no nanochat architecture has these settings: \['qk_scale'\]"):
        config.to_nanochat()
    mixed = AksharaConfig(**{**TINY_CONFIG_2025, "use_smear": True})
    with pytest.raises(ValueError, match=r"settings: \[.*'use_value_embeddings'"):
        mixed.to_nanochat()
    model = AksharaForCausalLM(mixed)
    model.save_pretrained(tmp_path / "mixed")
    with pytest.raises(AksharaError, match="mixed: AksharaConfig: no nanochat architecture"):
        export_nanochat(tmp_path / "mixed", tmp_path / "out")


def test_a_new_2026_model_gets_nanochat_2026s_init():
    model, _ = model_2026()
    model = AksharaForCausalLM(model.config)
    backbone, n = model.transformer, model.config.num_hidden_layers
    steps = torch.arange(n) / (n - 1)
    assert torch.allclose(backbone.resid_lambdas, 1.15 - 0.10 * steps) and torch.allclose(backbone.x0_lambdas, 0.20 - 0.15 * steps)
    assert backbone.smear_lambda.item() == 0.0 and backbone.backout_lambda.item() == pytest.approx(0.2)
    assert 0.7 < backbone.wte.weight.std() < 0.9 and 0.0008 < model.lm_head.weight.std() < 0.0012
    bound = 3**0.5 / 8  # sqrt(3) / sqrt(n_embd)
    assert not backbone.h[0].attn.c_proj.weight.any() and not backbone.h[0].mlp.c_proj.weight.any()
    assert 0.9 * bound < backbone.h[0].attn.c_q.weight.abs().max() <= bound
    assert 0.9 * 0.4 * bound < backbone.h[0].mlp.c_fc.weight.abs().max() <= 0.4 * bound
    for gate in (backbone.smear_gate.weight, backbone.h[3].attn.ve_gate.weight):
        assert 0 <= gate.min() and gate.max() <= 0.02


def test_tiny_2026_recipe_is_chat_sft_of_a_nanochat_2026_checkpoint(tmp_path, capsys):
    """training/recipes/tiny-sft-2026.yaml on a nanochat 2026 checkpoint with its optimizer state: converted, the
    optimizer warm-started, one epoch of chat_sft's packed rows by data progress."""
    from model_fixtures import random_nanochat_optimizer, save_nanochat_optimizer

    from akshara_hf.training.run import main as run_main

    _, checkpoints, states = make_nanochat_run(tmp_path / "nanochat", TINY_NANOCHAT_2026)
    save_nanochat_optimizer(checkpoints, 200, random_nanochat_optimizer(states[200]), world=2)
    recipe = Path(__file__).resolve().parents[1] / "training" / "recipes" / "tiny-sft-2026.yaml"
    argv = sys.argv
    sys.argv = ["sft.py", "--config", str(recipe), "--model_name_or_path", str(checkpoints),
                "--output_dir", str(tmp_path / "run")]  # fmt: skip
    try:
        assert run_main(script="sft.py") == 0, capsys.readouterr().err[-2000:]
    finally:
        sys.argv = argv
    err = capsys.readouterr().err
    assert f"warm-started the optimizer state of {len(states[200]) - 0} tensors" in err, err[-2000:]
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in logs if "loss" in entry]
    assert len(losses) > 4 and losses[-1] < losses[0] - 0.5, losses  # one epoch of packed rows, 2 per step
    progress = [entry["progress"] for entry in logs if "progress" in entry]
    assert len(progress) == len(losses) and progress[-1] == 1.0 and progress == sorted(progress) and progress[0] < 0.2
    assert [entry["lrm"] for entry in logs if "lrm" in entry][-1] == 0.0
    assert [entry["muon_momentum"] for entry in logs if "lrm" in entry][:2] == pytest.approx([0.85, 0.85 + 0.1 / 300])
    first = next(entry for entry in logs if "lr/x0_lambdas" in entry)
    assert first["lr/x0_lambdas"] == pytest.approx(0.5 * 0.8) and first["lr/scalars"] == pytest.approx(0.2 * 0.8)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    assert model.config.nanochat_generation == "2026" and model.config.sliding_window == 129


def test_warm_start_is_refused_before_any_work_without_an_optimizer_state(run_2026, tmp_path, capsys):
    from akshara_hf.training.run import main as run_main

    _, checkpoints, _ = run_2026  # no optim_*.pt
    recipe = Path(__file__).resolve().parents[1] / "training" / "recipes" / "tiny-sft-2026.yaml"
    for extra, message in (
        (["--model_name_or_path", str(checkpoints)], "has no optim_000200_rank*.pt"),
        (["--model_config", "{depth: 2, window_pattern: L}", "--tokenizer_name_or_path", "data/samples/tokenizer"],
         "a new model (model_config) has no optimizer state"),
    ):
        argv = sys.argv
        sys.argv = ["sft.py", "--config", str(recipe), "--output_dir", str(tmp_path / "run"), *extra]
        try:
            assert run_main(script="sft.py") == 2
        finally:
            sys.argv = argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "run" / "converted_base").exists()
