"""Model cards: Hub metadata parsed back by huggingface_hub, the seeds' figures, the loss curve, bad facts refused."""

import contextlib
import json
from pathlib import Path
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from akshara_hf import AksharaConfig
from akshara_hf.errors import AksharaError
from model_card import (
    SEED_RUNS,
    architecture_from_config,
    facts_from_nanochat_meta,
    seed_run_facts,
    validate_run_facts,
    write_model_card,
)
from model_fixtures import tiny_akshara

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_akshara()[0]


@pytest.fixture
def d20_folder(tmp_path):
    """config.json alone is all a card reads from the folder: the seeds' own d20 shape, without weights."""
    AksharaConfig().save_pretrained(tmp_path / "d20")
    return tmp_path / "d20"


@pytest.fixture
def folder(tmp_path, tiny_model):
    """A model-only folder: config.json, weights and remote code (all a card needs)."""
    out = tmp_path / "model"
    tiny_model.save_pretrained(out)
    return out


def run_facts(**overrides):
    facts = {
        "run_name": "akshara-tiny-sft",
        "stage": "sft",
        "base_model": "akshara-org/akshara-tiny-mid",
        "hardware": "CPU",
        "num_steps": 6,
        "train_time_seconds": 12.5,
        "dtype": "float32",
        "device_batch_size": 2,
        "examples_per_step": 4,
        "matrix_lr": 0.02,
        "embedding_lr": 0.2,
        "unembedding_lr": 0.004,
        "init_lr_frac": 0.02,
        "weight_decay": 0,
        "num_epochs": 1,
        "final_train_loss": 5.25,
        "final_val_loss": 5.5,
        "final_lrm": 0.1667,
        "mixture": [{"source": "xlsum", "rows": 12, "tokens": 3456, "hub_id": "csebuetnlp/xlsum"},
                    {"source": "identity", "rows": 3, "tokens": None}],
        "log_history": [
            {"step": 2, "loss": 5.9, "lrm": 0.83},
            {"step": 4, "loss": 5.6, "eval_loss": 5.7, "lrm": 0.5},
            {"step": 6, "loss": 5.25, "eval_loss": 5.5, "lrm": 0.1667},
        ],
        "eval_results": [
            {"task": "summarization", "dataset": "csebuetnlp/xlsum", "metric": "rougeL", "value": 12.5, "split": "test"},
            {"task": "language-modeling", "dataset": "csebuetnlp/xlsum", "metric": "bpb", "value": 0.91},
        ],
    }
    facts.update(overrides)
    return facts


