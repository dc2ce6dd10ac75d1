"""The Akshara model against an independent forward written from the spec, and its transformers behaviour."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from model_fixtures import TINY_NANOCHAT, TINY_NANOCHAT_2026, tiny_akshara
from reference_nanochat import nanochat_forward
from transformers import AutoModelForCausalLM, CompileConfig, pipeline

from akshara_hf import AksharaConfig, AksharaForCausalLM

REPO = Path(__file__).resolve().parents[1]


def test_depth_rule_gives_d20_shape():
    config = AksharaConfig.from_depth(20)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.head_dim) == (20, 1280, 10, 128)
    assert (config.num_key_value_heads, config.intermediate_size, config.vocab_size) == (10, 5120, 65536)
    with torch.device("meta"):
        n_params = sum(p.numel() for p in AksharaForCausalLM(config).parameters())
    assert 555e6 < n_params < 565e6  # the "~560M" d20


def test_config_from_nanochat_rejects_newer_architecture_fields():
    with pytest.raises(ValueError, match=r"fields this architecture does not have: \['n_expert'\]"):
        AksharaConfig.from_nanochat({**TINY_NANOCHAT, "window_pattern": "SSSL", "n_expert": 8})
    for pattern in ("SXL", "", 4):
        with pytest.raises(ValueError, match="window_pattern must be a non-empty string of S and L"):
            AksharaConfig.from_nanochat({**TINY_NANOCHAT, "window_pattern": pattern})
    with pytest.raises(ValueError, match="n_kv_head"):
        AksharaConfig.from_nanochat({k: v for k, v in TINY_NANOCHAT.items() if k != "n_kv_head"})


TINY_CONFIG = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden_size", "64"),  # a string from a hand-edited config.json
        ("hidden_size", 64.0),
        ("num_hidden_layers", True),  # bools are not ints here
        ("num_hidden_layers", 0),
        ("num_hidden_layers", -1),
        ("num_attention_heads", 0),
        ("num_attention_heads", 3),  # 64 not divisible by 3
        ("num_key_value_heads", 3),  # 4 query heads not divisible by 3
        ("num_key_value_heads", 0),
        ("hidden_size", -64),
        ("vocab_size", 0),
        ("max_position_embeddings", 0),
        ("intermediate_size", 0),
        ("head_dim", 8),  # disagrees with hidden_size // num_attention_heads
        ("final_logit_softcapping", 0),  # must not silently switch the softcap off
        ("final_logit_softcapping", -15.0),
        ("final_logit_softcapping", float("inf")),
        ("rms_norm_eps", 0.0),
        ("rotary_cache_factor", 0),
        ("attention_dropout", 1.5),
        ("tie_word_embeddings", True),
        ("rope_parameters", {"rope_type": "default", "rope_theta": 0.0}),
        ("rope_parameters", {"rope_type": "no-such-rope", "rope_theta": 10000.0}),
        ("rope_theta", "10000"),  # legacy key, still validated
        ("rope_parameters", {"rope_type": "linear"}),  # no factor
        ("rope_parameters", {"rope_type": "linear", "factor": 0.5}),  # transformers only warns
        ("rope_parameters", {"rope_type": "llama3", "factor": 8.0}),  # transformers raises a KeyError
        ("rope_parameters", {"rope_type": "longrope", "factor": 2.0}),  # not implemented here
        ("hidden_size", {"hidden_size": 72, "num_attention_heads": 8}),  # head_dim 9: odd, rotary needs even
    ],
)
def test_config_refuses_impossible_values_with_one_line_error_naming_the_field(field, value):
    overrides = value if isinstance(value, dict) and field != "rope_parameters" else {field: value}
    with pytest.raises(ValueError) as error:
        AksharaConfig(**{**TINY_CONFIG, **overrides})
    message = str(error.value)
    assert "\n" not in message and message.startswith("AksharaConfig: ")
    assert field.split("_theta")[0] in message, message


def test_config_derives_sizes_and_accepts_null_softcap():
    config = AksharaConfig(**TINY_CONFIG, final_logit_softcapping=None)
    assert (config.head_dim, config.intermediate_size, config.final_logit_softcapping) == (16, 256, None)
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    assert AksharaConfig(**{**TINY_CONFIG, "num_key_value_heads": None}).num_key_value_heads == 4
    assert AksharaConfig(**TINY_CONFIG, final_logit_softcapping=15).final_logit_softcapping == 15  # int from JSON


def test_broken_config_json_fails_from_pretrained_with_the_field_named(tmp_path):
    model, _ = tiny_akshara()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for field, value in (("num_attention_heads", 0), ("hidden_size", "64"), ("final_logit_softcapping", 0)):
        (tmp_path / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(ValueError, match=f"AksharaConfig: .*{field}"):
            AutoModelForCausalLM.from_pretrained(tmp_path)


def test_legacy_folder_with_rope_theta_loads_with_identical_logits(tmp_path):
    """Folders written before `rope_parameters` carry a top-level `rope_theta`; they load unchanged."""
    model, _ = tiny_akshara()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.pop("rope_parameters") == {"rope_type": "default", "rope_theta": 10000.0}
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_theta": 10000.0}))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    assert "rope_theta" not in loaded.config.to_dict()
    idx = torch.randint(0, 300, (2, 30), generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        assert torch.equal(loaded(idx).logits, model(idx).logits)
    # a non-default legacy theta is kept, not replaced by the default
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_theta": 500.0}))
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.rope_parameters["rope_theta"] == 500.0


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_match_reference_forward_fp32(attn):
    model, state = tiny_akshara()
    model.config._attn_implementation = attn
    idx = torch.randint(0, TINY_NANOCHAT["vocab_size"], (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(idx).logits
    reference = nanochat_forward(state, TINY_NANOCHAT, idx)
    assert ours.dtype == torch.float32 and ours.shape == reference.shape
    assert (ours - reference).abs().max().item() <= 1e-5


def test_rotary_tables_are_bf16_rounded_and_needed_for_parity():
    model, state = tiny_akshara()
    cos = model.transformer.rotary_emb.cos
    assert cos.dtype == torch.bfloat16 and cos.shape == (10 * 64, 8)
    idx = torch.randint(0, 300, (1, 60), generator=torch.Generator().manual_seed(2))
    reference = nanochat_forward(state, TINY_NANOCHAT, idx)
    # fp32 tables (what native transformers uses) are measurably different: the bf16 rounding is what gives 1e-5.
    model.transformer.rotary_emb.cos = model.transformer.rotary_emb.cos.float() + 1e-3
    with torch.no_grad():
        assert (model(idx).logits - reference).abs().max().item() > 1e-4


ROPE_SCALINGS = [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "yarn", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
]


@pytest.mark.parametrize("rope", ROPE_SCALINGS, ids=lambda rope: rope["rope_type"])
def test_rope_scaling_tables_are_transformers_own_rounded_to_bf16(rope):
    """Each scaling's cos/sin (yarn's attention factor included) equal transformers' native rotary for the same
    `rope_parameters` up to the bf16 rounding of the tables; positions run past max_position_embeddings (64), where
    dynamic NTK rescales its base."""
    from akshara_hf.conversion.convert import akshara_to_native

    model, _ = tiny_akshara(rope_parameters=dict(rope))
    default, _ = tiny_akshara()
    native = akshara_to_native(model)
    positions = torch.arange(0, 200)[None]
    x = torch.zeros(1, 1, 64)
    with torch.no_grad():
        rotaries = (model.transformer.rotary_emb, native.model.rotary_emb, default.transformer.rotary_emb)
        ours, reference, unscaled = (rotary(x, positions) for rotary in rotaries)
    for table, ref, plain in zip(ours, reference, unscaled):  # first halves: the second holds -sin here, +sin there
        assert (table[0, :, :8] - ref[0, :, :8]).abs().max().item() <= 2**-8  # bf16 rounding of values up to ~1.2
        assert (table - plain).abs().max().item() > 0.05  # the scaling changed the tables
    # the model runs with it in fp32 and bf16 (bf16 tables in a bf16 forward), and generates
    idx = torch.randint(0, 300, (2, 80), generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        fp32 = model(idx).logits
        bf16 = model.to(torch.bfloat16)(idx).logits
    assert torch.isfinite(bf16).all() and (bf16 - fp32).abs().max().item() < 0.35
    generated = model.generate(idx[:1, :70], max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=1)
    assert generated.shape == (1, 74)


def test_rope_scaling_round_trips_through_the_native_export():
    from akshara_hf.conversion.convert import akshara_to_native, native_to_akshara

    model, _ = tiny_akshara(rope_parameters={"rope_type": "yarn", "factor": 4.0})
    back = native_to_akshara(akshara_to_native(model))
    assert back.config.rope_parameters == model.config.rope_parameters
    idx = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        assert torch.equal(back(idx).logits, model(idx).logits)


def test_rope_scaling_round_trips_through_a_saved_folder(tmp_path):
    model, _ = tiny_akshara(rope_parameters={"rope_type": "yarn", "factor": 4.0})
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.rope_parameters == model.config.rope_parameters
    assert torch.equal(loaded.transformer.rotary_emb.cos, model.transformer.rotary_emb.cos)


def test_labels_loss_is_shifted_cross_entropy_with_ignore_index():
    model, _ = tiny_akshara()
    idx = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(3))
    labels = idx.clone()
    labels[0, :5] = -100
    out = model(idx, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 300)
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_kv_cache_decoding_equals_full_recomputation():
    model, _ = tiny_akshara()
    idx = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(idx).logits
        out = model(idx[:, :8], use_cache=True)
        steps = [out.logits]
        cache = out.past_key_values
        for t in range(8, 20):
            out = model(idx[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
    assert (torch.cat(steps, 1) - full).abs().max().item() < 1e-5
    # and generate() with its cache gives the same greedy tokens as argmax over full recomputation
    prompt = idx[:1, :5]
    generated = model.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=1)
    manual = prompt
    for _ in range(10):
        with torch.no_grad():
            manual = torch.cat([manual, model(manual).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(generated, manual)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_left_padded_batched_generation_equals_one_by_one(attn):
    model, _ = tiny_akshara()
    model.config._attn_implementation = attn
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(2, 300, (n,), generator=g) for n in (3, 9, 6)]
    width = max(len(p) for p in prompts)
    input_ids = torch.stack([torch.cat([torch.full((width - len(p),), 1), p]) for p in prompts])
    attention_mask = torch.stack([torch.cat([torch.zeros(width - len(p)), torch.ones(len(p))]) for p in prompts]).long()
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=1)
    batched = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[:, width:]
    for row, prompt in enumerate(prompts):
        single = model.generate(prompt[None], **kwargs)[0, len(prompt) :]
        assert torch.equal(batched[row], single), row


def test_eager_and_sdpa_agree_with_padding_mask():
    model, _ = tiny_akshara()
    idx = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(6))
    mask = torch.ones_like(idx)
    mask[0, :4] = 0
    outs = {}
    for attn in ("eager", "sdpa"):
        model.config._attn_implementation = attn
        with torch.no_grad():
            outs[attn] = model(idx, attention_mask=mask).logits
    assert (outs["eager"][:, 4:] - outs["sdpa"][:, 4:]).abs().max().item() < 1e-5


def test_gradient_checkpointing_gives_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model, _ = tiny_akshara()
        model.train()
        if checkpointing:
            # 5.23's name; 5.16.1 (our lowest) calls it gradient_checkpointing_enable
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        idx = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(7))
        model(idx, labels=idx).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bf16_forward_close_to_fp32():
    model, _ = tiny_akshara()
    idx = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        fp32 = model(idx).logits
        bf16 = model.to(torch.bfloat16)(idx).logits
    assert bf16.dtype == torch.float32  # logits are cast to fp32 before the softcap
    assert model.transformer.rotary_emb.cos.dtype == torch.bfloat16
    assert (bf16 - fp32).abs().max().item() < 0.35


def test_save_load_restores_rotary_tables_and_outputs(tmp_path):
    model, _ = tiny_akshara()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, AksharaForCausalLM)
    assert torch.equal(loaded.transformer.rotary_emb.cos, model.transformer.rotary_emb.cos)
    assert torch.equal(loaded.transformer.rotary_emb.sin, model.transformer.rotary_emb.sin)
    idx = torch.randint(0, 300, (1, 10), generator=torch.Generator().manual_seed(9))
    kwargs = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=1)
    assert torch.equal(loaded.generate(idx, **kwargs), model.generate(idx, **kwargs))


def test_packed_position_ids_keep_sequences_apart():
    model, _ = tiny_akshara()
    g = torch.Generator().manual_seed(10)
    a, b = torch.randint(0, 300, (1, 7), generator=g), torch.randint(0, 300, (1, 5), generator=g)
    packed = torch.cat([a, b], 1)
    position_ids = torch.cat([torch.arange(7), torch.arange(5)])[None]
    with torch.no_grad():
        together = model(packed, position_ids=position_ids, use_cache=False).logits  # training-style call
        separate = torch.cat([model(a).logits, model(b).logits], 1)
    assert (together - separate).abs().max().item() < 1e-5


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_batch_from_trl_collator_matches_separate_sequences(attn, monkeypatch):
    """TRL's padding-free collator output (one row, `cu_seq_lens_*`): SDPA runs one causal attention per sequence
    (not one over the row with a block-diagonal mask), eager uses the mask; both give each sequence's own loss/grads."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, _ = tiny_akshara()  # GQA: 4 query heads share 2 key/value heads
    model.set_attn_implementation(attn)
    g = torch.Generator().manual_seed(11)
    rows = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (7, 1, 12, 5)]
    batch = DataCollatorForLanguageModeling(pad_token_id=1, padding_free=True)([{"input_ids": r} for r in rows])
    assert batch["cu_seq_lens_q"].tolist() == [0, 7, 8, 20, 25]

    lengths = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda q, *a, **k: lengths.append(q.shape[2]) or sdpa(q, *a, **k)
    )
    together = model(**batch, use_cache=False)
    together.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    assert lengths == ([7, 1, 12, 5] * len(model.transformer.h) if attn == "sdpa" else [])

    model.zero_grad()
    logits = [model(torch.tensor([r])).logits for r in rows]
    loss = sum(
        torch.nn.functional.cross_entropy(x[0, :-1], torch.tensor(r[1:], dtype=torch.long), reduction="sum")
        for x, r in zip(logits, rows)
    ) / sum(len(r) - 1 for r in rows)
    loss.backward()
    assert (together.logits - torch.cat(logits, 1)).abs().max().item() < 1e-5
    assert abs(together.loss.item() - loss.item()) < 1e-5
    for p, grad in zip(model.parameters(), grads):
        assert torch.allclose(grad, p.grad, atol=1e-5, rtol=1e-4)


