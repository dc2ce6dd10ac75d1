"""nanochat 2026's SFT rows (`packing_strategy: bos_bestfit`) and its by-progress schedule (`schedule: sft-2026`)."""

import json
import random
from itertools import accumulate
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from dist_train_script import BOS, conversation, conversations, tiny_config, tiny_model, tiny_tokenizer
from transformers import TrainerCallback

from akshara_hf import AksharaConfig, AksharaForCausalLM
from akshara_hf.data.packing import bos_bestfit_rows, pack_bos_bestfit
from akshara_hf.errors import AksharaError
from akshara_hf.training.progress import progress_lr_multiplier, step_progress
from akshara_hf.training.trainer import MuonSFTTrainer

REPO = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((Path(__file__).parent / "data" / "nanochat2026_sft_reference.json").read_text())


def packed_trainer(tmp_path, dataset=None, model=None, callbacks=None, tokenizer=None, **config):
    settings = dict(packing=True, packing_strategy="bos_bestfit", max_length=96, packing_buffer_size=4,
                    per_device_train_batch_size=2,
                    target_examples_per_step=2, schedule="sft-2026", muon_momentum_warmup_steps=3)  # fmt: skip
    args = tiny_config(tmp_path / "out", **{**settings, **config})
    return MuonSFTTrainer(
        tiny_model() if model is None else model, args, callbacks=callbacks,
        processing_class=tiny_tokenizer() if tokenizer is None else tokenizer,
        train_dataset=conversations(24, seed=1) if dataset is None else dataset,
    )  # fmt: skip


# ---- rows: nanochat's own loader as the reference --------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe_conversations(tmp_path_factory):
    """The training conversations of training/recipes/tiny-sft-2026.yaml, rendered as the runner renders them."""
    from akshara_hf.data.mixture import build_mixture, load_data_section
    from akshara_hf.loading import load_tokenizer
    from akshara_hf.training.run import _tokenize

    tokenizer = load_tokenizer(str(REPO / "data" / "samples" / "tokenizer"))
    section = load_data_section(REPO / "training" / "recipes" / "tiny-sft-2026.yaml")
    mixture = build_mixture(section, tmp_path_factory.mktemp("mixture") / "m", tokenizer=tokenizer)
    return tokenizer, _tokenize("sft", mixture["train"], tokenizer, 512, 2048)


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda case: f"T{case['max_seq_len']}-buffer{case['buffer_size']}")
def test_rows_equal_nanochat_chat_sft_loader(tmp_path, recipe_conversations, case):
    """The trainer's packed rows (ids, what is learnt) and conversations consumed per row equal those of nanochat
    2026's `sft_data_generator_bos_bestfit`, run on the same conversations (tests/data/make_nanochat2026_sft_reference.py)."""
    tokenizer, rows = recipe_conversations
    assert len(rows) == REFERENCE["conversations"]
    config = AksharaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
    trainer = packed_trainer(
        tmp_path, dataset=rows, model=AksharaForCausalLM(config), tokenizer=tokenizer, max_length=case["max_seq_len"],
        packing_buffer_size=case["buffer_size"],
    )  # fmt: skip
    packed = trainer.train_dataset
    assert packed["input_ids"] == case["rows"]
    masks = ["".join("0" if label == -100 else "1" for label in labels) for labels in packed["labels"]]
    assert masks == case["masks"]
    consumed = [sum(packed["conversations"][: i + 1]) for i in range(len(packed))]
    assert consumed == case["consumed"]
    assert all(row[0] == tokenizer.convert_tokens_to_ids("<|bos|>") for row in packed["input_ids"])


# ---- rows: the rules, by hand -------------------------------------------------------------------------------------


def rows_of(*lengths, row_length=10, buffer_size=100):
    """bos_bestfit rows of conversations [BOS, i, i, ...] of the given lengths (label = id, BOS not learnt)."""
    data = [([BOS] + [i] * (n - 1), [-100] + [i] * (n - 1)) for i, n in enumerate(lengths, start=1)]
    return list(bos_bestfit_rows(data, row_length, BOS, buffer_size))


def test_best_fit_takes_the_longest_that_fits_first_on_ties_and_pads_with_bos():
    # A, B: 4 tokens, C: 3; buffer 3. Row 1: A (first of the two longest), then B, then 2 left: padding. Row 2: the
    # buffer refilled from the next epoch (A', B', C'): A' then B' again; C waits in the buffer (longest first).
    rows = rows_of(4, 4, 3, row_length=10, buffer_size=3)
    assert [row["seq_lengths"] for row in rows] == [[4, 4, 2], [4, 4, 2]]
    assert rows[0]["input_ids"] == rows[1]["input_ids"] == [BOS, 1, 1, 1, BOS, 2, 2, 2, BOS, BOS]
    assert rows[0]["labels"] == [-100, 1, 1, 1, -100, 2, 2, 2, -100, -100]
    assert [row["conversations"] for row in rows] == [2, 2]  # 4 placed >= 3: the epoch is done