def test_sft_v1_card_carries_the_seed_figures_and_valid_metadata(d20_folder):
    folder = d20_folder
    path = write_model_card(folder, seed_run_facts("nanochat-telugu-d20-sft-v1"), repo_id="akshara-org/nanochat-telugu-d20-sft-v1")
    assert path == folder / "README.md"
    card = ModelCard.load(path)
    data = card.data
    assert data.language == "te"
    assert data.license == "mit"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert {"nanochat", "akshara", "telugu", "muon", "sft"} <= set(data.tags)
    assert "trl" not in data.tags  # the published runs used nanochat's own scripts
    # Only the datasets the run read from the Hub; the Telugu SmolTalk translation is not smol-smoltalk itself.
    assert data.datasets == ["ai4bharat/IndicParaphrase", "csebuetnlp/xlsum"]
    assert data.model_name == "nanochat-telugu-d20-sft-v1"
    # The parent is a checkpoint name, not a Hub repo id: named in the text, kept out of the YAML.
    assert data.base_model is None
    assert "`nanochat-telugu-d20-mid-v1-akshara` (not published on the Hub)" in card.text
    assert "late 2025 architecture" in card.text
    assert data.eval_results is None and "model-index" not in data.to_dict()

    text = card.text
    for row in (
        "| Steps | 45,102 |",
        "| Training time | 102,047 s (≈ 28.35 h) |",
        "| Final training loss | 0.99 |",
        "| Final validation loss | 0.89 |",
        "| Final LR multiplier | 0.000044 |",
        "| Initial LR fraction | 0.02 |",
        # the LRs nanochat applied: base LR x (width/768)^-0.5 x init_lr_frac, said so
        "| Unembedding LR (AdamW, lm_head) | 0.00006197 = unembedding_lr 0.004 × (1,280/768)^-0.5 × init_lr_frac 0.02 |",
        "| Muon LR (block matrices) | 0.0004 = matrix_lr 0.02 × init_lr_frac 0.02 |",
        "| Epochs (passes over the training data) | 1 |",
        "| Validation every (steps) | 100 |",
        "| Examples per step | 32 |",
        "| Conversations seen (steps × examples per step) | 1,443,264 |",
        "| Hardware | 1 × NVIDIA A30 |",
        "| Telugu tiny stories | 200,000 | — | local files |",
        "| Parameters | 560,988,160 (≈ 561M), of which the token embedding 83,886,080 and the untied output head 83,886,080 |",
    ):
        assert row in text
    assert "supervised fine-tuning" in text
    assert 'AutoModelForCausalLM.from_pretrained("akshara-org/nanochat-telugu-d20-sft-v1", trust_remote_code=True)' in text
    assert 'AutoTokenizer.from_pretrained("akshara-org/nanochat-telugu-d20-sft-v1", config=model.config)' in text
    assert 'pipeline("text-generation", model="akshara-org/nanochat-telugu-d20-sft-v1", trust_remote_code=True)' in text
    assert '"role": "user"' in text
    assert "akshara-hf serve akshara-org/nanochat-telugu-d20-sft-v1 --port 8000" in text
    assert "transformers serve --trust-remote-code" not in text  # it cannot load remote-code models
    assert "akshara-hf export-native akshara-org/nanochat-telugu-d20-sft-v1 ./akshara-native" in text
    # No per-step log in the seeds: no curve, and none referenced.
    assert not (folder / "loss_curve.png").exists() and "loss_curve.png" not in text


def test_mid_v1_card_carries_the_seed_figures(d20_folder):
    folder = d20_folder
    card = ModelCard.load(write_model_card(folder, seed_run_facts("nanochat-telugu-d20-mid-v1-akshara"), license="apache-2.0"))
    assert card.data.license == "apache-2.0"
    assert "mid-training" in card.data.tags
    for row in (
        "| Steps | 1,047 |",
        "| Final validation bpb | 0.268 |",
        "| Final training loss | 0.89 |",
        "| Training time | 24,586.11 s (≈ 6.83 h) |",
        "| Total training FLOPs | 1.917 EFLOP (1,916,729,142,678,651,000) |",
        "| Achieved throughput (FLOPs / time) | ≈ 78 TFLOP/s |",
        "| Final LR multiplier | 0.031 |",
        "| Device batch size | 2 |",
        "| Training sequence length (tokens, at most) | 2,048 |",
        "| Context length | 2,048 tokens |",
    ):
        assert row in card.text
    assert "Identity and personality (custom), included twice" in card.text
    assert ("| IndicParaphrase, Telugu ([ai4bharat/IndicParaphrase](https://huggingface.co/datasets/ai4bharat/IndicParaphrase))"
            " | — | — | [ai4bharat/IndicParaphrase](https://huggingface.co/datasets/ai4bharat/IndicParaphrase) |") in card.text
    # Without a repo id the snippets load the folder itself.
    assert f'from_pretrained("./{folder.name}", trust_remote_code=True)' in card.text


def test_seed_runs_are_all_there_and_consistent():
    """SFT steps x 32 examples ~ the mixture size where the write-up gives it."""
    assert len(SEED_RUNS) == 8
    for name in SEED_RUNS:
        facts = seed_run_facts(name)
        assert facts["run_name"] == name and facts["num_steps"] > 0 and facts["train_time_seconds"] > 0
        assert facts["stage"] == ("mid" if "-mid-" in name else "sft")
    smoltalk = seed_run_facts("nanochat-telugu-d20-sft-smoltalk-10k")
    assert abs(smoltalk["num_steps"] * smoltalk["examples_per_step"] - 10_000) / 10_000 < 0.01
    with pytest.raises(AksharaError, match="not a published Akshara run"):
        seed_run_facts("nanochat-telugu-d20-sft-v2")