def test_position_beyond_rotary_tables_is_a_clear_error():
    model, _ = tiny_akshara()
    with pytest.raises(ValueError, match="beyond the rotary tables"):
        model(torch.zeros(1, 1, dtype=torch.long), position_ids=torch.tensor([[640]]))


def test_generate_refuses_a_length_past_the_rotary_tables_before_decoding():
    model, _ = tiny_akshara()  # 10 x 64 = 640 positions
    prompt = torch.zeros(1, 600, dtype=torch.long)
    with pytest.raises(ValueError, match="641 positions, beyond the rotary tables"):
        model.generate(prompt, max_new_tokens=41, do_sample=False, eos_token_id=None, pad_token_id=1)
    assert model.generate(prompt, max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=1).shape[1] == 640


def _compile_config():
    """fullgraph: any graph break (a host sync, data-dependent Python) fails the test. The "eager" backend traces the
    whole forward as inductor would but skips code generation, which keeps the test quick; inductor's own output
    is torch's to test (bench/README.md has the compiled speed)."""
    config = CompileConfig(fullgraph=True, dynamic=False, backend="eager")
    config._compile_all_devices = True  # generate compiles only on accelerators unless told
    return config


def _tiny_2026_full_attention():
    """nanochat 2026 (value embeddings, resid/x0 lambdas, smear, backout, fp32 tables) with every layer full-width.
    Sliding windows are left out: transformers' static sliding-window cache layer branches on a Python int of the
    filled length, so it recompiles per token until the window is full (fullgraph hits the recompile limit)."""
    from reference_nanochat import random_nanochat_state

    from akshara_hf.conversion.convert import nanochat_state_to_akshara

    shape = {**TINY_NANOCHAT_2026, "window_pattern": "L"}
    config = AksharaConfig.from_nanochat(shape, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    model = AksharaForCausalLM(config)
    model.load_state_dict(nanochat_state_to_akshara(random_nanochat_state(shape), config), strict=True)
    return model.eval()


@pytest.mark.parametrize("variant", ["default", "dynamic", "nanochat2026"])
def test_static_cache_compiled_generate_equals_eager_greedy_with_left_padding(variant):
    """Dynamic NTK builds its tables in the forward from the length as a tensor: that must compile too; so must the
    2026 architecture's extra paths."""
    if variant == "nanochat2026":
        model = _tiny_2026_full_attention()
    else:
        dynamic = {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}
        model, _ = tiny_akshara(**(dynamic if variant == "dynamic" else {}))
    assert model._can_compile_fullgraph
    input_ids = torch.randint(2, 300, (2, 9), generator=torch.Generator().manual_seed(13))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :4] = 0
    kwargs = dict(attention_mask=attention_mask, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=1)
    eager = model.generate(input_ids, **kwargs)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = model.generate(input_ids, cache_implementation="static", compile_config=_compile_config(), **kwargs)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the decoding steps ran compiled
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch.equal(compiled, eager)


