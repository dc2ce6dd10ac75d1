"""akshara_hf.training.trainer: MuonSFTTrainer / AksharaSFTConfig on CPU with the tiny model (builders in dist_train_script)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from dist_train_script import (
    ASSISTANT_END,
    conversations,
    run,
    tiny_config,
    tiny_model,
    tiny_tokenizer,
)
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

from akshara_hf.errors import AksharaError
from akshara_hf.training.optim import MuonAdamW, mid_lr_multiplier, muon_momentum, sft_lr_multiplier
from akshara_hf.training.progress import progress_lr_multiplier
from akshara_hf.training.trainer import AksharaSFTConfig, MuonSFTTrainer, parse_config

REPO = Path(__file__).resolve().parents[1]


def make_trainer(tmp_path, dataset=None, model=None, callbacks=None, **config):
    args = tiny_config(tmp_path / "out", **config)
    dataset = conversations(16) if dataset is None else dataset
    return MuonSFTTrainer(
        tiny_model() if model is None else model, args, train_dataset=dataset, processing_class=tiny_tokenizer(),
        callbacks=callbacks,
    )  # fmt: skip


class Capture(TrainerCallback):
    """Records, at each optimizer step, the gradients and each group's LR and momentum that the step used."""

    def __init__(self):
        self.grads, self.lrs, self.momenta = [], [], []

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.grads.append({name: p.grad.detach().clone() for name, p in model.named_parameters()})
        self.lrs.append({group["name"]: (group["lr"], group["initial_lr"]) for group in optimizer.param_groups})
        self.momenta.append(optimizer.param_groups[0]["momentum"])


# ---- config ---------------------------------------------------------------------------------------------------


def test_config_derives_learning_rates_and_accumulation(tmp_path):
    sft = tiny_config(tmp_path, per_device_train_batch_size=4, target_examples_per_step=32)
    assert sft.gradient_accumulation_steps == 8
    assert (sft.init_lr_frac, sft.muon_momentum_warmup_steps, sft.learning_rate) == (0.02, 0, 0.02 * 0.02)
    assert (sft.max_length, sft.max_grad_norm, sft.loss_normalization) == (2048, 0.0, "nanochat")
    # off: transformers 5.23 resolves the deprecated alias to activation_checkpointing=False; 5.16.1 (our lowest) has
    # no such field and keeps None, which its Trainer reads as off
    assert not sft.gradient_checkpointing and not getattr(sft, "activation_checkpointing", False)
    mid = tiny_config(tmp_path, stage="mid", per_device_train_batch_size=2, target_examples_per_step=256)
    assert (mid.init_lr_frac, mid.muon_momentum_warmup_steps, mid.gradient_accumulation_steps) == (1.0, 300, 128)
    assert mid.warmdown_ratio == 0.2
    sft_2026 = tiny_config(tmp_path, schedule="sft-2026")  # nanochat 2026's chat_sft
    assert (sft_2026.init_lr_frac, sft_2026.muon_momentum_warmup_steps, sft_2026.warmdown_ratio) == (0.8, 300, 0.5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"matrix_lr": 0.0}, "matrix_lr must be > 0"),
        ({"unembedding_lr": -0.004}, "unembedding_lr must be > 0"),
        ({"init_lr_frac": 0.0}, "init_lr_frac must be > 0"),
        ({"per_device_train_batch_size": 5}, "target_examples_per_step 8 is not a multiple of per_device_train_batch"),
        ({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps 4 contradicts target_examples_per_step 8"),
        ({"learning_rate": 1e-3}, "learning_rate is not used"),
        ({"lr_scheduler_type": "cosine"}, "lr_scheduler_type / lr_scheduler_kwargs are not used"),
        ({"warmup_steps": 10}, "warmup_steps must be 0"),
        ({"stage": "cosine"}, "stage must be one of"),
        ({"loss_normalization": "sum"}, "loss_normalization must be one of"),
    ],
)
def test_bad_config_is_rejected(tmp_path, overrides, message):
    with pytest.raises(AksharaError, match=message):
        tiny_config(tmp_path, **overrides)