def test_small_buffer_wraps_into_the_next_epoch_as_nanochat():
    # Buffer 2 over (3, 6, 4, 4): [1, 2] -> 6; [1, 3] -> 4 (row full); [1, 4] -> 4; [1, 1'] -> 3; [1', 2'] -> 3.
    rows = rows_of(3, 6, 4, 4, row_length=10, buffer_size=2)
    assert [row["seq_lengths"] for row in rows] == [[6, 4], [4, 3, 3]]
    assert rows[1]["input_ids"] == [BOS, 4, 4, 4, BOS, 1, 1, BOS, 1, 1]
    assert [row["conversations"] for row in rows] == [2, 3]


@pytest.mark.parametrize(
    "data, message",
    [
        ([([BOS] * 11, [-100] * 11)], "row 0: 11 tokens do not fit in a packed row of 10"),
        ([([BOS, 1], [-100, 1]), ([5, 1], [-100, 1])], "row 1: a conversation must start with <|bos|>"),
        ([([], [])], "row 0: a conversation must start with <|bos|>"),
        ([([BOS, 1, 2], [-100, 1])], "row 0: 2 labels for 3 input ids"),
        ([], "no conversations to pack"),
    ],
)
def test_bad_conversations_are_one_line_errors(data, message):
    with pytest.raises(AksharaError, match=message):
        list(bos_bestfit_rows(data, 10, BOS))


def test_dataset_packing_errors_are_ours_not_datasets():
    rows = Dataset.from_list([{"input_ids": [BOS, 1], "labels": [-100, 1]}, {"input_ids": [BOS] * 30, "labels": [-100] * 30}])
    with pytest.raises(AksharaError, match="row 1: 30 tokens do not fit in a packed row of 10"):
        pack_bos_bestfit(rows, 10, BOS)
    with pytest.raises(AksharaError, match="needs input_ids and labels columns"):
        pack_bos_bestfit(rows.remove_columns("labels"), 10, BOS)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"packing": False}, "bos_bestfit packs only with packing: true"),
        ({"max_length": None}, "bos_bestfit needs max_length"),
        ({"stage": "mid", "schedule": None}, "bos_bestfit packs conversations for stage sft"),
        ({"train_sampling_strategy": "group_by_length"}, "trains its rows in order"),
        ({"packing_buffer_size": 0}, "packing_buffer_size must be a positive integer"),
        ({"packing_buffer_size": 2.5}, "packing_buffer_size must be a positive integer"),
        ({"packing_strategy": "best"}, "packing_strategy must be one of"),
        ({"warmup_ratio": 1.5}, r"warmup_ratio must be in \[0, 1\]"),
        ({"final_lr_frac": -0.1}, r"final_lr_frac must be in \[0, 1\]"),
        ({"warmup_ratio": 0.6}, "exceed the whole run"),
        ({"schedule": "sft", "warmup_ratio": 0.1}, "warmup_ratio belongs to schedule sft-2026"),
    ],
)
def test_bad_settings_are_refused(tmp_path, overrides, message):
    settings = dict(packing=True, packing_strategy="bos_bestfit", max_length=40, schedule="sft-2026")
    with pytest.raises(AksharaError, match=message):
        tiny_config(tmp_path, **{**settings, **overrides})


def test_rows_train_in_order(tmp_path):
    args = tiny_config(tmp_path, packing=True, packing_strategy="bos_bestfit", max_length=40,
                       train_sampling_strategy="random")  # fmt: skip
    assert args.train_sampling_strategy == "sequential"


def test_overlong_conversations_are_cut_to_max_length_first(tmp_path):
    rng = random.Random(3)
    long = conversation(rng, turns=6)  # about 100 tokens
    trainer = packed_trainer(tmp_path, dataset=Dataset.from_list([long, *conversations(6)]), max_length=40)
    assert len(long["input_ids"]) > 60
    assert all(len(row) == 41 for row in trainer.train_dataset["input_ids"])
    assert trainer.train_dataset["seq_lengths"][0][0] == 40  # the long one, cut to max_length, alone in its row


# ---- attention over the row (nanochat) or per conversation (padding_free) -----------------------------------------