@pytest.mark.slow  # ~40 s quiet: inductor compiles with max-autotune
def test_frozen_compiled_decoding_equals_eager_through_new_caches():
    """`CompileConfig(options={"freezing": True, ...})`: the weights become constants of the decoding graph, so that
    inductor's own CPU GEMMs can pack them (bench/README.md). Freezing is decided when dynamo traces, and it would also
    bake in transformers' StaticCache tensors (static addresses): a second `generate` with a new cache then wrote into
    the first one (an index error in the kernel, or wrong tokens). Three new caches, one graph, eager's tokens."""
    from transformers import StaticCache

    model, _ = tiny_akshara()
    # max-autotune (the bench's setting) left out: it only picks kernels, and its benchmarking takes a minute here
    config = CompileConfig(fullgraph=True, dynamic=False, mode=None, options={"freezing": True})
    config._compile_all_devices = True
    kwargs = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=1)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for seed in range(3):
        input_ids = torch.randint(2, 300, (1, 9), generator=torch.Generator().manual_seed(seed))
        eager = model.generate(input_ids, **kwargs)
        cache = StaticCache(config=model.config, max_cache_len=21)
        assert torch.equal(model.generate(input_ids, past_key_values=cache, compile_config=config, **kwargs), eager)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # the same graph served each new cache
    # dynamo traced with the weights frozen (a guarded static address), not as inputs as `options` alone gives
    assert getattr(model.lm_head.weight, "_dynamo_static_input_type", None) == "guarded"
    # weights changed in place keep their addresses (no guard fails): the next generate compiles them again
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.5)
    eager = model.generate(input_ids, **kwargs)
    cache = StaticCache(config=model.config, max_cache_len=21)
    assert torch.equal(model.generate(input_ids, past_key_values=cache, compile_config=config, **kwargs), eager)
    torch._dynamo.reset()


