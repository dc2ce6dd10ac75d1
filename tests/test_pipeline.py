"""The training scripts and the one-command demo, end to end on the shipped samples (reduced step counts)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from akshara_hf.data.mixture import build_mixture
from akshara_hf.evaluation.evaluate import evaluate_loss
from akshara_hf.training.run import main as run_main

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "training" / "recipes"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The README's demo with every stage capped at 10 steps (the full demo runs 40 + 40 + 28 steps: bench/README.md has its times)."""
    root = tmp_path_factory.mktemp("demo")
    result = subprocess.run([sys.executable, "-m", "akshara_hf.cli", "demo", "--output", str(root), "--max-steps", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout[-6000:]
    return root, result.stdout  # stdout and stderr together, as `akshara-hf demo 2>&1 | tee log` keeps them


@pytest.mark.slow  # the demo fixture: ~70 s quiet
def test_demo_runs_every_stage_and_the_pipeline_answers(demo):
    root, stdout = demo
    for stage in ("base", "mid", "sft"):
        facts = json.loads((root / stage / "run_facts.json").read_text())
        assert facts["stage"] == stage and facts["num_steps"] == 10
        assert (root / stage / "README.md").is_file() and (root / stage / "loss_curve.png").is_file()
        assert list((root / stage).glob("checkpoint-*/model.safetensors"))  # checkpoints are HF folders
        assert len((root / stage / "log.jsonl").read_text().splitlines()) >= 2
    assert json.loads((root / "mid" / "run_facts.json").read_text())["final_val_bpb"] > 0
    reply = [line for line in stdout.splitlines() if line.startswith("assistant: ")]
    assert len(reply) == 1 and len(reply[0]) > len("assistant: ")
    # A readable log: numbered steps to the last one, each training stage's progress as whole lines (step i/N,
    # elapsed<ETA, rate, loss and tokens/s), no carriage returns nor the small bars of datasets, the reply explained.
    assert [f"=== [{n}/6]" in stdout for n in range(1, 7)] == [True] * 6
    assert "Generating train split" not in stdout and "\r" not in stdout
    finished = [line for line in stdout.splitlines()
                if line.startswith("training: 100%") and re.search(r"\| 10/10 \[\d\d:\d\d<00:00, ", line)]
    assert len(finished) == 3 and all("loss=" in line and "tokens/s=" in line for line in finished), stdout[-4000:]
    assert "Expect word salad" in stdout
    # The final model's card: no path of this machine, no dataset the samples are not.
    card = ModelCard.load(root / "sft" / "README.md")
    assert str(root) not in card.content and "/tmp" not in card.content
    assert card.data.datasets is None and card.data.base_model is None
    assert "trained from the checkpoint `mid` (not published on the Hub)" in " ".join(card.text.split())
    assert "ai4bharat/IndicParaphrase" in card.text  # the paraphrase source is named and linked


@pytest.mark.slow  # the demo fixture: ~70 s quiet
def test_mid_then_sft_lower_the_sft_validation_loss(demo, tmp_path):
    from transformers import AutoModelForCausalLM

    import akshara_hf.model.modeling_akshara  # noqa: F401  registers the Auto classes (the folders name no remote code we trust)

    root, _ = demo
    tokenizer = AutoTokenizer.from_pretrained(root / "sft")
    validation = build_mixture(RECIPES / "tiny-sft.yaml", tmp_path / "mixture")["validation"]
    losses = {stage: evaluate_loss(AutoModelForCausalLM.from_pretrained(root / stage), tokenizer, validation)["loss"]
              for stage in ("base", "mid", "sft")}
    assert losses["sft"] < losses["mid"] < losses["base"], losses


def _run(args, capsys) -> tuple[int, str]:
    """`python training/sft.py ARGS` in-process: exit code and stderr."""
    capsys.readouterr()  # drop what the test itself printed
    sys_argv = sys.argv
    sys.argv = ["sft.py", *args]
    try:
        code = run_main(script="sft.py")
    finally:
        sys.argv = sys_argv
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("sft.py: error: ")]
    assert len(errors) == (1 if code else 0), err[-2000:]
    return code, "\n".join(errors)


def test_bad_recipes_fail_before_training(tmp_path, capsys, converted_folder):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text((RECIPES / "tiny-sft.yaml").read_text() + "\nmatrix_lrr: 0.02\n")
    code, err = _run(["--config", str(recipe), "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "matrix_lrr" in err
    code, err = _run(["--config", str(RECIPES / "tiny-sft.yaml"), "--output_dir", str(tmp_path / "out"),
                      "--matrix_lr", "0"], capsys)
    assert code == 2 and "matrix_lr must be > 0" in err
    code, err = _run(["--config", str(RECIPES / "tiny-sft.yaml"), "--output_dir", str(tmp_path / "out"),
                      "--per_device_train_batch_size", "3"], capsys)
    assert code == 2 and "target_examples_per_step" in err
    llama = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(llama)
    AutoTokenizer.from_pretrained(converted_folder).save_pretrained(llama)
    code, err = _run(["--config", str(RECIPES / "tiny-sft.yaml"), "--output_dir", str(tmp_path / "out"),
                      "--model_name_or_path", str(llama)], capsys)
    assert code == 2 and "LlamaForCausalLM" in err
    assert not (tmp_path / "out" / "mixture").exists()  # failed before any data was built
    code, err = _run(["--config", str(RECIPES / "tiny-sft.yaml"), "--output_dir", str(tmp_path / "out"),
                      "--model_name_or_path", str(tmp_path / "missing")], capsys)
    assert code == 2 and "missing" in err


@pytest.mark.slow  # the demo fixture: ~70 s quiet
def test_evaluate_the_tiny_trained_model(demo, tmp_path):
    root, _ = demo
    command = [sys.executable, "-m", "akshara_hf.cli", "evaluate", str(root / "sft"), "--data", str(root / "sft" / "mixture"),
               "--limit", "2", "--max-new-tokens", "16", "--output", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert set(results["tasks"]) == {"summarization", "paraphrase"}
    assert all(0 <= task["rougeL"] <= 100 and task["rows"] == 2 for task in results["tasks"].values())
    assert results["loss"]["bpb"] > 0


@pytest.mark.slow  # the demo fixture: ~70 s quiet
def test_sft_rows_without_targets_within_max_length_are_dropped_and_counted(demo, capsys):
    from datasets import Dataset

    from akshara_hf.training.run import _tokenize

    root, _ = demo
    tokenizer = AutoTokenizer.from_pretrained(root / "sft")
    long_question = "తెలుగు " * 400  # the user turn alone fills max_length
    split = Dataset.from_dict({"messages": [
        [{"role": "user", "content": "నమస్కారం"}, {"role": "assistant", "content": "నమస్కారం! ఎలా ఉన్నారు?"}],
        [{"role": "user", "content": long_question}, {"role": "assistant", "content": "సరే"}],
    ]})
    rows = _tokenize("sft", split, tokenizer, max_seq_len=256, max_length=64)
    assert len(rows) == 1 and any(rows[0]["assistant_masks"]) and len(rows[0]["input_ids"]) <= 64
    assert "1 of 2 conversations have no assistant token within 64 tokens; dropped" in capsys.readouterr().err