def test_seed_mid_flops_match_nanochat_estimate(d20_folder):
    """A reader's check: mid FLOPs = steps x 524,288 tokens x nanochat's per-token estimate for d20 at 2,048."""
    arch = architecture_from_config(d20_folder / "config.json")
    assert arch["params"] == 560_988_160
    assert arch["non_embedding_params"] == arch["params"] - arch["embedding_params"]
    per_token = 6 * (arch["params"] - arch["embedding_params"]) + 12 * 20 * 10 * 128 * 2048
    for name in ("nanochat-telugu-d20-mid-smoltalk-100k", "nanochat-telugu-d20-mid-v1-akshara"):
        facts = seed_run_facts(name)
        implied = facts["total_flops"] / (facts["num_steps"] * facts["total_batch_tokens"])
        assert abs(implied / per_token - 1) < 0.002, (name, implied, per_token)


def test_architecture_counts_the_model_parameters(folder, tiny_model):
    arch = architecture_from_config(folder / "config.json")
    assert arch["params"] == sum(p.numel() for p in tiny_model.parameters()) == tiny_model.num_parameters()
    assert arch["embedding_params"] == arch["head_params"] == 300 * 64
    assert (arch["generation"], arch["context"]) == ("late 2025", 64)
    assert (arch["layers"], arch["hidden_size"], arch["heads"], arch["kv_heads"], arch["vocab_size"]) == (2, 64, 4, 2, 300)


def test_run_facts_card_has_model_index_base_model_and_loss_curve(folder):
    (folder / "run_facts.json").write_text(json.dumps(run_facts()))
    path = write_model_card(folder, repo_id="akshara-org/akshara-tiny-sft")  # facts read from run_facts.json
    card = ModelCard.load(path)
    assert card.data.base_model == "akshara-org/akshara-tiny-mid"
    assert "trl" in card.data.tags
    assert card.data.datasets == ["csebuetnlp/xlsum"]
    results = card.data.eval_results
    assert [(r.metric_type, r.metric_value, r.dataset_type, r.task_name) for r in results] == [
        ("rougeL", 12.5, "csebuetnlp/xlsum", "summarization"),
        ("bpb", 0.91, "csebuetnlp/xlsum", "language-modeling"),
    ]
    assert results[0].dataset_split == "test"
    assert "model-index:" in path.read_text()
    assert "| summarization | csebuetnlp/xlsum (test) | rougeL | 12.5 |" in card.text
    assert ("| XL-Sum, Telugu, summaries ([csebuetnlp/xlsum](https://huggingface.co/datasets/csebuetnlp/xlsum)) | 12 | 3,456 | "
            "[csebuetnlp/xlsum](https://huggingface.co/datasets/csebuetnlp/xlsum) |") in card.text
    assert "| Identity and personality conversations (custom) | 3 | — | local files |" in card.text
    assert "| Conversations seen (steps × examples per step) | 24 |" in card.text

    png = folder / "loss_curve.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size > 5_000  # a drawn figure, not an empty canvas
    assert "![Training and validation loss by step](loss_curve.png)" in card.text