def test_compiled_static_cache_generation_through_pipeline(converted_folder):
    chat = pipeline("text-generation", model=str(converted_folder))
    messages = [{"role": "user", "content": "తెలుగు గురించి చెప్పండి"}]
    kwargs = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False)
    eager = chat(messages, **kwargs)[0]["generated_text"][-1]["content"]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = chat(messages, cache_implementation="static", compile_config=_compile_config(), **kwargs)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert compiled[0]["generated_text"][-1]["content"] == eager


def test_tp_plan_names_existing_linears_and_splits_heads():
    model, _ = tiny_akshara()
    modules = dict(model.named_modules())
    for pattern, style in model.tp_plan.items():
        matches = [name for name in modules if re.fullmatch(pattern.replace(".", r"\.").replace("*", r"\d+"), name)]
        kind = torch.nn.Embedding if style.startswith("embedding") else torch.nn.Linear
        assert matches and all(isinstance(modules[name], kind) for name in matches), pattern
        assert style in ("colwise", "rowwise", "colwise_gather_output", "embedding_rowwise")
    assert {"lm_head", "transformer.h.*.attn.c_q", "transformer.h.*.mlp.c_proj"} <= set(model.tp_plan)
    assert set(model.config.base_model_pp_plan) <= {name for name, _ in model.transformer.named_children()}


