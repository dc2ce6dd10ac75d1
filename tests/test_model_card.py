"""Model cards: Hub metadata parsed back by huggingface_hub, the seeds' figures, the loss curve, bad facts refused."""

import json

import pytest
from huggingface_hub import ModelCard

from akshara_hf import AksharaConfig
from akshara_hf.errors import AksharaError
from model_card.card import (
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
        "mixture": [{"source": "XL-Sum (te)", "rows": 12, "tokens": 3456}, {"source": "identity", "rows": 3, "tokens": None}],
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


def test_sft_v1_card_carries_the_seed_figures_and_valid_metadata(folder):
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
    assert {"HuggingFaceTB/smol-smoltalk", "csebuetnlp/xlsum", "ai4bharat/IndicParaphrase"} == set(data.datasets)
    # The parent is a checkpoint name, not a Hub repo id: named in the text, kept out of the YAML.
    assert data.base_model is None
    assert "`nanochat-telugu-d20-mid-v1-akshara`" in card.text
    assert data.eval_results is None and "model-index" not in data.to_dict()

    text = card.text
    for row in (
        "| Steps | 45,102 |",
        "| Training time | 102,047 s (≈ 28.35 h) |",
        "| Final training loss | 0.99 |",
        "| Final validation loss | 0.89 |",
        "| Final LR multiplier | 0.000044 |",
        "| Initial LR fraction | 0.02 |",
        "| Unembedding LR (AdamW) | 0.004 |",
        "| Examples per step | 32 |",
        "| Conversations seen (steps × examples per step) | 1,443,264 |",
        "| Hardware | 1 × NVIDIA A30 |",
        "| Telugu tiny stories | 200,000 | — | — |",
    ):
        assert row in text
    assert "supervised fine-tuning" in text
    assert 'AutoModelForCausalLM.from_pretrained("akshara-org/nanochat-telugu-d20-sft-v1", trust_remote_code=True)' in text
    assert 'pipeline("text-generation", model="akshara-org/nanochat-telugu-d20-sft-v1", trust_remote_code=True)' in text
    assert '"role": "user"' in text
    assert "transformers serve --trust-remote-code akshara-org/nanochat-telugu-d20-sft-v1" in text
    # No per-step log in the seeds: no curve, and none referenced.
    assert not (folder / "loss_curve.png").exists() and "loss_curve.png" not in text


def test_mid_v1_card_carries_the_seed_figures(folder):
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
        "| Max sequence length | 2,048 |",
    ):
        assert row in card.text
    assert "Identity and personality (custom), included twice" in card.text
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


def test_seed_mid_flops_match_nanochat_estimate(tmp_path):
    """A reader's check: mid FLOPs = steps x 524,288 tokens x nanochat's per-token estimate for d20 at 2,048."""
    AksharaConfig().save_pretrained(tmp_path)
    arch = architecture_from_config(tmp_path / "config.json")
    assert arch["params"] == 560_988_160
    per_token = 6 * (arch["params"] - arch["embedding_params"]) + 12 * 20 * 10 * 128 * 2048
    for name in ("nanochat-telugu-d20-mid-smoltalk-100k", "nanochat-telugu-d20-mid-v1-akshara"):
        facts = seed_run_facts(name)
        implied = facts["total_flops"] / (facts["num_steps"] * facts["total_batch_tokens"])
        assert abs(implied / per_token - 1) < 0.002, (name, implied, per_token)


def test_architecture_counts_the_model_parameters(folder, tiny_model):
    arch = architecture_from_config(folder / "config.json")
    assert arch["params"] == sum(p.numel() for p in tiny_model.parameters())
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
    assert "| XL-Sum (te) | 12 | 3,456 |" in card.text
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
    with pytest.raises(AksharaError, match="not a directory"):
        write_model_card(tmp_path / "absent", facts=run_facts())
    assert not (folder / "README.md").exists()
