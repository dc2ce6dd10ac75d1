"""akshara_hf.training.optim: nanochat's parameter split, the Muon + AdamW wrapper and the schedules."""

import io

import pytest
import torch
from torch import nn

from akshara_hf import AksharaConfig, AksharaForCausalLM
from akshara_hf.errors import AksharaError
from akshara_hf.training.optim import (
    MuonAdamW,
    mid_lr_multiplier,
    muon_momentum,
    sft_lr_multiplier,
    split_parameters,
)


def tiny_model():
    torch.manual_seed(0)
    return AksharaForCausalLM(
        AksharaConfig(
            vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128,
        )
    )  # fmt: skip


def test_split_puts_block_matrices_in_muon_and_the_rest_in_adamw():
    groups = split_parameters(tiny_model())
    expected_muon = [
        f"transformer.h.{i}.{module}.weight"
        for i in range(2)
        for module in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    assert [name for name, _ in groups["muon"]] == expected_muon
    assert [name for name, _ in groups["embedding"]] == ["transformer.wte.weight"]
    assert [name for name, _ in groups["unembedding"]] == ["lm_head.weight"]
    assert groups["other"] == []


def test_learning_rates_are_nanochats_scaled_by_width():
    optimizer = MuonAdamW.from_model(tiny_model(), init_lr_frac=0.02)
    scale = (64 / 768) ** -0.5  # sqrt(12): the tiny model is 12x narrower than nanochat's reference width
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    expected = {"muon": 0.02 * 0.02, "embedding": 0.2 * scale * 0.02, "unembedding": 0.004 * scale * 0.02}
    assert lrs == pytest.approx(expected)
    assert optimizer.param_groups[0]["name"] == "muon"  # the group the Trainer logs as `learning_rate`
    assert [group["name"] for group in optimizer.muon.param_groups] == ["muon"]
    adamw = {group["name"]: group for group in optimizer.adamw.param_groups}
    assert set(adamw) == {"embedding", "unembedding"}
    for group in adamw.values():
        assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.8, 0.95), 1e-10, 0.0)
    muon = optimizer.muon.param_groups[0]
    settings = (muon["momentum"], muon["nesterov"], muon["weight_decay"], muon["adjust_lr_fn"])
    assert settings == (0.95, True, 0.0, "original")
    assert (muon["ns_steps"], muon["ns_coefficients"]) == (5, (3.4445, -4.7750, 2.0315))


def test_extra_parameters_go_to_adamw_at_the_unembedding_lr():
    model = tiny_model()
    model.transformer.h[0].attn.gate = nn.Parameter(torch.ones(4))  # 1-D, inside a block
    groups = split_parameters(model)
    assert [name for name, _ in groups["other"]] == ["transformer.h.0.attn.gate"]
    lrs = {group["name"]: group["lr"] for group in MuonAdamW.from_model(model).param_groups}
    assert lrs["other"] == lrs["unembedding"]


def test_tied_embedding_and_head_is_rejected():
    model = tiny_model()
    model.lm_head.weight = model.transformer.wte.weight
    shared = "transformer.wte.weight and lm_head.weight are one tensor shared by the embedding and the unembedding"
    with pytest.raises(AksharaError, match=shared):
        split_parameters(model)


def test_model_without_nanochat_layout_is_rejected():
    with pytest.raises(AksharaError, match="does not have nanochat's module layout"):
        split_parameters(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10)))


def test_bad_learning_rate_is_rejected():
    with pytest.raises(AksharaError, match="embedding_lr must be > 0"):
        MuonAdamW.from_model(tiny_model(), embedding_lr=0.0)