def _tiny_2026_for_tp():
    torch.manual_seed(0)  # nanochat 2026 (value embeddings on layers 1 and 3), every weight random
    config = AksharaConfig.from_nanochat(TINY_NANOCHAT_2026, initializer_range=0.05)
    return AksharaForCausalLM(config).eval()


# halves of c_q (64, 64), c_proj (64, 64), c_fc (256, 64) and of the 300-token vocabulary; nanochat 2026's attention
# stays whole on every rank (its value embeddings are added to all value heads; see AksharaConfig.__post_init__)
TP_SHARDS = {
    "late-2025": {"c_q": (32, 64), "c_proj": (64, 32), "c_fc": (128, 64), "wte": (150, 64)},
    "2026": {"c_q": (64, 64), "c_proj": (64, 64), "c_fc": (128, 64), "wte": (150, 64)},
}


@pytest.mark.parametrize("generation", ["late-2025", "2026"])
def test_tensor_parallel_on_two_cpu_processes_gives_the_unsharded_logits(tmp_path, generation):
    """`from_pretrained(..., distributed_config=DistributedConfig(tp_plan="auto"))` (the current spelling of
    `tp_plan="auto"`) on 2 gloo processes: heads, MLP columns and the vocabulary split in half, same logits."""
    model = tiny_akshara()[0] if generation == "late-2025" else _tiny_2026_for_tp()
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "tp.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "tests" / "tp_script.py"), str(tmp_path / "model"), str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0 and out.exists(), result.stderr[-3000:]
    got = torch.load(out)
    assert got["world_size"] == 2
    assert got["shards"] == TP_SHARDS[generation]
    idx = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(idx).logits
    # the row-parallel projections sum their halves with an all-reduce: fp32 rounding moves, nothing else
    assert (got["logits"] - expected).abs().max().item() < 1e-4