def test_yaml_recipe_is_parsed_and_unknown_keys_are_rejected(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    base = f"output_dir: {tmp_path}\nuse_cpu: true\nbf16: false\nreport_to: []\nper_device_train_batch_size: 2\n"
    recipe.write_text(base + "stage: mid\ntarget_examples_per_step: 8\nmatrix_lr: 0.01\n")
    (config,) = parse_config(["--config", str(recipe)])
    assert isinstance(config, AksharaSFTConfig)
    assert (config.schedule, config.gradient_accumulation_steps, config.learning_rate) == ("mid", 4, 0.01)
    assert config.assistant_only_loss is False  # mid: every token
    recipe.write_text(base + "stage: base\nschedule: sft\n")  # the stage decides; a schedule of another stage is refused
    with pytest.raises(AksharaError, match="schedule 'sft' does not belong to stage 'base'"):
        parse_config(["--config", str(recipe)])
    recipe.write_text(base + "matrix_lr: 0.01\nmatrix_learning_rate: 0.01\n")
    with pytest.raises(AksharaError, match="matrix_learning_rate"):
        parse_config(["--config", str(recipe)])
    recipe.write_text(base + "embedding_lr: 0\n")
    with pytest.raises(AksharaError, match="embedding_lr must be > 0"):
        parse_config(["--config", str(recipe)])


def test_non_akshara_model_is_rejected_before_training(tmp_path):
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(AksharaError, match="MuonSFTTrainer trains Akshara models .* LlamaForCausalLM"):
        make_trainer(tmp_path, model=llama)
    with pytest.raises(AksharaError, match="needs an AksharaSFTConfig"):
        MuonSFTTrainer(tiny_model(), tiny_config(tmp_path).to_dict(), train_dataset=conversations(4))


# ---- data and loss ----------------------------------------------------------------------------------------------


def test_labels_follow_assistant_masks_and_pads_use_assistant_end(tmp_path):
    dataset = conversations(8)
    trainer = make_trainer(tmp_path, dataset=dataset)
    prepared = trainer.train_dataset
    assert "assistant_masks" not in prepared.column_names
    for original, row in zip(dataset, prepared, strict=True):
        expected = [t if m else -100 for t, m in zip(original["input_ids"], original["assistant_masks"], strict=True)]
        assert row["labels"] == expected
    batch = trainer.data_collator([prepared[i] for i in range(4)])
    lengths = [len(prepared[i]["input_ids"]) for i in range(4)]
    assert batch["input_ids"].shape == (4, max(lengths))  # padded to the longest row
    for i, length in enumerate(lengths):
        assert torch.equal(batch["labels"][i, :length], torch.tensor(prepared[i]["labels"]))
        assert (batch["input_ids"][i, length:] == ASSISTANT_END).all()
        assert (batch["labels"][i, length:] == -100).all()
        assert batch["attention_mask"][i].tolist() == [1] * length + [0] * (max(lengths) - length)
    assert trainer.processing_class.pad_token_id == ASSISTANT_END


def test_trl_loss_is_the_models_own_loss_with_softcap(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # logits of tens: the softcap at 15 matters
    trainer = make_trainer(tmp_path, model=model)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch))
        output = model(**batch)  # the model's forward: softcapped fp32 logits, transformers' causal LM loss
        hidden = model.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        uncapped = F.cross_entropy(model.lm_head(hidden)[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
    torch.testing.assert_close(trl_loss, output.loss, rtol=1e-5, atol=1e-5)
    assert abs(uncapped.item() - output.loss.item()) > 0.1  # so the comparison above includes the softcap


@pytest.mark.parametrize("normalization", ["tokens", "nanochat"])
def test_gradient_accumulation_2x16_matches_1x32(tmp_path, normalization):
    dataset = conversations(32, seed=3)

    def one_step(per_device):
        capture = Capture()
        trainer = make_trainer(
            tmp_path / str(per_device), dataset=dataset, callbacks=[capture], max_steps=1,
            per_device_train_batch_size=per_device, target_examples_per_step=32, loss_normalization=normalization,
        )  # fmt: skip
        trainer.train()
        return trainer, capture.grads[0], dict(trainer.model.named_parameters())

    accumulated, grads_2x16, params_2x16 = one_step(16)
    assert accumulated.args.gradient_accumulation_steps == 2
    _, grads_1x32, params_1x32 = one_step(32)

    # The hand computation: two micro-batch means, averaged (nanochat) or one mean over all tokens (tokens).
    model = tiny_model()
    rows = accumulated.train_dataset
    halves = [accumulated.data_collator([rows[i] for i in range(start, start + 16)]) for start in (0, 16)]
    micro_means = [model(**half).loss for half in halves]
    counts = [(half["labels"][:, 1:] != -100).sum() for half in halves]
    assert counts[0] != counts[1]  # else the two normalisations coincide
    if normalization == "nanochat":
        loss = (micro_means[0] + micro_means[1]) / 2
    else:
        loss = (micro_means[0] * counts[0] + micro_means[1] * counts[1]) / (counts[0] + counts[1])
    loss.backward()
    hand_grads = {name: p.grad for name, p in model.named_parameters()}
    for name, grad in hand_grads.items():
        torch.testing.assert_close(grads_2x16[name], grad, rtol=1e-4, atol=1e-6)
        if normalization == "tokens":  # split-invariant: 2 x 16 is 1 x 32
            torch.testing.assert_close(grads_2x16[name], grads_1x32[name], rtol=1e-4, atol=1e-6)
    if normalization == "nanochat":  # 1 x 32 is one mean over all tokens, which differs
        assert not torch.allclose(grads_2x16["lm_head.weight"], grads_1x32["lm_head.weight"], rtol=1e-3, atol=1e-6)

    # The parameters after the step: the hand gradients through MuonAdamW at the trainer's first-step LRs.
    optimizer = MuonAdamW.from_model(model, init_lr_frac=0.02)
    optimizer.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(params_2x16[name], param, rtol=0, atol=1e-5)
        if normalization == "tokens":
            torch.testing.assert_close(params_2x16[name], params_1x32[name], rtol=0, atol=1e-5)


def test_padding_free_batch_gives_each_conversations_own_token_losses(tmp_path):
    trainer = make_trainer(tmp_path, padding_free=True, max_length=None, per_device_train_batch_size=2)
    model = trainer.model.eval()
    first, second = trainer.train_dataset[0], trainer.train_dataset[1]

    def log_probs(rows):
        batch = trainer.data_collator(rows)
        with torch.no_grad():
            return batch, model(**batch, fused_lm_head=True).log_probs[0]

    packed_batch, packed = log_probs([first, second])
    assert "attention_mask" not in packed_batch
    length = len(first["input_ids"])
    assert packed_batch["position_ids"][0, length] == 0  # positions restart at the second conversation
    _, alone_first = log_probs([first])
    _, alone_second = log_probs([second])
    torch.testing.assert_close(packed[: length - 1], alone_first, rtol=1e-5, atol=1e-5)
    assert packed[length - 1] == 0  # the first token of the second conversation is not a target
    torch.testing.assert_close(packed[length:], alone_second, rtol=1e-5, atol=1e-5)
    # Attention across the boundary would change the second conversation's losses:
    with torch.no_grad():
        leaky = model(input_ids=packed_batch["input_ids"], labels=packed_batch["labels"], fused_lm_head=True).log_probs
    assert not torch.allclose(leaky[0, length:], alone_second, atol=1e-3)


def test_packing_trains(tmp_path):
    trainer = make_trainer(tmp_path, packing=True, max_length=64, max_steps=2, per_device_train_batch_size=2,
                           target_examples_per_step=2, dataset=conversations(24))  # fmt: skip
    packed = [row for row in trainer.train_dataset if len(row["seq_lengths"]) > 1]
    assert packed, "no row holds several conversations"
    batch = trainer.data_collator(packed[:1])
    assert (batch["position_ids"] == 0).sum() == len(packed[0]["seq_lengths"])  # positions restart per conversation
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)


# ---- schedule, momentum, logging --------------------------------------------------------------------------------


@pytest.mark.parametrize("stage, schedule", [("sft", None), ("mid", None), ("sft", "sft-2026")])
def test_lr_schedule_momentum_and_logs_follow_nanochat(tmp_path, stage, schedule):
    steps, warmup = 10, 4
    capture = Capture()
    trainer = make_trainer(
        tmp_path, dataset=conversations(2 * steps), callbacks=[capture], max_steps=steps, stage=stage,
        schedule=schedule, per_device_train_batch_size=2, target_examples_per_step=2, muon_momentum_warmup_steps=warmup,
    )  # fmt: skip
    schedule = trainer.args.schedule  # the stage's own unless chosen
    trainer.train()
    # sft-2026 runs by data progress: one conversation per row here, so the fraction of rows trained after the step.
    by_progress = lambda step, steps: progress_lr_multiplier((step + 1) / steps)  # noqa: E731
    multiplier = {"sft": sft_lr_multiplier, "mid": mid_lr_multiplier, "sft-2026": by_progress}[schedule]
    frac = {"sft": 0.02, "mid": 1.0, "sft-2026": 0.8}[schedule]
    scale = (64 / 768) ** -0.5
    base = {"muon": 0.02 * frac, "embedding": 0.2 * scale * frac, "unembedding": 0.004 * scale * frac}
    logs = [entry for entry in trainer.state.log_history if "lrm" in entry]
    assert len(capture.lrs) == len(logs) == steps
    for step, (lrs, momentum, log) in enumerate(zip(capture.lrs, capture.momenta, logs, strict=True)):
        lrm = multiplier(step, steps)
        for name, (lr, initial_lr) in lrs.items():
            assert initial_lr == pytest.approx(base[name], rel=1e-12)
            assert lr == initial_lr * lrm  # exactly what LambdaLR computes from our function
            assert log[f"lr/{name}"] == pytest.approx(lr, rel=1e-12)
        assert momentum == muon_momentum(step, warmup) == log["muon_momentum"]
        assert log["lrm"] == pytest.approx(lrm, rel=1e-12)
        assert log["learning_rate"] == lrs["muon"][0]
    if schedule == "mid":
        assert [log["lrm"] for log in logs][:9] == [1.0] * 9 and logs[9]["lrm"] == pytest.approx(0.5)
    if schedule == "sft-2026":
        assert [log["lrm"] for log in logs] == pytest.approx([1.0] * 5 + [0.8, 0.6, 0.4, 0.2, 0.0])
        assert [log["progress"] for log in logs] == [(step + 1) / steps for step in range(steps)]
    assert capture.momenta[0] == 0.85 and capture.momenta[warmup:] == [0.95] * (steps - warmup)


# ---- resume and distributed -------------------------------------------------------------------------------------


class MomentumAtStart(TrainerCallback):
    """Records the Muon momentum buffers when training (re)starts, and the steps taken after that."""

    steps = 0

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.steps += 1

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.buffers = [
            optimizer.optimizer.muon.state[p]["momentum_buffer"].clone()
            for p in optimizer.optimizer.muon.param_groups[0]["params"]
        ]


def test_resumed_run_continues_with_identical_losses_and_momentum(tmp_path):
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2, stage="mid", muon_momentum_warmup_steps=3)
    full = make_trainer(tmp_path / "full", dataset=conversations(32), **settings)
    full.train()
    checkpoint = tmp_path / "full" / "out" / "checkpoint-2"
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)  # as the Trainer loads it
    assert len(saved["muon"]["state"]) == 12 and saved["muon"]["param_groups"][0]["momentum"] == muon_momentum(1, 3)

    start = MomentumAtStart()
    resumed = make_trainer(tmp_path / "resumed", dataset=conversations(32), callbacks=[start], **settings)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for index, buffer in enumerate(start.buffers):
        assert torch.equal(buffer, saved["muon"]["state"][index]["momentum_buffer"])

    def losses(trainer):
        return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}

    assert start.steps == 2  # steps 3 and 4; the history of steps 1 and 2 comes from the checkpoint
    assert set(losses(full)) == {1, 2, 3, 4}
    assert losses(resumed) == losses(full)
    for (name, param), resumed_param in zip(full.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(param, resumed_param), name
    for a, b in zip(full.optimizer.optimizer.muon.state.values(), resumed.optimizer.optimizer.muon.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    # Without a card writer the model card is TRL's, as SFTTrainer writes it: into output_dir at each checkpoint.
    card = (tmp_path / "full" / "out" / "README.md").read_text(encoding="utf-8")
    assert "[TRL](https://github.com/huggingface/trl)" in card and "akshara-hf model-card" not in card
    assert not (checkpoint / "README.md").exists()


# ---- model card -------------------------------------------------------------------------------------------------


class CardsAtSave(TrainerCallback):
    """The output folder's and the new checkpoint's README.md as they are right after each checkpoint is saved."""

    def __init__(self, output_dir: Path):
        self.output_dir, self.cards = output_dir, {}

    def on_save(self, args, state, control, **kwargs):
        folder = self.output_dir / f"checkpoint-{state.global_step}"
        self.cards[state.global_step] = [(path / "README.md").read_text(encoding="utf-8")
                                         for path in (self.output_dir, folder)]


def test_the_card_hook_writes_our_card_of_each_step(tmp_path):
    """With a card writer every card the Trainer writes is ours, from the facts at that step: output_dir's (TRL's
    create_model_card, before any config.json is there), each checkpoint's, the final save's and push_to_hub's."""
    from huggingface_hub import ModelCard

    from model_card import write_model_card

    def facts(trainer):
        state = trainer.state
        return {"run_name": "tiny-card", "stage": "sft", "num_steps": state.global_step, "in_progress": trainer.is_in_train,
                "planned_steps": state.max_steps if trainer.is_in_train else None,
                "log_history": [{"step": e["step"], "loss": e["loss"]} for e in state.log_history if "loss" in e]}

    out = tmp_path / "out"
    cards = CardsAtSave(out)
    args = tiny_config(out, max_steps=2, save_strategy="steps", save_steps=1)
    trainer = MuonSFTTrainer(tiny_model(), args, train_dataset=conversations(16), processing_class=tiny_tokenizer(),
                             callbacks=[cards], card_writer=write_model_card, card_facts=facts)
    trainer.train()
    assert sorted(cards.cards) == [1, 2]
    for step, texts in cards.cards.items():
        for text in texts:
            card = ModelCard(text)
            assert (card.data.model_name, card.data.library_name, card.data.language) == ("tiny-card", "transformers", "te")
            assert {"akshara", "sft", "trl"} <= set(card.data.tags)
            assert f"| Steps (so far of 2 planned; training in progress) | {step} |" in card.text
            assert f"This card was written at step {step} of the" in card.text
            assert "| Steps | 2 |" not in card.text and "<!-- written by akshara-hf model-card -->" in card.text
    assert (out / "checkpoint-1" / "loss_curve.png").is_file()
    trainer.save_model()
    final = ModelCard.load(out / "README.md")
    assert "| Steps | 2 |" in final.text and "Training in progress" not in final.text
    trainer.create_model_card(model_name="tiny-card")  # what push_to_hub calls before uploading output_dir
    assert ModelCard.load(out / "README.md").text == final.text


def test_a_card_writer_needs_the_facts(tmp_path):
    with pytest.raises(AksharaError, match="card_writer needs card_facts"):
        MuonSFTTrainer(tiny_model(), tiny_config(tmp_path), train_dataset=conversations(4), card_writer=print)


def _launch_two_processes(tmp_path, *options: str, normalization: str = "nanochat", script: tuple = (),
                          name: str = "two") -> tuple[dict, str]:
    """`accelerate launch OPTIONS --num_processes 2 ... dist_train_script.py SCRIPT` on CPU: rank 0's result, stderr."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / f"{name}.json"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *options, "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        str(REPO / "tests" / "dist_train_script.py"), "--out", str(out), "--output-dir", str(tmp_path / name),
        "--loss-normalization", normalization, *script,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return json.loads(out.read_text()), done.stderr


def assert_split_by_matrix(result: dict) -> None:
    """Each Muon matrix's state is on exactly one of the two ranks, and both ranks have some."""
    by_rank = result["muon_states_by_rank"]
    assert len(by_rank) == 2 and all(0 < sum(row) < len(row) for row in by_rank), by_rank
    assert [a + b for a, b in zip(*by_rank)] == [1] * len(by_rank[0]), by_rank


@pytest.mark.slow
@pytest.mark.parametrize("normalization", ["nanochat", "tokens"])
def test_two_processes_give_the_one_process_loss_curve(tmp_path, normalization):
    two, _ = _launch_two_processes(tmp_path, "--multi_gpu", normalization=normalization)
    one = run(tmp_path / "one", steps=3, loss_normalization=normalization)
    # `--cpu --num_processes 2` would silently start one process: check that two really trained.
    assert (two["world_size"], two["dist_world_size"], two["gradient_accumulation_steps"]) == (2, 2, 1)
    assert (one["world_size"], one["gradient_accumulation_steps"]) == (1, 2)
    assert len(two["losses"]) == 3
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["lrs"] == pytest.approx(one["lrs"], rel=1e-12)
    assert two["muon_class"] == one["muon_class"] == "Muon"  # late 2025: torch's Muon, split by matrix
    assert_split_by_matrix(two)
    assert one["muon_states_by_rank"] == [[1] * len(two["muon_states_by_rank"][0])]


@pytest.mark.slow
def test_two_processes_split_the_2026_muon_and_resume_exactly(tmp_path):
    """nanochat 2026's optimizer on 2 processes (DDP, gloo): each matrix orthogonalised by one rank, whose state only it
    keeps; the weights after 3 steps equal one process's (gradient accumulation 2 instead); the checkpoint of step 2
    holds every matrix's state, and 2 processes resuming from it end bit-identical to the uninterrupted run."""
    from safetensors.torch import load_file

    script = ("--generation", "2026", "--steps", "3", "--save-steps", "2")
    two, _ = _launch_two_processes(tmp_path, "--multi_gpu", script=(*script, "--params-out", str(tmp_path / "two.st")))
    assert two["muon_class"] == "PolarExpressMuon" and len(two["losses"]) == 3
    assert_split_by_matrix(two)
    one = run(tmp_path / "one", steps=3, loss_normalization="nanochat", generation="2026",
              params_out=str(tmp_path / "one.st"))  # fmt: skip
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    two_params, one_params = load_file(tmp_path / "two.st"), load_file(tmp_path / "one.st")
    for name, value in one_params.items():
        torch.testing.assert_close(two_params[name], value, rtol=1e-4, atol=1e-5, msg=name)

    checkpoint = tmp_path / "two" / "checkpoint-2"
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert saved["muon_variant"] == "2026"
    assert len(saved["muon"]["state"]) == len(two["muon_states_by_rank"][0])  # every matrix, not rank 0's share
    resumed, _ = _launch_two_processes(tmp_path, "--multi_gpu", name="resumed", script=(
        *script, "--resume-from", str(checkpoint), "--params-out", str(tmp_path / "resumed.st")))  # fmt: skip
    assert_split_by_matrix(resumed)
    for name, value in load_file(tmp_path / "resumed.st").items():
        assert torch.equal(value, two_params[name]), name


FSDP2_YAML = str(REPO / "training" / "accelerate_configs" / "fsdp2.yaml")


@pytest.mark.parametrize(
    "env, overrides, message",
    [({"ACCELERATE_USE_DEEPSPEED": "true"}, {}, "^DeepSpeed is not supported with Muon: .* Use DDP or FSDP2"),
     ({}, {"deepspeed": "{}"}, "^DeepSpeed is not supported with Muon"),
     # accelerate launch --use_fsdp without --fsdp_version: Accelerate's default is FSDP1
     ({"ACCELERATE_USE_FSDP": "true"}, {}, "^FSDP version 1 is not supported with Muon: FSDP1 flattens"),
     ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "abc"}, {}, "^FSDP version abc is not supported"),
     ({}, {"fsdp": True, "fsdp_config": {"version": 1}}, "^FSDP version 1 is not supported"),
     # --fsdp_version 2 without a state dict type: Accelerate's FSDP2 default saves no model folder
     ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, {}, "^FSDP state_dict_type SHARDED_STATE_DICT is not"),
     ({"ACCELERATE_USE_FSDP": "1", "FSDP_VERSION": "2", "FSDP_STATE_DICT_TYPE": "3"}, {}, "SHARDED_STATE_DICT is not"),
     ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_STATE_DICT_TYPE": "LOCAL_STATE_DICT"}, {},
      "^FSDP state_dict_type LOCAL_STATE_DICT is not supported: .* Use FULL_STATE_DICT"),
     ({}, {"fsdp": True, "fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT"}}, "SHARDED_STATE_DICT is not"),
     # FSDP2 as fsdp2.yaml asks for it, but on one process (the Trainer's own ValueError, as one line and earlier)
     ({}, {"fsdp": True, "fsdp_config": {"fsdp_version": 2}}, "^fsdp shards the model across processes: start"),
     ({}, {"fsdp": "full_shard"}, "^fsdp shards the model across processes")],
)  # fmt: skip
def test_sharded_training_that_muon_cannot_take_is_refused_before_any_work(tmp_path, monkeypatch, env, overrides,
                                                                           message):
    """DeepSpeed (ZeRO flattens the matrices), FSDP1 (flat 1-D shards) and FSDP2 with a state dict type whose final
    save writes no weights: one line each, from the config or from `accelerate launch`'s variables."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(AksharaError, match=message):
        tiny_config(tmp_path, **overrides)


def test_fsdp2_as_fsdp2_yaml_asks_is_accepted(tmp_path, monkeypatch):
    """What `accelerate launch --config_file fsdp2.yaml` sets passes the config's checks."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT")
    assert tiny_config(tmp_path).gradient_accumulation_steps == 2


