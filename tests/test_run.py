"""The recipe runner as a user meets it: the README's first-training commands verbatim (at tiny size), seeds, command-
line overrides of the mixture, run facts after a resume, one final evaluation."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from akshara_hf.training.run import train

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "training" / "recipes"
# Tiny size for every README command: flags added after the README's own (the last of a repeated flag wins).
TINY = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
        "--target_examples_per_step", "2", "--max_seq_len", "64", "--eval_tokens", "128", "--max_length", "128"]


def readme_first_training() -> list[list[str]]:
    """The commands of the README's first-training block, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"The first training, in order.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md lost its first-training block"
    commands = [shlex.split(line.split("#")[0]) for line in block.group(1).splitlines() if line.strip()]
    assert commands and all(command[:2][0] == "python" for command in commands)
    return commands


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
    """A fresh clone's view: a folder with the repository's training/ and data/ and nothing else (no runs/); each
    README command run there as written, plus the tiny size. Each command's stderr is kept in `stderr-N.txt`."""
    root = tmp_path_factory.mktemp("clone")
    for name in ("training", "data"):
        (root / name).symlink_to(REPO / name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    results = []
    for command in readme_first_training():
        result = subprocess.run([sys.executable, *command[1:], *TINY], cwd=root, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f"{shlex.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        (root / f"stderr-{len(results)}.txt").write_text(result.stderr, encoding="utf-8")
        results.append(Path(result.stdout.strip().splitlines()[-1]))
    return root, results


def losses(folder: Path) -> list:
    return [(entry["step"], entry.get("loss"), entry.get("eval_loss"))
            for entry in map(json.loads, (folder / "log.jsonl").read_text().splitlines())
            if "loss" in entry or "eval_loss" in entry]


def test_readme_first_training_runs_in_order_on_a_fresh_clone(readme_runs):
    root, outputs = readme_runs
    assert [str(o) for o in outputs] == ["runs/tiny-base", "runs/tiny-mid", "runs/tiny-sft"]
    for output, stage in zip(outputs, ("base", "mid", "sft"), strict=True):
        facts = json.loads((root / output / "run_facts.json").read_text())
        assert (facts["stage"], facts["num_steps"]) == (stage, 2)
        assert (root / output / "model.safetensors").is_file() and (root / output / "README.md").is_file()
    assert json.loads((root / "runs/tiny-mid/run_facts.json").read_text())["base_model"] == "runs/tiny-base"


def test_training_shows_steps_eta_loss_and_tokens_per_second(readme_runs):
    """Off a terminal (here: a pipe) the Trainer's bar is whole lines: step i/N, elapsed<ETA, rate, and the last loss
    and tokens/s; every logged loss has its tokens/s in log.jsonl too."""
    root, outputs = readme_runs
    for index, output in enumerate(outputs):
        err = (root / f"stderr-{index}.txt").read_text(encoding="utf-8")
        assert "\r" not in err
        lines = [line for line in err.splitlines() if line.startswith("training:") and "|" in line]
        assert lines and re.search(r"\| 2/2 \[\d\d:\d\d<\d\d:\d\d, ", lines[-1]), (output, err[-2000:])
        log = [json.loads(line) for line in (root / output / "log.jsonl").read_text().splitlines()]
        assert all(entry["train_tokens_per_second"] > 0 for entry in log if "loss" in entry)
    sft_line = [line for line in (root / "stderr-2.txt").read_text().splitlines() if line.startswith("training:")][-1]
    assert re.search(r"loss=\d+\.\d+, tokens/s=[\d,]+]$", sft_line), sft_line  # tiny-sft logs its loss at step 2


def test_the_card_states_the_run_not_the_recipe(readme_runs, straight_sft):
    """tiny-sft's recipe says 2 epochs, validation and checkpoints every 10 steps; a 2-step run made a fraction of an
    epoch, validated and saved once, at its end. The LRs are those the optimizer applied, the scaling named."""
    from model_card.card import _num

    root, _ = readme_runs
    facts = json.loads((root / "runs/tiny-sft/run_facts.json").read_text())
    text = (root / "runs/tiny-sft/README.md").read_text(encoding="utf-8")
    assert 0 < facts["num_epochs"] < 0.2
    assert f"| Epochs (passes over the training data) | {_num(facts['num_epochs'])} |" in text
    assert "| Epochs (passes over the training data) | 2 |" not in text and "Validation every" not in text
    assert ("| Validation at step | 2 (the set cadence, every 10 steps, was not reached: evaluated at the end) |"
            in text)
    assert "| Checkpoints saved at steps | 2 |" in text and facts["checkpoint_steps"] == [2]
    rates = {entry["group"]: entry["lr"] for entry in facts["learning_rates"]}
    assert rates["embedding"] == pytest.approx(0.2 * 3 ** 0.5 * 0.02)  # width 256: (256/768)^-0.5 = sqrt(3)
    assert rates["muon"] == pytest.approx(0.02 * 0.02) and rates["unembedding"] == pytest.approx(0.004 * 3 ** 0.5 * 0.02)
    assert ("| Embedding LR (AdamW, token embedding) | 0.006928 = embedding_lr 0.2 × (256/768)^-0.5 × init_lr_frac "
            "0.02 |") in text
    assert "| Muon LR (block matrices) | 0.0004 = matrix_lr 0.02 × init_lr_frac 0.02 |" in text
    base = (root / "runs/tiny-base/README.md").read_text(encoding="utf-8")  # init_lr_frac 1: the 0.3464
    assert "| Embedding LR (AdamW, token embedding) | 0.3464 = embedding_lr 0.2 × (256/768)^-0.5 |" in base
    assert "no PyPI release" in text and 'pip install ".[serve]"' in text and "clone" in text
    straight = (straight_sft / "README.md").read_text(encoding="utf-8")  # eval and save every 2 of 4 steps
    assert "| Validation at steps | 2, 4 (every 2 steps) |" in straight
    assert "| Checkpoints saved at steps | 2, 4 |" in straight


def test_one_final_evaluation_and_the_sources_used(readme_runs):
    root, _ = readme_runs
    facts = json.loads((root / "runs/tiny-sft/run_facts.json").read_text())
    evaluations = [entry for entry in losses(root / "runs/tiny-sft") if entry[2] is not None]
    assert len(evaluations) == 1 and evaluations[0][0] == 2  # eval_steps 10 > 2 steps: only the final one, once
    assert facts["final_val_loss"] == evaluations[0][2]
    assert [e["step"] for e in facts["log_history"] if e.get("eval_loss") is not None] == [2]
    assert facts["datasets"] == []  # every source is a local sample file: no Hub dataset to name
    assert facts["data_sources"][0] == "smoltalk: ../../data/samples/smoltalk/train.jsonl"
    assert [s.split(":")[0] for s in facts["data_sources"]] == [
        "smoltalk", "identity", "paraphrase", "news", "tesum", "xlsum", "stories"]


def test_same_recipe_and_seed_give_identical_runs(readme_runs, tmp_path, monkeypatch):
    """The README's base command again: a new model seeded by the recipe, so the same weights and losses; another
    seed gives other weights (the check can fail)."""
    root, _ = readme_runs
    monkeypatch.chdir(root)
    command = [*readme_first_training()[0][2:], *TINY, "--mixture_dir", "runs/tiny-base/mixture"]  # built once
    again = train([*command, "--output_dir", str(tmp_path / "again")], script="mid_train.py")
    other = train([*command, "--output_dir", str(tmp_path / "other"), "--seed", "7"], script="mid_train.py")
    first = root / "runs/tiny-base"
    assert losses(again) == losses(first)
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()


def test_data_on_the_command_line_replaces_the_recipes(readme_runs, tmp_path, monkeypatch):
    root, _ = readme_runs
    monkeypatch.chdir(root)
    data = "{sources: [{kind: news, path: data/samples/news/train.jsonl}], validation_fraction: 0.2, seed: 3}"
    out = train(["--config", "training/recipes/tiny-base.yaml", *TINY, "--max_steps", "1", "--data", data,
                 "--output_dir", str(tmp_path / "news")], script="mid_train.py")
    facts = json.loads((out / "run_facts.json").read_text())
    assert facts["data_sources"] == ["news: data/samples/news/train.jsonl"]
    assert [row["source"] for row in facts["mixture"]] == ["news"]
    report = json.loads((out / "mixture" / "report.json").read_text())
    assert (report["recipe"], report["seed"], report["validation_fraction"]) == ("--data", 3, 0.2)
    assert report["sources"][0]["validation_rows"] == 4  # 20 rows x 0.2


# SFT for 4 steps, a checkpoint and an evaluation every 2.
SFT_CHECKPOINTS = ["--config", "training/recipes/tiny-sft.yaml", *TINY, "--max_steps", "4", "--save_steps", "2",
                   "--save_total_limit", "2", "--eval_steps", "2", "--per_device_eval_batch_size", "8",
                   "--mixture_dir", "runs/tiny-sft/mixture"]


@pytest.fixture(scope="module")
def straight_sft(readme_runs, tmp_path_factory):
    """`SFT_CHECKPOINTS` in one session, with the training scripts' card writer: the output folder."""
    from model_card import write_model_card

    root, _ = readme_runs
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        return train([*SFT_CHECKPOINTS, "--output_dir", str(tmp_path_factory.mktemp("straight"))], script="sft.py",
                     card_writer=write_model_card)


def test_run_facts_after_a_resume_count_the_whole_run(readme_runs, straight_sft, tmp_path, monkeypatch):
    """SFT 4 steps straight vs 2 steps, then resumed from checkpoint-2 in another session: the same steps, tokens and
    FLOPs (the whole run's, not the resumed session's), and the time includes the first session's."""
    root, _ = readme_runs
    monkeypatch.chdir(root)
    straight = straight_sft
    resumed = train([*SFT_CHECKPOINTS, "--output_dir", str(tmp_path / "resumed"),
                     "--resume_from_checkpoint", str(straight / "checkpoint-2")], script="sft.py")
    full, after = (json.loads((o / "run_facts.json").read_text()) for o in (straight, resumed))
    assert after["num_steps"] == full["num_steps"] == 4
    assert after["tokens_seen"] == full["tokens_seen"] > 0
    assert after["total_flops"] == full["total_flops"]
    state = json.loads((straight / "checkpoint-2" / "trainer_state.json").read_text())
    first_session = state["stateful_callbacks"]["RunClock"]["attributes"]["seconds"]
    assert after["train_time_seconds"] > first_session > 0
    assert after["final_val_loss"] == pytest.approx(full["final_val_loss"], rel=1e-5)
    steps = [entry[0] for entry in losses(straight) if entry[2] is not None]
    assert steps == [2, 4]  # the last evaluation is the Trainer's own at step 4, not repeated


def test_rotation_never_deletes_what_the_run_did_not_save(readme_runs, straight_sft, tmp_path, monkeypatch, capsys):
    """The run's marker lists what each checkpoint-N held once saved. Run again in that folder with save_total_limit
    (the Trainer's rotation deletes old checkpoint folders whole), it goes on as before; with a user's file in a
    checkpoint folder (rotation deleted it, exit 0), or a user's README.md where the run writes a checkpoint's card,
    it is refused before any work and nothing is touched."""
    import shutil

    from akshara_hf.training.run import main
    from model_card import write_model_card

    root, _ = readme_runs
    monkeypatch.chdir(root)
    run = tmp_path / "run"
    shutil.copytree(straight_sft, run)
    saved = json.loads((run / ".akshara-hf.json").read_text())["saved"]
    assert sorted(saved) == ["checkpoint-2", "checkpoint-4"]
    assert {"trainer_state.json", "optimizer.pt", "model.safetensors", "README.md"} <= set(saved["checkpoint-2"])
    resumed = [*SFT_CHECKPOINTS, "--output_dir", str(run), "--resume_from_checkpoint", str(run / "checkpoint-2")]
    assert train(resumed, script="sft.py", card_writer=write_model_card) == run  # its own checkpoints: no refusal
    (run / "checkpoint-2" / "notes.txt").write_text("mine")
    (run / "checkpoint-2" / "eval").mkdir()
    monkeypatch.setattr(sys, "argv", ["sft.py", *resumed])
    capsys.readouterr()
    assert main(script="sft.py") == 2
    line = capsys.readouterr().err.strip()
    assert line == (f"sft.py: error: output_dir {run / 'checkpoint-2'}: holds eval/, notes.txt, which the run did not "
                    "save there; save_total_limit would delete it with the checkpoint (move it out first)")
    assert (run / "checkpoint-2" / "notes.txt").read_text() == "mine"
    shutil.rmtree(run / "checkpoint-2" / "eval")
    (run / "checkpoint-2" / "notes.txt").unlink()
    (run / "checkpoint-4" / "README.md").write_text("my notes on step 4")
    monkeypatch.setattr(sys, "argv", ["sft.py", *resumed, "--save_total_limit", "5"])
    assert main(script="sft.py") == 2
    assert "checkpoint-4/README.md: a README.md the run did not write" in capsys.readouterr().err
    assert (run / "checkpoint-4" / "README.md").read_text() == "my notes on step 4"
    (run / "checkpoint-4" / "README.md").unlink()

    def refused(*args) -> str:
        monkeypatch.setattr(sys, "argv", ["sft.py", *args])
        capsys.readouterr()
        assert main(script="sft.py") == 2
        return capsys.readouterr().err.strip()

    # A user's notes in a checkpoint the run saves again stay the user's: not listed as saved by the run
    at = resumed.index("--save_total_limit")
    recipe = tmp_path / "no-limit.yaml"  # tiny-sft.yaml's own save_total_limit left out
    recipe.write_text("".join(line for line in (root / "training/recipes/tiny-sft.yaml").read_text().splitlines(True)
                              if not line.startswith("save_total_limit:")))
    unlimited = [str(recipe) if arg == "training/recipes/tiny-sft.yaml" else arg for arg in resumed[:at] + resumed[at + 2:]]
    (run / "checkpoint-4" / "notes.txt").write_text("mine")
    assert train(unlimited, script="sft.py", card_writer=write_model_card) == run
    assert "notes.txt" not in json.loads((run / ".akshara-hf.json").read_text())["saved"]["checkpoint-4"]
    assert "checkpoint-4: holds notes.txt, which the run did not save there" in refused(*resumed)
    (run / "checkpoint-4" / "notes.txt").unlink()
    # A user's copy of a checkpoint (rotation matches checkpoint-2.bak too) and a file at a checkpoint's name
    shutil.copytree(run / "checkpoint-2", run / "checkpoint-2.bak")
    assert "checkpoint-2.bak: holds " in refused(*resumed) and (run / "checkpoint-2.bak" / "optimizer.pt").is_file()
    shutil.rmtree(run / "checkpoint-2.bak")
    (run / "checkpoint-6").write_text("mine")
    assert "checkpoint-6: not a folder; the Trainer saves its checkpoint folders" in refused(*unlimited)


def test_each_checkpoint_and_the_final_folder_carry_our_card_of_their_step(straight_sft):
    """The trainer's card hook: checkpoint-N/README.md is the card of step N (marked in progress, its own figures),
    the output folder's the finished run's (final step, final evaluation)."""
    from huggingface_hub import ModelCard

    from model_card import write_model_card
    from model_card.card import _num

    final = straight_sft
    facts = json.loads((final / "run_facts.json").read_text())
    assert (facts["num_steps"], facts["in_progress"], facts["planned_steps"]) == (4, False, None)
    evaluations = {step: loss for step, _, loss in losses(final) if loss is not None}
    for step in (2, 4):
        folder = final / f"checkpoint-{step}"
        card = ModelCard.load(folder / "README.md")
        data = card.data
        assert (data.model_name, data.language, data.library_name, data.pipeline_tag) == (
            final.name, "te", "transformers", "text-generation")
        assert {"akshara", "sft", "trl"} <= set(data.tags) and data.datasets is None and data.base_model is None
        assert data.eval_results is None  # no `akshara-hf evaluate` results in a training run
        state = json.loads((folder / "trainer_state.json").read_text())
        text = card.text
        assert f"| Steps (so far of 4 planned; training in progress) | {step} |" in text
        assert f"This card was written at step {step} of the\n> 4 planned" in text
        assert f"| Tokens seen | {_num(state['num_input_tokens_seen'])} |" in text
        assert f"| Last validation loss | {_num(evaluations[step])} |" in text
        assert "| Steps | 4 |" not in text and "Final validation loss" not in text
        assert (folder / "loss_curve.png").is_file()
        saved = json.loads((folder / "run_facts.json").read_text())  # what the card was rendered from
        assert (saved["num_steps"], saved["in_progress"], saved["planned_steps"]) == (step, True, 4)
        assert saved["tokens_seen"] == state["num_input_tokens_seen"]
    assert json.loads((final / "checkpoint-2" / "trainer_state.json").read_text())["num_input_tokens_seen"] < facts["tokens_seen"]
    card = ModelCard.load(final / "README.md")
    assert card.data.model_name == final.name and "sft" in card.data.tags
    assert "| Steps | 4 |" in card.text and "training in progress" not in card.text.lower()
    assert f"| Final validation loss | {_num(facts['final_val_loss'])} |" in card.text
    assert f"| Tokens seen | {_num(facts['tokens_seen'])} |" in card.text
    assert facts["final_val_loss"] == evaluations[4]
    # A checkpoint's card can be rendered again for the Hub from the facts it keeps.
    again = ModelCard.load(write_model_card(final / "checkpoint-2", repo_id="akshara-org/tiny-sft-step2"))
    assert "| Steps (so far of 4 planned; training in progress) | 2 |" in again.text
    assert 'from_pretrained("akshara-org/tiny-sft-step2"' in again.text


def test_run_facts_record_and_the_card_schema_agree():
    """Every field the trainer writes is one the card reads (the card refuses unknown fields)."""
    import dataclasses

    from akshara_hf.training.training_log import RunFacts
    from model_card import RUN_FACTS_FIELDS, validate_run_facts

    names = [field.name for field in dataclasses.fields(RunFacts)]
    assert set(names) <= set(RUN_FACTS_FIELDS), set(names) - set(RUN_FACTS_FIELDS)
    facts = RunFacts(run_name="tiny", stage="sft", datasets=["owner/data"], data_sources=["news: a.jsonl"]).to_dict()
    assert validate_run_facts(facts)["data_sources"] == ["news: a.jsonl"]


def test_resuming_into_the_runs_own_output_dir_keeps_working(readme_runs, straight_sft, tmp_path, monkeypatch):
    """The resume checkpoint lies inside output_dir: allowed because the folder is an earlier run of ours (marker)."""
    import shutil

    root, _ = readme_runs
    monkeypatch.chdir(root)
    own = shutil.copytree(straight_sft, tmp_path / "own", symlinks=True)
    shutil.rmtree(own / "checkpoint-4")
    resumed = train([*SFT_CHECKPOINTS, "--output_dir", str(own), "--resume_from_checkpoint", str(own / "checkpoint-2")],
                    script="sft.py")
    full, after = (json.loads((o / "run_facts.json").read_text()) for o in (straight_sft, resumed))
    assert after["num_steps"] == full["num_steps"] == 4 and after["tokens_seen"] == full["tokens_seen"]
    assert (own / "checkpoint-4" / "model.safetensors").is_file()


def test_the_trained_folder_gets_the_layout_it_was_trained_in(readme_runs, tmp_path, monkeypatch):
    """The run renders its data in nanochat's layout; a parent tokenizer's foreign template was saved on into the
    trained folder (its pipelines then prompted the model in a layout it was never trained on)."""
    import shutil

    from akshara_hf.tokenization.chat import load_chat_template

    root, folders = readme_runs
    monkeypatch.chdir(root)
    parent = tmp_path / "parent"
    shutil.copytree(folders[-1], parent, ignore=shutil.ignore_patterns("checkpoint-*", "mixture", "converted_base"))
    (parent / ".akshara-hf.json").unlink()
    foreign = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    (parent / "chat_template.jinja").write_text(foreign)
    out = train(["--config", "training/recipes/tiny-sft.yaml", *TINY, "--max_steps", "1", "--model_name_or_path",
                 str(parent), "--mixture_dir", "runs/tiny-sft/mixture", "--output_dir", str(tmp_path / "child")],
                script="sft.py")
    assert (parent / "chat_template.jinja").read_text() == foreign
    assert (out / "chat_template.jinja").read_text() == load_chat_template()