def test_nanochat_meta_folder(folder):
    meta = {
        "step": 310,
        "val_loss": 0.84,
        "mmlu_acc": 0.31,
        "model_config": {"sequence_len": 64, "vocab_size": 300, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 64},
        "user_config": {"run": "dummy", "dtype": "bfloat16", "device_batch_size": 2, "target_examples_per_step": 32,
                        "num_iterations": -1, "matrix_lr": 0.02, "init_lr_frac": 0.02, "num_epochs": 1},
        "source_checkpoint": "/data/chatsft_checkpoints/d20/model_000310.pt",
    }
    facts = facts_from_nanochat_meta(meta, run_name="converted-sft")
    assert (facts["run_name"], facts["stage"], facts["trainer"]) == ("converted-sft", "sft", "nanochat")
    assert (facts["num_steps"], facts["final_val_loss"], facts["examples_per_step"], facts["max_seq_len"]) == (310, 0.84, 32, 64)
    assert facts["eval_results"] == [{"task": "MMLU", "dataset": "cais/mmlu", "metric": "accuracy", "value": 0.31, "split": None}]

    (folder / "nanochat_meta.json").write_text(json.dumps(meta))
    card = ModelCard.load(write_model_card(folder))
    assert card.data.eval_results[0].metric_value == 0.31
    assert "# model" in card.text  # the run name falls back to the folder's name
    assert "| Steps | 310 |" in card.text

    mid = facts_from_nanochat_meta({"step": 262, "val_bpb": 0.276, "model_config": meta["model_config"],
                                    "user_config": {"run": "telugu-mid", "total_batch_size": 524288, "init_lr_frac": 1.0}})
    assert (mid["run_name"], mid["stage"], mid["final_val_bpb"], mid["total_batch_tokens"]) == ("telugu-mid", "mid", 0.276, 524288)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"final_val_los": 0.9}, "unknown fields ['final_val_los']"),
        ({"stage": "rl"}, "stage: must be one of"),
        ({"num_steps": "many"}, "num_steps: must be a non-negative integer"),
        ({"final_val_loss": float("nan")}, "final_val_loss: must be a finite number"),
        ({"mixture": [{"rows": 3}]}, "mixture[0].source: required"),
        ({"log_history": [{"step": 1, "loss": 2.0, "lr": 0.1}]}, "log_history[0]: unknown keys ['lr']"),
        ({"eval_results": [{"task": "t", "dataset": "d", "metric": "m"}]}, "eval_results[0].value: required"),
        ({"run_name": None}, "run_name: required"),
        ({"in_progress": "yes"}, "in_progress: must be true or false"),
    ],
)
def test_bad_facts_are_refused_naming_the_field(overrides, fragment):
    with pytest.raises(AksharaError) as error:
        validate_run_facts(run_facts(**overrides), "run_facts.json")
    message = str(error.value)
    assert fragment in message and message.startswith("run_facts.json: ") and "\n" not in message