def assert_fsdp2_folder(folder: Path) -> None:
    """A folder saved from the FSDP2 model has the remote code of Akshara, not torch's FSDP sources."""
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_akshara.AksharaForCausalLM", config["auto_map"]
    assert (folder / "modeling_akshara.py").is_file()
    assert not list(folder.glob("_fsdp*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("generation", ["late-2025", "2026"])
def test_fsdp2_on_two_processes_equals_one_process_and_resumes_exactly(tmp_path, generation):
    """FSDP2 through `accelerate launch --config_file training/accelerate_configs/fsdp2.yaml` and the Trainer, on 2
    CPU processes (gloo; `dist_train_script.fsdp_on_cpu` lets Accelerate set FSDP up without a GPU): every weight a
    Shard(0) DTensor, each Muon matrix stepped whole by its owner. Losses and weights after 3 steps equal one process's
    (gradient accumulation 2 instead); the checkpoint of step 2 holds every matrix's whole state in optimizer.pt and
    the model folder is Akshara's; 2 FSDP2 processes resuming from it end bit-identical to the uninterrupted run."""
    from safetensors.torch import load_file

    script = ("--generation", generation, "--steps", "3", "--save-steps", "2", "--fsdp-on-cpu")
    two, _ = _launch_two_processes(tmp_path, "--config_file", FSDP2_YAML,
                                   script=(*script, "--params-out", str(tmp_path / "two.st")))  # fmt: skip
    assert two["fsdp"] and two["sharded"] == ["DTensor"], two  # FSDP2 really, not DDP
    assert_split_by_matrix(two)
    one = run(tmp_path / "one", steps=3, loss_normalization="nanochat", generation=generation,
              params_out=str(tmp_path / "one.st"))  # fmt: skip
    assert two["muon_class"] == one["muon_class"] == ("PolarExpressMuon" if generation == "2026" else "Muon")
    assert len(two["losses"]) == 3 and two["losses"] == pytest.approx(one["losses"], rel=1e-6)
    two_params, one_params = load_file(tmp_path / "two.st"), load_file(tmp_path / "one.st")
    for name, value in one_params.items():
        torch.testing.assert_close(two_params[name], value, rtol=1e-5, atol=1e-6, msg=name)

    checkpoint = tmp_path / "two" / "checkpoint-2"
    assert_fsdp2_folder(checkpoint)
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert len(saved["muon"]["state"]) == len(two["muon_states_by_rank"][0])  # every matrix, not rank 0's share
    shapes = [tuple(p.shape) for p in tiny_model(generation=generation).parameters()]
    assert {tuple(entry["exp_avg"].shape) for entry in saved["adamw"]["state"].values()} <= set(shapes)  # whole
    resumed, _ = _launch_two_processes(tmp_path, "--config_file", FSDP2_YAML, name="resumed", script=(
        *script, "--resume-from", str(checkpoint), "--params-out", str(tmp_path / "resumed.st")))  # fmt: skip
    assert resumed["fsdp"]
    assert_split_by_matrix(resumed)
    for name, value in load_file(tmp_path / "resumed.st").items():
        assert torch.equal(value, two_params[name]), name
    assert_fsdp2_folder(tmp_path / "two" / "checkpoint-3")


@pytest.mark.slow
def test_the_training_script_under_fsdp2_ends_with_a_model_folder(tmp_path):
    """`training/mid_train.py` (the tiny-base recipe, 4 steps) on 2 FSDP2 processes: the run's own output (model folder
    with Akshara's remote code that loads, the log, the checkpoint with the whole optimizer state)."""
    from transformers import AutoModelForCausalLM

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "base"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", FSDP2_YAML, "--num_processes", "2",
        "--mixed_precision", "no", "--main_process_port", str(port), str(REPO / "tests" / "fsdp_cpu_launch.py"),
        str(REPO / "training" / "mid_train.py"), "--config", "tiny-base", "--max_steps", "4", "--save_steps", "4",
        "--per_device_train_batch_size", "4", "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    # a rank's one-line error first: once in CI a rank exited 2 and only the other rank's traceback was left in view
    errors = [line for line in (done.stdout + done.stderr).splitlines() if ".py: error: " in line]
    assert done.returncode == 0, (errors, (done.stdout + done.stderr)[-4000:])
    assert "Accelerate set up DDP" not in done.stderr
    # the main process alone built output_dir/mixture (two processes building it at once failed a run at random)
    assert done.stdout.count("# Mixture report: ") == 1, done.stdout[-2000:]
    assert_fsdp2_folder(out)
    assert_fsdp2_folder(out / "checkpoint-4")
    from akshara_hf.folders import unlisted_entries

    # listed once every rank had written its part (a later run with save_total_limit refuses anything unlisted)
    assert unlisted_entries(out, out / "checkpoint-4") == [], json.loads((out / ".akshara-hf.json").read_text())
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert max(entry.get("step", 0) for entry in steps) == 4
    saved = torch.load(out / "checkpoint-4" / "optimizer.pt", weights_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert len(saved["muon"]["state"]) == len(saved["muon"]["param_groups"][0]["params"]) > 0
    assert {tuple(e["exp_avg"].shape) for e in saved["adamw"]["state"].values()} == {tuple(model.lm_head.weight.shape)}


@pytest.mark.slow
def test_fsdp2_yaml_on_cpu_says_it_runs_ddp(tmp_path):
    """Without a GPU, Accelerate sets up DDP for fsdp2.yaml and says nothing; the trainer says it."""
    two, stderr = _launch_two_processes(tmp_path, "--config_file", FSDP2_YAML, script=("--steps", "1"))
    assert not two["fsdp"] and two["sharded"] == ["Parameter"] and two["dist_world_size"] == 2
    assert "FSDP was asked for, but Accelerate set up DDP" in stderr


# ---- defaults: nanochat's SFT on conversations ------------------------------------------------------------------


def test_default_config_trains_conversations_as_nanochats_chat_sft(tmp_path, converted_folder):
    """A Python user's `MuonSFTTrainer(model, AksharaSFTConfig(...), train_dataset=conversations)`: the first step's
    loss is nanochat's chat_sft loss (mean over the assistant tokens of nanochat's render mask), not TRL's default loss
    over every token."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from akshara_hf.tokenization.chat import render_conversation

    tokenizer = AutoTokenizer.from_pretrained(converted_folder)
    words = "రాముడు అడవికి వెళ్ళాడు సీత ఇంటికి వచ్చింది The river flows children go to school".split()
    chats = [
        {"messages": [{"role": "user", "content": " ".join(words[i : i + 3])},
                      {"role": "assistant", "content": " ".join(words[i + 2 : i + 7])},
                      {"role": "user", "content": words[i]}, {"role": "assistant", "content": words[-i - 1]}]}
        for i in range(4)
    ]  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(converted_folder)
    expected_nats, expected_count = 0.0, 0
    with torch.no_grad():
        for chat in chats:
            ids, mask = render_conversation(chat["messages"], tokenizer)
            logits = model(torch.tensor([ids]), use_cache=False).logits[0, :-1]
            targets = torch.tensor(ids[1:])
            nll = F.cross_entropy(logits.float(), targets, reduction="none")
            expected_nats += float(nll[torch.tensor(mask[1:]) == 1].sum())
            expected_count += sum(mask[1:])
    expected = expected_nats / expected_count

    def first_loss(**overrides):
        capture = []
        args = tiny_config(tmp_path / "out", max_steps=1, per_device_train_batch_size=4, target_examples_per_step=4,
                           **overrides)
        trainer = MuonSFTTrainer(AutoModelForCausalLM.from_pretrained(converted_folder), args,
                                 train_dataset=Dataset.from_list(chats), processing_class=tokenizer)
        trainer.add_callback(type("Losses", (TrainerCallback,), {
            "on_log": lambda self, a, s, c, logs=None, **k: capture.append(logs.get("loss")) if logs else None})())
        trainer.train()
        return next(loss for loss in capture if loss is not None), args

    loss, args = first_loss()
    assert args.assistant_only_loss is True  # the sft stage's default
    assert abs(loss - expected) < 2e-3, (loss, expected)
    every_token, args = first_loss(assistant_only_loss=False)  # TRL's default: the user turns count too
    assert abs(every_token - expected) > 0.05
    assert tiny_config(tmp_path, stage="mid").assistant_only_loss is False  # mid-training: every token


def test_trl_loss_on_a_nanochat_2026_model_is_its_own_loss(tmp_path):
    """TRL's loss runs the backbone and the head weight only: every 2026 feature must live in the backbone."""
    from dist_train_script import VOCAB_SIZE

    from akshara_hf import AksharaConfig, AksharaForCausalLM

    config = AksharaConfig.from_nanochat({"sequence_len": 128, "vocab_size": VOCAB_SIZE, "n_layer": 4, "n_head": 4,
                                          "n_kv_head": 2, "n_embd": 64, "window_pattern": "SSSL"})  # fmt: skip
    torch.manual_seed(0)
    model = AksharaForCausalLM(config)
    with torch.no_grad():  # no zero-initialised part left inert
        for name, param in model.named_parameters():
            param.normal_(0.5 if param.ndim == 1 else 0.0, 1.0 if "wte" in name or "value_embeds" in name else 0.3)
    trainer = make_trainer(tmp_path, model=model)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch))
        output = model(**batch)
    torch.testing.assert_close(trl_loss, output.loss, rtol=1e-5, atol=1e-5)
    groups = {group["name"] for group in trainer.create_optimizer().param_groups}
    assert groups == {"muon", "unembedding", "embedding", "value_embeddings", "resid_lambdas", "x0_lambdas", "scalars"}