def newton_schulz(update: torch.Tensor, dtype: torch.dtype, fused: bool) -> torch.Tensor:
    """5 quintic Newton-Schulz steps with (3.4445, -4.7750, 2.0315) on the Frobenius-normalised wide orientation.

    `fused` evaluates the polynomial with multiply-adds (Keller Jordan's reference, which torch follows); unfused is
    nanochat's `a * X + (b * A + c * A @ A) @ X`. In bf16 the two round differently.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = update.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(5):
        gram = x @ x.T
        if fused:
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        else:
            x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).float()


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0).item()


@pytest.mark.parametrize("shape", [(64, 16), (16, 64)])
def test_muon_steps_equal_the_hand_computed_update(shape):
    torch.manual_seed(1)
    weight = nn.Parameter(torch.randn(shape))
    bias = nn.Parameter(torch.zeros(3))  # AdamW needs a group of its own
    lr, momentum = 0.02, 0.95
    optimizer = MuonAdamW([{"params": [weight], "lr": lr, "name": "muon"}], [{"params": [bias], "lr": 0.1}])
    scale = max(1.0, shape[0] / shape[1]) ** 0.5  # 2 for the tall matrix, 1 for the wide one
    buffer = torch.zeros(shape)
    for _ in range(2):  # the second step runs on a non-zero momentum buffer
        grad = torch.randn(shape)
        weight.grad, bias.grad = grad.clone(), torch.zeros(3)
        before = weight.detach().clone()
        optimizer.step()
        actual = before - weight.detach()

        buffer = buffer + (1 - momentum) * (grad - buffer)  # momentum: lerp towards the gradient
        nesterov = grad + momentum * (buffer - grad)
        torch.testing.assert_close(optimizer.muon.state[weight]["momentum_buffer"], buffer, rtol=1e-6, atol=1e-7)
        # Direction and size against the exact (fp32) polynomial: bf16 changes them by well under 0.1% and 1%.
        exact = lr * scale * newton_schulz(nesterov, torch.float32, fused=False)
        assert cosine(actual, exact) >= 0.999
        assert actual.norm() / exact.norm() == pytest.approx(1.0, abs=0.01)
        # Elementwise against the same bf16 arithmetic (a rare rounding flip moves a few elements by ~1%).
        bf16 = lr * scale * newton_schulz(nesterov, torch.bfloat16, fused=True)
        torch.testing.assert_close(actual, bf16, rtol=0, atol=0.02 * bf16.abs().max().item())
        # nanochat's unfused bf16 evaluation rounds differently: same direction and size, ~5% elementwise.
        nanochat = lr * scale * newton_schulz(nesterov, torch.bfloat16, fused=False)
        assert cosine(actual, nanochat) >= 0.998
        assert actual.norm() / nanochat.norm() == pytest.approx(1.0, abs=0.02)


def test_state_dict_round_trip_restores_momentum_and_keeps_the_scheduler_driving_both_optimizers():
    model = tiny_model()
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer = MuonAdamW.from_model(model)
    optimizer.step()
    saved = io.BytesIO()
    torch.save(optimizer.state_dict(), saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)  # how the Trainer loads optimizer.pt

    restored = MuonAdamW.from_model(model)
    restored.load_state_dict(state)
    for param in restored.muon.param_groups[0]["params"]:
        buffers = [opt.muon.state[param]["momentum_buffer"] for opt in (restored, optimizer)]
        assert torch.equal(*buffers)
    assert restored.adamw.state[model.lm_head.weight]["step"] == 1
    # load_state_dict replaced the inner group dicts: the union must be the new ones, or LR changes would be lost.
    scheduler = torch.optim.lr_scheduler.LambdaLR(restored, lambda step: 0.5 ** step)
    restored.step()
    scheduler.step()
    assert restored.muon.param_groups[0]["lr"] == pytest.approx(0.02 * 0.5)
    assert restored.adamw.param_groups[0]["lr"] == pytest.approx(restored.adamw.param_groups[0]["initial_lr"] * 0.5)
    with pytest.raises(AksharaError, match="not a MuonAdamW optimizer state"):
        restored.load_state_dict(optimizer.adamw.state_dict())


def test_zero_grad_clears_both_optimizers():
    model = tiny_model()
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    MuonAdamW.from_model(model).zero_grad()
    assert all(param.grad is None for param in model.parameters())


@pytest.mark.parametrize(
    "num_steps, reported",
    [(311, 0.0064), (4054, 0.00049), (21760, 0.000092), (16902, 0.00012), (11704, 0.00017), (45102, 0.000044)],
)
def test_sft_schedule_reproduces_the_reported_final_multipliers(num_steps, reported):
    # nanochat's chat_sft loops `for step in range(num_iterations)` and breaks at the last one before training it,
    # so the last step it trains and logs is num_iterations - 2, with multiplier 2 / num_iterations.
    final = sft_lr_multiplier(num_steps - 2, num_steps)
    assert float(f"{final:.2g}") == reported
    assert sft_lr_multiplier(num_steps - 1, num_steps) != pytest.approx(reported, rel=0.1)
    assert sft_lr_multiplier(0, num_steps) == 1.0


@pytest.mark.parametrize("steps, grad_accum, reported", [(262, 64, 0.025), (1047, 128, 0.031)])
def test_mid_schedule_brackets_the_reported_final_multipliers(steps, grad_accum, reported):
    # nanochat's mid_train measures progress as the fraction of the dataset consumed, after prefetching the next
    # micro-batch, and logs `lrm` to wandb every 10 steps. The last logged step is the last multiple of 10; the data
    # ran out during the final step, i.e. after (steps - 1) to `steps` steps' worth of micro-batches. In micro-batches:
    logged = steps // 10 * 10
    consumed = logged * grad_accum + 1
    low = mid_lr_multiplier(consumed, (steps - 1) * grad_accum)
    high = mid_lr_multiplier(consumed, steps * grad_accum)
    assert low < reported < high
    # Progress counted in steps cannot give these numbers: no late step's multiplier rounds to the reported one.
    assert all(float(f"{mid_lr_multiplier(s, steps):.2g}") != reported for s in range(steps - 12, steps))


def test_mid_schedule_shape():
    values = [mid_lr_multiplier(step, 10) for step in range(10)]
    assert values[:9] == [1.0] * 9  # progress 0.8 gives exactly 1 - 0 / 0.2
    assert values[9] == pytest.approx(0.5)
    assert mid_lr_multiplier(95, 100) == pytest.approx(0.25)
    assert mid_lr_multiplier(50, 100, warmdown_ratio=0.5) == 1.0
    assert mid_lr_multiplier(75, 100, warmdown_ratio=0.5) == pytest.approx(0.5)


def test_muon_momentum_warmup():
    assert muon_momentum(0) == 0.85
    assert muon_momentum(150) == pytest.approx(0.90)
    assert muon_momentum(300) == 0.95
    assert muon_momentum(10_000) == 0.95
    assert muon_momentum(0, warmup_steps=0) == 0.95


def nanochat_2026_layout(model=None):
    """A tiny nanochat 2026 model (4 layers: value embeddings and ve_gate on layers 1 and 3). Its 2026 tensors sit in
    the backbone, `transformer.` (nanochat has them at the top level)."""
    config = AksharaConfig.from_nanochat(
        {"sequence_len": 128, "vocab_size": 512, "n_layer": 4, "n_head": 4, "n_kv_head": 2, "n_embd": 64,
         "window_pattern": "SSSL"}
    )  # fmt: skip
    torch.manual_seed(0)
    return AksharaForCausalLM(config)


def test_nanochat_2026_groups_follow_its_setup_optimizer_table():
    model = nanochat_2026_layout()
    groups = {name: [n for n, _ in members] for name, members in split_parameters(model).items()}
    assert {"transformer.h.1.attn.ve_gate.weight", "transformer.h.3.attn.ve_gate.weight"} <= set(groups["muon"])
    assert len(groups["muon"]) == 4 * 6 + 2 and all(name.startswith("transformer.h.") for name in groups["muon"])
    assert groups["value_embeddings"] == ["transformer.value_embeds.1.weight", "transformer.value_embeds.3.weight"]
    assert groups["resid_lambdas"] == ["transformer.resid_lambdas"]
    assert groups["x0_lambdas"] == ["transformer.x0_lambdas"]
    assert sorted(groups["scalars"]) == sorted(
        ["transformer.smear_gate.weight", "transformer.smear_lambda", "transformer.backout_lambda"]
    )
    assert groups["other"] == []
    optimizer = MuonAdamW.from_model(
        model, matrix_lr=0.02, embedding_lr=0.3, unembedding_lr=0.004, scalar_lr=0.5, init_lr_frac=0.8
    )
    s = (64 / 768) ** -0.5
    table = {  # docs/nanochat-2026.md: lr, betas, weight decay
        "unembedding": (0.004 * s, (0.8, 0.96), 0.01),
        "embedding": (0.3 * s, (0.8, 0.995), 0.001),
        "value_embeddings": (0.3 * s * 0.5, (0.8, 0.995), 0.01),
        "resid_lambdas": (0.5 * 0.01, (0.8, 0.95), 0.05),
        "x0_lambdas": (0.5, (0.96, 0.95), 0.0),
        "scalars": (0.2, (0.8, 0.95), 0.0),
    }
    adamw = {group["name"]: group for group in optimizer.adamw.param_groups}
    assert set(adamw) == set(table)
    for name, (lr, betas, decay) in table.items():
        group = adamw[name]
        assert group["lr"] == pytest.approx(lr * 0.8) and group["betas"] == betas and group["weight_decay"] == decay
        assert group["eps"] == 1e-10
    muon = optimizer.muon.param_groups[0]
    assert (muon["name"], muon["lr"], muon["weight_decay"]) == ("muon", pytest.approx(0.02 * 0.8), 0.0)


def test_nanochat_2026_model_refuses_a_parameter_outside_its_groups():
    model = nanochat_2026_layout()
    model.transformer.h[0].attn.gain = nn.Parameter(torch.ones(4))  # 1-D inside a block: no 2026 group takes it
    with pytest.raises(AksharaError, match=r"no place for \['transformer.h.0.attn.gain'\]"):
        split_parameters(model)
    model = nanochat_2026_layout()
    model.extra = nn.Linear(2, 2)
    with pytest.raises(AksharaError, match=r"extra.weight"):
        MuonAdamW.from_model(model)


def test_sft_2026_schedule_is_constant_then_linear_warmdown_over_the_last_half():
    from akshara_hf.training.optim import warmdown_lr_multiplier

    assert [warmdown_lr_multiplier(s, 100) for s in (0, 25, 50)] == [1.0, 1.0, 1.0]
    assert warmdown_lr_multiplier(75, 100) == pytest.approx(0.5)
    assert warmdown_lr_multiplier(100, 100) == pytest.approx(0.0)
    assert warmdown_lr_multiplier(75, 100, final_lr_frac=0.2) == pytest.approx(0.6)