def test_one_causal_row_by_default_and_document_masked_with_padding_free(tmp_path):
    from model_fixtures import TINY_NANOCHAT_2026

    config = AksharaConfig.from_nanochat({**TINY_NANOCHAT_2026, "vocab_size": 512})  # smear, value embeddings
    torch.manual_seed(0)
    model = AksharaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0.0, 0.3 if param.ndim > 1 else 0.1)
    data = conversations(12, seed=2)
    row_trainer = packed_trainer(tmp_path / "row", dataset=data, model=model)
    doc_trainer = packed_trainer(tmp_path / "doc", dataset=data, model=model, padding_free=True)
    assert row_trainer.train_dataset["input_ids"] == doc_trainer.train_dataset["input_ids"]
    index = next(i for i, count in enumerate(row_trainer.train_dataset["conversations"]) if count >= 2)
    row = row_trainer.train_dataset[index]
    first = row["seq_lengths"][0]
    second = slice(first, first + row["seq_lengths"][1])

    def log_probs(trainer, rows):
        batch = trainer.data_collator(rows)
        with torch.no_grad():
            return batch, model(**batch, fused_lm_head=True).log_probs[0]

    causal_batch, causal = log_probs(row_trainer, [row])
    assert "position_ids" not in causal_batch and causal_batch["attention_mask"].all()
    assert causal_batch["input_ids"].shape == (1, 97)
    doc_batch, doc = log_probs(doc_trainer, [row])
    assert doc_batch["position_ids"][0].tolist()[first] == 0  # positions restart at the second conversation
    alone = {"input_ids": row["input_ids"][second], "labels": row["labels"][second]}
    _, alone = log_probs(row_trainer, [alone])
    # Document-masked: the second conversation's losses are its own; one causal row: they see the first conversation.
    torch.testing.assert_close(doc[second.start: second.stop - 1], alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(causal[second.start: second.stop - 1], alone, atol=1e-3)


# ---- progress -----------------------------------------------------------------------------------------------------


class Steps(TrainerCallback):
    """The conversations in the rows each optimizer step trained (the micro-batches the Trainer gathered for it; equal
    rows hold equal conversations) and the LR multiplier and Muon momentum the step used."""

    def __init__(self, trainer):
        self.count = {tuple(row["input_ids"]): row["conversations"] for row in trainer.train_dataset}
        self.conversations, self.lrs, self.momenta = [], [], []
        gather = trainer.get_batch_samples

        def recording(epoch_iterator, num_batches, device):
            samples, items = gather(epoch_iterator, num_batches, device)
            rows = [tuple(row.tolist()) for batch in samples for row in batch["input_ids"]]
            self.conversations.append(sum(self.count[row] for row in rows))
            return samples, items

        trainer.get_batch_samples = recording
        trainer.add_callback(self)

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append(optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["initial_lr"])
        self.momenta.append(optimizer.param_groups[0]["momentum"])


@pytest.mark.parametrize(
    "settings",
    [
        {"per_device_train_batch_size": 2, "target_examples_per_step": 4},
        {"per_device_train_batch_size": 3, "target_examples_per_step": 3, "num_train_epochs": 2},
        {"per_device_train_batch_size": 2, "target_examples_per_step": 4, "dataloader_drop_last": True},
        {"per_device_train_batch_size": 2, "target_examples_per_step": 2, "max_steps": 9, "warmup_ratio": 0.25,
         "final_lr_frac": 0.1},
    ],
)
def test_progress_is_the_fraction_of_conversations_the_steps_trained(tmp_path, settings):
    trainer = packed_trainer(tmp_path, dataset=conversations(30, seed=4), **settings)
    rows = trainer.train_dataset
    assert len(set(rows["conversations"])) > 1  # else progress by rows would be the same
    record = Steps(trainer)
    trainer.train()
    consumed = list(accumulate(record.conversations))
    truth = [value / consumed[-1] for value in consumed]
    logs = [entry for entry in trainer.state.log_history if "progress" in entry]
    assert len(logs) == len(consumed) == trainer.state.max_steps
    assert [entry["progress"] for entry in logs] == truth  # exact: the same integers divided
    args = trainer.args
    expected = [progress_lr_multiplier(p, args.warmup_ratio, 0.5, args.final_lr_frac) for p in truth]
    assert record.lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert [entry["lrm"] for entry in logs] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert truth[-1] == 1.0 and expected[-1] == pytest.approx(args.final_lr_frac)
    assert record.momenta[:4] == pytest.approx([0.85, 0.85 + 0.1 / 3, 0.85 + 0.2 / 3, 0.95])


def test_step_progress_counts_processes_and_short_epochs():
    # 10 rows, 2 processes x batch 2 x accumulation 1: steps take rows 0-3, 4-7, 8-9 (+ padding), then again.
    counts = [1, 2, 3, 1, 1, 1, 2, 2, 1, 1]
    progress = step_progress(counts, 6, batch_size=2, accumulation=1, processes=2)
    assert progress == [7 / 30, 13 / 30, 15 / 30, 22 / 30, 28 / 30, 1.0]
    # drop_last: 5 batches over 2 processes leave the fifth (rows 8-9) out: 2 steps per epoch
    progress = step_progress(counts, 4, batch_size=2, accumulation=1, processes=2, drop_last=True)
    assert progress == [7 / 26, 13 / 26, 20 / 26, 1.0]
    with pytest.raises(AksharaError, match="no progress to schedule"):
        step_progress([], 3, batch_size=2)