def test_bad_folders_are_refused_naming_the_file(folder, tmp_path):
    with pytest.raises(AksharaError, match=r"neither run_facts\.json nor nanochat_meta\.json"):
        write_model_card(folder)
    (folder / "run_facts.json").write_text("{not json")
    with pytest.raises(AksharaError, match=r"run_facts\.json: not valid JSON"):
        write_model_card(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(AksharaError, match=r"config\.json: model_type 'llama'"):
        write_model_card(folder, facts=run_facts())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": "wide"}))
    with pytest.raises(AksharaError, match=r"config\.json: hidden_size must be a positive integer"):
        write_model_card(folder, facts=run_facts())
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(AksharaError, match=r"--repo-id '/tmp/x': not a Hub repo id"):
        write_model_card(folder, facts=run_facts(), repo_id="/tmp/x")
    with pytest.raises(AksharaError, match="not a directory"):
        write_model_card(tmp_path / "absent", facts=run_facts())
    assert not (folder / "README.md").exists()


def test_a_hand_written_readme_is_never_overwritten_silently(folder, capsys):
    from akshara_hf.cli import main

    hand = folder / "README.md"
    hand.write_text("# my own notes\n", encoding="utf-8")
    with pytest.raises(AksharaError, match=r"README\.md: exists and was not written by akshara-hf model-card"):
        write_model_card(folder, facts=run_facts())
    (folder / "facts.json").write_text(json.dumps(run_facts()))
    assert main(["model-card", str(folder), "--facts", str(folder / "facts.json")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert hand.read_text(encoding="utf-8") == "# my own notes\n"
    written = write_model_card(folder, facts=run_facts(), overwrite=True)
    assert "my own notes" not in written.read_text(encoding="utf-8")
    write_model_card(folder, facts=run_facts())  # our own card is replaced without --overwrite
    hand.unlink()
    hand.symlink_to(folder / "config.json")
    with pytest.raises(AksharaError, match="not a regular file"):
        write_model_card(folder, facts=run_facts(), overwrite=True)
    assert json.loads((folder / "config.json").read_text())  # the link's target is untouched


def test_the_loss_curve_is_never_written_through_a_link_nor_over_a_users_file(folder, tmp_path, capsys):
    """loss_curve.png used to be written through a symlink onto any file, and over a user's own figure without
    --overwrite. Ours carries its own mark (a PNG text chunk) and is replaced freely."""
    from akshara_hf.cli import main

    (folder / "facts.json").write_text(json.dumps(run_facts()))
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    png = folder / "loss_curve.png"
    png.symlink_to(target)
    for overwrite in ([], ["--overwrite"]):
        assert main(["model-card", str(folder), "--facts", str(folder / "facts.json"), *overwrite]) == 2
        assert "loss_curve.png: not a regular file" in capsys.readouterr().err
    assert target.read_text() == "keep me" and not (folder / "README.md").exists()
    png.unlink()
    png.write_bytes(PNG_SIGNATURE + b"a figure the user drew")
    with pytest.raises(AksharaError, match=r"loss_curve\.png: exists and was not written by akshara-hf model-card"):
        write_model_card(folder, facts=run_facts())
    assert png.read_bytes() == PNG_SIGNATURE + b"a figure the user drew" and not (folder / "README.md").exists()
    write_model_card(folder, facts=run_facts(), overwrite=True)
    ours = png.read_bytes()
    assert ours[:8] == PNG_SIGNATURE and len(ours) > 5_000
    write_model_card(folder, facts=run_facts(), license="apache-2.0")  # our own figure: replaced without --overwrite
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_a_failed_write_keeps_the_old_card(folder, monkeypatch):
    """A full disk while writing the card leaves the earlier card whole (written beside it, then renamed)."""
    from akshara_hf import folders

    write_model_card(folder, facts=run_facts())
    before = {name: (folder / name).read_bytes() for name in ("README.md", "loss_curve.png")}

    def full_disk(file, data):
        file.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folders, "_write_all", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_model_card(folder, facts=run_facts(), license="apache-2.0")
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_a_card_written_while_training_says_so_and_needs_no_config_json_yet(d20_folder, tmp_path):
    """The trainer's card hook writes the output folder's card before the model is saved there (from the model's
    config); a checkpoint's figures are the steps so far, never labelled final."""
    config = json.loads((d20_folder / "config.json").read_text())
    empty = tmp_path / "run"
    empty.mkdir()
    with pytest.raises(AksharaError, match=r"config\.json"):
        write_model_card(empty, facts=run_facts())
    facts = run_facts(num_steps=4, in_progress=True, planned_steps=6)
    card = ModelCard.load(write_model_card(empty, facts=facts, config=config))
    assert card.data.model_name == "akshara-tiny-sft" and "sft" in card.data.tags
    assert "| Layers | 20 |" in card.text and not (empty / "config.json").exists()
    assert "This card was written at step 4 of the\n> 6 planned" in card.text
    assert "| Steps (so far of 6 planned; training in progress) | 4 |" in card.text
    assert "| Last training loss | 5.25 |" in card.text and "Final" not in card.text
    finished = ModelCard.load(write_model_card(empty, facts=run_facts(num_steps=6), config=config)).text
    assert "| Steps | 6 |" in finished and "| Final training loss | 5.25 |" in finished
    assert "in progress" not in finished


# ----------------------------------------------------------------------------- the card tells the truth


def demo_like_facts(base_model):
    """What the demo's SFT run records: a local parent, the shipped samples, a cut limit above the model's context,
    float noise in the figures."""
    return run_facts(
        base_model=base_model, max_seq_len=1024, final_lrm=0.033333333333333326, final_train_loss=5.123456789,
        train_time_seconds=83.4567, log_history=[], eval_results=[],
        mixture=[{"source": kind, "rows": rows, "tokens": None}
                 for kind, rows in (("smoltalk", 11), ("paraphrase", 21), ("xlsum", 14), ("identity", 5))],
    )


def test_demo_card_has_no_local_path_no_unused_dataset_and_rounded_numbers(folder, tmp_path):
    parent = tmp_path / "runs" / "demo" / "mid"
    parent.mkdir(parents=True)
    path = write_model_card(folder, demo_like_facts(str(parent)))
    text = path.read_text(encoding="utf-8")
    card = ModelCard.load(path)
    assert str(tmp_path) not in text and "/runs/" not in text  # the machine's layout never reaches the card
    assert card.data.base_model is None and "base_model_relation" not in card.data.to_dict()
    assert "trained from the checkpoint `mid` (not published on the Hub)" in " ".join(text.split())
    assert card.data.datasets is None  # the samples are local files, not the Hub datasets
    assert "HuggingFaceTB/smol-smoltalk" not in card.data.to_dict().get("datasets", [])
    # IndicParaphrase is named and linked although the run facts say "paraphrase"
    assert ("| IndicParaphrase, Telugu ([ai4bharat/IndicParaphrase](https://huggingface.co/datasets/ai4bharat/IndicParaphrase))"
            " | 21 | — | local files |") in text
    assert "| Final LR multiplier | 0.03333 |" in text
    assert "| Final training loss | 5.123 |" in text
    assert "| Training time | 83.46 s |" in text
    assert "0.0333333" not in text and "5.123456" not in text
    # One story about lengths: the model's context, and why the run's limit is larger.
    assert "| Context length | 64 tokens |" in text
    assert ("| Training sequence length (tokens, at most) | 64 (the model's context; the run's cut limit was set to 1,024) |"
            in text)
    assert "Max sequence length" not in text
    assert "The built mixture itself is not published with the model." in text


def test_a_hub_parent_is_linked_and_kept_in_the_metadata(folder):
    card = ModelCard.load(write_model_card(folder, demo_like_facts("akshara-org/akshara-tiny-mid")))
    assert card.data.base_model == "akshara-org/akshara-tiny-mid"
    assert card.data.base_model_relation == "finetune"
    assert "[`akshara-org/akshara-tiny-mid`](https://huggingface.co/akshara-org/akshara-tiny-mid)" in card.text


def evaluate_output(tmp_path):
    """eval_results.json as `akshara-hf evaluate --output DIR` writes it."""
    results = {
        "model": "runs/demo/sft", "data": "runs/demo/sft/mixture", "split": "validation",
        "loss": {"targets": 812, "loss": 5.4321987, "bpb": 2.10987654},
        "tasks": {"summarization": {"rows": 4, "sources": ["tesum", "xlsum"], "rouge1": 3.125, "rouge2": 0.0,
                                    "rougeL": 3.125, "chrf": 11.87654321, "examples": []}},
    }
    path = tmp_path / "eval" / "eval_results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(results))
    return path


def test_evaluate_results_become_the_model_index_field_by_field(folder, tmp_path):
    card = ModelCard.load(write_model_card(folder, demo_like_facts("mid"), repo_id="akshara-org/akshara-tiny",
                                           eval_results=evaluate_output(tmp_path)))
    rows = [(r.task_type, r.task_name, r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value)
            for r in card.data.eval_results]
    assert rows == [
        ("text-generation", "language-modeling", "akshara-mixture", "akshara-mixture", "validation", "loss", 5.4321987),
        ("text-generation", "language-modeling", "akshara-mixture", "akshara-mixture", "validation", "bpb", 2.10987654),
        ("summarization", "summarization", "akshara-mixture", "akshara-mixture", "validation", "rouge1", 3.125),
        ("summarization", "summarization", "akshara-mixture", "akshara-mixture", "validation", "rouge2", 0.0),
        ("summarization", "summarization", "akshara-mixture", "akshara-mixture", "validation", "rougeL", 3.125),
        ("summarization", "summarization", "akshara-mixture", "akshara-mixture", "validation", "chrf", 11.87654321),
    ]
    assert "| summarization | akshara-mixture (validation) | chrf | 11.88 |" in card.text
    assert "| language-modeling | akshara-mixture (validation) | bpb | 2.11 |" in card.text


def test_a_file_that_is_not_an_evaluate_result_is_refused(folder, tmp_path):
    bad = tmp_path / "eval_results.json"
    bad.write_text(json.dumps({"rouge": 1}))
    with pytest.raises(AksharaError, match=r"eval_results\.json: not an `akshara-hf evaluate` result"):
        write_model_card(folder, demo_like_facts("mid"), eval_results=bad)
    bad.write_text(json.dumps({"loss": {"loss": "low", "bpb": 1.0}}))
    with pytest.raises(AksharaError, match=r"eval_results\.json: eval_results\[0\]\.value: must be a finite number"):
        write_model_card(folder, demo_like_facts("mid"), eval_results=bad)
    assert not (folder / "README.md").exists()


def _code_blocks(text, language):
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_cards_python_snippets_run_as_written(converted_folder, tmp_path):
    """Both snippets, copied out of the card, in a fresh process without akshara_hf, offline, with no terminal to
    answer a prompt: they run, and neither the remote-code prompt nor the model-type warning appears."""
    folder = shutil.copytree(converted_folder, tmp_path / "akshara-tiny")
    text = write_model_card(folder).read_text(encoding="utf-8")
    snippets = _code_blocks(text, "python")
    assert len(snippets) == 2 and all('"./akshara-tiny"' in code for code in snippets)
    snippets = [code.replace("max_new_tokens=256", "max_new_tokens=8") for code in snippets]  # same code, less waiting
    snippets.append('from transformers import PreTrainedTokenizerFast\n'
                    'tok = PreTrainedTokenizerFast.from_pretrained("./akshara-tiny")\nassert tok.chat_template\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "TQDM_DISABLE": "1"}
    env.pop("PYTHONPATH", None)
    for code in snippets:
        result = subprocess.run([sys.executable, "-c", "import sys; sys.modules['akshara_hf'] = None\n" + code],
                                cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        for unwanted in ("custom code", "trust_remote_code", "model of type", "[y/N]"):
            assert unwanted not in result.stderr + result.stdout, (unwanted, result.stderr[-2000:])


def test_the_cards_serve_commands_parse_with_the_real_command_line(folder):
    from akshara_hf.cli import build_parser

    text = write_model_card(folder, run_facts(), repo_id="akshara-org/akshara-tiny").read_text(encoding="utf-8")
    (block, native, vllm) = _code_blocks(text, "bash")
    lines = block.replace("\\\n", " ").splitlines()
    args = build_parser().parse_args(shlex.split(lines[0])[1:])
    assert (args.command, args.folder, args.port) == ("serve", "akshara-org/akshara-tiny", 8000)
    body = json.loads(shlex.split(lines[1])[-1])
    assert body["model"] == "akshara-org/akshara-tiny" and body["messages"][0]["role"] == "user"
    args = build_parser().parse_args(shlex.split(native.splitlines()[0])[1:])
    assert (args.command, args.folder, args.output_dir) == ("export-native", "akshara-org/akshara-tiny", "./akshara-native")
    # vLLM's (README's command, run as written by tests/test_vllm.py in vLLM's environment)
    assert "--model akshara-org/akshara-tiny --trust-remote-code" in vllm


# ----------------------------------------------------------------------------- layering


def test_akshara_hf_never_imports_model_card():
    """model_card builds on akshara_hf; the reverse would be a cycle. No import statement, no module name string."""
    import ast

    package = Path(__file__).parents[1] / "akshara_hf"
    offenders = []
    for path in sorted(package.glob("**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.startswith("model_card.") else []
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "model_card"]
    assert offenders == []
    code = ("import importlib, pkgutil, sys, akshara_hf\n"
            "for info in pkgutil.walk_packages(akshara_hf.__path__, 'akshara_hf.'):\n"
            "    if not info.name.endswith('.__main__'):  # running the CLI is not importing it\n"
            "        importlib.import_module(info.name)\n"
            "from akshara_hf.cli import COMMAND_MODULES, build_parser\n"
            "build_parser(COMMAND_MODULES)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'model_card'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_cli_takes_the_card_commands_from_the_entry_point_group(monkeypatch):
    import configparser
    from importlib import metadata

    from akshara_hf import cli

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).parents[1] / "setup.cfg")
    declared = setup["options.entry_points"]["akshara_hf.commands"].split()
    assert declared == ["publish", "=", "model_card.publish"]
    entry = metadata.EntryPoint(name="publish", value="model_card.publish", group=cli.PLUGIN_GROUP)
    monkeypatch.setattr(metadata, "entry_points", lambda group: [entry] if group == cli.PLUGIN_GROUP else [])
    assert cli.command_modules()[-1] == "model_card.publish"
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    assert {"publish", "model-card", "demo", "serve"} <= set(choices)


def test_a_source_read_from_the_hub_is_linked_and_in_the_metadata(folder):
    facts = demo_like_facts("mid")
    facts.update(datasets=["csebuetnlp/xlsum"],
                 data_sources=["smoltalk: /home/me/data/smoltalk.jsonl", "xlsum: csebuetnlp/xlsum"])
    path = write_model_card(folder, facts)
    card, text = ModelCard.load(path), path.read_text(encoding="utf-8")
    assert card.data.datasets == ["csebuetnlp/xlsum"]
    assert ("| XL-Sum, Telugu, summaries ([csebuetnlp/xlsum](https://huggingface.co/datasets/csebuetnlp/xlsum)) | 14 | — | "
            "[csebuetnlp/xlsum](https://huggingface.co/datasets/csebuetnlp/xlsum) |") in text
    assert "| 11 | — | local files |" in text and "/home/me" not in text


@pytest.mark.parametrize("config, expected", [
    ({}, "late 2025"), ({"use_value_embeddings": False, "use_smear": False}, "late 2025"),
    ({"use_value_embeddings": True}, "2026"), ({"use_backout": True}, "2026"),
    ({"nanochat_generation": "2026", "use_smear": False}, "2026"),
])
def test_the_nanochat_generation_comes_from_the_config(config, expected):
    from model_card.architecture import nanochat_generation

    assert nanochat_generation(config) == expected


def test_the_cards_serve_snippet_answers_as_written(converted_folder, tmp_path):
    """The card's serve command and request, run from the folder's parent (the port swapped for a free one): the
    server starts on the folder and answers the card's request with an assistant message."""
    import urllib.request

    from test_serve import _free_port, _server

    folder = shutil.copytree(converted_folder, tmp_path / "akshara-tiny")
    block = _code_blocks(write_model_card(folder).read_text(encoding="utf-8"), "bash")[0]
    serve_line, curl_line = block.replace("\\\n", " ").splitlines()[:2]
    port = _free_port()
    command = shlex.split(serve_line.replace("--port 8000", f"--port {port}"))
    assert command[:3] == ["akshara-hf", "serve", "./akshara-tiny"]
    curl = shlex.split(curl_line)
    url = curl[1].replace(":8000", f":{port}")
    body = json.loads(curl[-1])
    with contextlib.chdir(tmp_path), _server([sys.executable, "-m", "akshara_hf.cli", *command[1:]], port, body["model"]):
        request = urllib.request.Request(url, data=json.dumps({**body, "max_tokens": 8}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(answer["choices"][0]["message"]["content"], str)