def test_saved_folder_loads_with_remote_code_where_package_is_missing(tmp_path):
    model, _ = tiny_akshara()
    model.save_pretrained(tmp_path / "model")
    assert {"configuration_akshara.py", "modeling_akshara.py"} <= set(os.listdir(tmp_path / "model"))
    expected = model(torch.arange(10)[None]).logits[0, -1, :5].tolist()
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["akshara_hf"] = None  # `import akshara_hf` now fails, as on a machine without the package
        try:
            import akshara_hf
            raise SystemExit("akshara_hf importable")
        except ImportError:
            pass
        import torch
        from transformers import AutoModelForCausalLM, CompileConfig, pipeline
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        print(model(torch.arange(10)[None]).logits[0, -1, :5].tolist())
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    got = eval(result.stdout.strip().splitlines()[-1])
    assert max(abs(x - y) for x, y in zip(got, expected)) < 1e-6


def test_the_cache_under_its_new_name_is_used():
    """transformers 5.24+ `generate` passes the cache as `cache=`: ignored, each decoding step saw only its own token."""
    model, _ = tiny_akshara()
    idx = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(idx).logits
        out = model(idx[:, :8], use_cache=True)
        step = model(idx[:, 8:9], cache=out.past_key_values, use_cache=True)
    assert (step.logits[:, -1] - full[:, 8]).abs().max().item() < 1e-5
