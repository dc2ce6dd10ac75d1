"""The training scripts as a hostile user would drive them: every bad recipe, flag or path is one line on stderr
(`sft.py: error: ...`), exit status 2, no traceback, before any model or data is loaded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from akshara_hf.errors import AksharaError
from akshara_hf.training.run import main

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "training" / "recipes"
TINY_SFT = RECIPES / "tiny-sft.yaml"
TINY_MID = RECIPES / "tiny-mid.yaml"
TINY_BASE = RECIPES / "tiny-base.yaml"


def run_script(script: str, args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """`python training/SCRIPT ARGS` in-process: (exit status, stderr); asserts one error line and no traceback."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", [script, *args])
    code = main(script=script)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(f"{script}: error: ")]
    assert len(lines) == (1 if code else 0), err[-3000:]
    return code, lines[0] if lines else ""


@pytest.fixture
def refused(capsys, monkeypatch, tmp_path):
    """refused(args, *fragments, script=...): the run stops with exit 2, one line holding every fragment, and writes
    nothing (the output folder is not even made). The parent model is an existing (empty) folder unless `args` name
    another, and the Hub is offline: no test touches the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "parent").mkdir()

    def check(args, *fragments, script="sft.py", recipe=TINY_SFT, parent=True):
        out = tmp_path / "out"
        base = ["--config", str(recipe)] if recipe else []
        base += ["--model_name_or_path", str(tmp_path / "parent")] if parent else []
        code, line = run_script(script, [*base, "--output_dir", str(out), *args], capsys, monkeypatch)
        assert code == 2, line
        for fragment in fragments:
            assert fragment in line, line
        assert not out.exists()
        return line

    return check


def recipe_with(tmp_path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- counts and sizes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, fragment", [
    ("--per_device_train_batch_size", "0", "per_device_train_batch_size must be a positive integer"),
    ("--per_device_train_batch_size", "-4", "per_device_train_batch_size must be a positive integer"),
    ("--per_device_eval_batch_size", "0", "per_device_eval_batch_size must be a positive integer"),
    ("--max_steps", "0", "max_steps must be a positive integer or -1"),
    ("--max_steps", "-5", "max_steps must be a positive integer or -1"),
    ("--num_train_epochs", "-1", "num_train_epochs must be > 0"),
    ("--num_train_epochs", "0", "num_train_epochs must be > 0"),
    ("--num_train_epochs", "nan", "num_train_epochs must be > 0"),
    ("--max_length", "0", "max_length must be an integer >= 7"),
    ("--max_length", "3", "max_length must be an integer >= 7"),
    ("--target_examples_per_step", "-8", "target_examples_per_step must be a positive integer"),
    ("--target_examples_per_step", "0", "target_examples_per_step must be a positive integer"),
    ("--target_examples_per_step", "6", "target_examples_per_step 6 is not a multiple of per_device_train_batch_size 4"),
    ("--gradient_accumulation_steps", "-2", "gradient_accumulation_steps must be a positive integer"),
    ("--per_device_train_batch_size", "four", "per_device_train_batch_size"),
    ("--max_seq_len", "0", "max_seq_len must be a positive integer"),
    ("--eval_tokens", "-1", "eval_tokens must be a positive integer"),
    ("--eval_steps", "-3", "eval_steps must be > 0"),
    ("--save_steps", "-1", "save_steps must be > 0"),
    ("--logging_steps", "-2", "logging_steps must be > 0"),
    ("--seed", "-1", "seed must be an integer in [0, 2**32)"),  # numpy's seeding would raise deep inside set_seed
    ("--max_grad_norm", "-1", "max_grad_norm must be >= 0"),
    ("--weight_decay", "-0.1", "weight_decay must be >= 0"),
    ("--dataloader_num_workers", "-1", "dataloader_num_workers must be >= 0"),
    ("--save_total_limit", "0", "save_total_limit must be a positive integer"),
    ("--eval_strategy", "bogus", "invalid choice: 'bogus'"),
])
def test_bad_counts_are_refused_before_any_work(refused, key, value, fragment):
    extra = ["--max_steps", "-1"] if key == "--num_train_epochs" else []
    refused([*extra, key, value], fragment)


def test_yaml_values_of_the_wrong_type_are_refused(refused, tmp_path):
    text = TINY_SFT.read_text(encoding="utf-8")
    refused([], "max_steps must be a positive integer", recipe=recipe_with(tmp_path, text + "max_steps: 1.5\n"))
    refused([], "per_device_train_batch_size", recipe=recipe_with(tmp_path, text.replace(
        "per_device_train_batch_size: 4", "per_device_train_batch_size: four")))
    refused([], "num_train_epochs must be > 0", recipe=recipe_with(tmp_path, text.replace(
        "num_train_epochs: 2", "num_train_epochs: -1")))


# --- the recipe file --------------------------------------------------------------------------------------------


def test_recipe_file_problems(refused, tmp_path):
    refused([], "nope.yaml: no such recipe file", recipe=tmp_path / "nope.yaml")
    refused([], "is a folder, not a recipe file", recipe=tmp_path)
    refused([], "bad.yaml: not valid YAML at line 2", recipe=recipe_with(tmp_path, "stage: sft\n  bad: [\n", "bad.yaml"))
    refused([], "must be a YAML mapping", recipe=recipe_with(tmp_path, "- stage\n- sft\n", "list.yaml"))
    refused([], "unknown keys matrix_lrr", recipe=recipe_with(tmp_path, TINY_SFT.read_text() + "matrix_lrr: 0.1\n"))
    refused(["--config"], "--config: expected a recipe file", recipe=None)
    refused(["--config", str(TINY_SFT)], "--config given twice")


def test_the_stage_decides_and_each_script_runs_its_own(refused, tmp_path):
    refused([], "stage 'mid': sft.py runs stage sft; run this recipe with training/mid_train.py", recipe=TINY_MID)
    refused([], "stage 'sft': mid_train.py runs stage mid or base", script="mid_train.py", recipe=TINY_SFT)
    refused(["--stage", "mid"], "stage 'mid': sft.py runs stage sft")  # a flag cannot sneak another stage in
    refused(["--schedule", "mid"], "schedule 'mid' does not belong to stage 'sft'")
    refused(["--stage", "pretrain"], "stage", "pretrain")


def test_abbreviated_and_unknown_flags_are_refused(refused):
    line = refused(["--max_step", "5"], "--max_step")  # argparse would take it for --max_steps
    assert "--max_steps" not in line.replace("--max_step ", "")
    refused(["--matrix-lrr", "0.1"], "--matrix-lrr")


# --- named files and folders ------------------------------------------------------------------------------------


def test_missing_local_parent_model_fails_at_once(refused, tmp_path, monkeypatch, network_calls):
    """The README's `--model_name_or_path runs/tiny-base` on a fresh clone: one line, and no attempt to reach the Hub
    (offline here; online a name that could be a Hub repo is asked once, with a timeout, see the next test)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refused(["--model_name_or_path", "runs/tiny-base"], "model_name_or_path runs/tiny-base: no such folder")
    (tmp_path / "runs").mkdir()  # an existing first component: a local path, never a Hub id
    refused(["--model_name_or_path", "runs/tiny-base"], "model_name_or_path runs/tiny-base: no such folder")
    refused(["--model_name_or_path", "./tiny-base"], "no such folder")
    refused(["--model_name_or_path", str(tmp_path / "a" / "b" / "c")], "no such folder")
    refused(["--model_name_or_path", str(TINY_SFT)], "is a file, not a model folder")
    assert network_calls == []


def test_a_name_the_hub_does_not_know_is_one_line(refused, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def unreachable(self, repo_id, **kwargs):
        calls.append((repo_id, kwargs.get("timeout")))
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    refused(["--model_name_or_path", "someone/akshara-mid"],
            "someone/akshara-mid: no such folder, and not a model on the Hugging Face Hub (Name or service not known)")
    assert calls == [("someone/akshara-mid", 10)]  # asked once, with a timeout


def test_bad_mixture_dir_and_checkpoint(refused, tmp_path):
    refused(["--mixture_dir", str(tmp_path / "none")], "not a build-mixture output (no dataset_dict.json)")
    (tmp_path / "empty").mkdir()
    refused(["--mixture_dir", str(tmp_path / "empty")], "not a build-mixture output")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    refused(["--mixture_dir", str(tmp_path / "odd")], "needs train and validation splits")
    refused(["--resume_from_checkpoint", str(tmp_path / "checkpoint-7")],
            "resume_from_checkpoint", "not a checkpoint folder (no trainer_state.json)")


def test_bad_model_config(refused, tmp_path):
    line = refused(["--model_config", "{depth: 4"], "model_config: not valid YAML or JSON at line 1", script="mid_train.py",
                   recipe=TINY_BASE, parent=False)
    assert "tokenizer" not in line
    # YAML flow style, as the recipe writes it; a misspelt field would have built a default-sized model
    refused(["--model_config", "{dpeth: 2}"], "model_config: unknown field(s) ['dpeth']", script="mid_train.py",
            recipe=TINY_BASE, parent=False)
    refused(["--model_config", "5"], "model_config must be a mapping", script="mid_train.py", recipe=TINY_BASE,
            parent=False)
    refused([], "model_config needs tokenizer_name_or_path", script="mid_train.py", parent=False,
            recipe=recipe_with(tmp_path, TINY_BASE.read_text().replace("tokenizer_name_or_path:", "#")))
    # a parent and a new model at once: the new one trained, the parent's weights unused, the card naming the parent
    refused(["--model_config", "{depth: 2}"], "model_name_or_path", "and model_config both given",
            "--model_config null")
    refused([], "and model_config both given", script="mid_train.py", recipe=TINY_BASE)


def test_bad_data_section_on_the_command_line(refused):
    refused(["--data", "{sources: [}"], "--data: not valid YAML or JSON")
    refused(["--data", "{sources: []}"], "--data: data.sources must be a non-empty list")
    refused(["--data", "{sources: [{kind: news, path: x.jsonl}], validation_fraction: 2}"],
            "--data: data.validation_fraction must be a number in [0, 1)")
    refused(["--data", "{sources: [{kind: nope, path: x}]}"], "--data: data.sources[0].kind: 'nope'")
    refused(["--data", "{sources: [{kind: news, path: x, weight: 2}]}"], "unknown key 'weight'")


def test_bad_data_section_in_the_recipe_names_the_file(refused, tmp_path):
    text = TINY_SFT.read_text().replace("validation_fraction: 0.1", "validation_fraction: 1.5")
    refused([], "recipe.yaml: data.validation_fraction must be a number in [0, 1)", recipe=recipe_with(tmp_path, text))


# --- help --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["sft.py", "mid_train.py"])
def test_help_leads_with_the_recipe_options(script):
    result = subprocess.run([sys.executable, str(REPO / "training" / script), "--help"], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"usage: {script} [--config RECIPE]")
    assert len(lines) < 300  # TrainingArguments' 800+ lines only with --help-all (main's recipe options: 216-220 lines)
    options = [line.split()[0] for line in lines if line.startswith("  --")]
    assert options[0] == "--config" and "--stage" in options and "--data" in options and "--max_steps" in options
    assert "--help-all lists them" in result.stdout


# --- where the run writes ----------------------------------------------------------------------------------------


def test_output_dir_that_is_a_file_or_someone_elses_folder_is_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "parent").mkdir()
    base = ["--config", str(TINY_SFT), "--model_name_or_path", str(tmp_path / "parent")]
    (tmp_path / "notes.txt").write_text("mine")
    code, line = run_script("sft.py", [*base, "--output_dir", str(tmp_path / "notes.txt")], capsys, monkeypatch)
    assert code == 2 and "notes.txt: exists and is not a folder" in line
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my own notes")
    code, line = run_script("sft.py", [*base, "--output_dir", str(mine)], capsys, monkeypatch)
    assert code == 2 and "was not written by akshara-hf; refusing to write into it" in line
    assert [p.name for p in mine.iterdir()] == ["README.md"] and (mine / "README.md").read_text() == "my own notes"


def test_rows_longer_than_the_models_positions_are_refused_before_the_data(capsys, monkeypatch, tmp_path,
                                                                          converted_folder):
    """The converted tiny model has 64 x 10 rotary positions: rows of 1,000 tokens would fail inside the forward."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    code, line = run_script("sft.py", ["--config", str(TINY_SFT), "--model_name_or_path", str(converted_folder),
                                       "--output_dir", str(out), "--max_length", "1000"], capsys, monkeypatch)
    assert code == 2 and "max_length 1000: rows of 1000 tokens exceed the model's 640 positions" in line
    code, line = run_script("mid_train.py", ["--config", str(TINY_MID), "--model_name_or_path", str(converted_folder),
                                             "--output_dir", str(out), "--max_seq_len", "640"], capsys, monkeypatch)
    assert code == 2 and "max_seq_len 640: rows of 641 tokens exceed the model's 640 positions" in line
    assert not (out / "mixture").exists()  # refused before any data was built


def test_a_damaged_model_folder_is_one_line(capsys, monkeypatch, tmp_path, converted_folder):
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    damaged = Path(shutil.copytree(converted_folder, tmp_path / "damaged"))
    (damaged / "model.safetensors").write_bytes(b"not safetensors" * 8)
    code, line = run_script("sft.py", ["--config", str(TINY_SFT), "--model_name_or_path", str(damaged),
                                       "--output_dir", str(tmp_path / "out")], capsys, monkeypatch)
    assert code == 2 and "damaged: the weights do not load (SafetensorError: " in line
    (damaged / "tokenizer.json").write_text("{broken")
    code, line = run_script("sft.py", ["--config", str(TINY_SFT), "--model_name_or_path", str(damaged),
                                       "--output_dir", str(tmp_path / "out")], capsys, monkeypatch)
    assert code == 2 and "damaged: the tokenizer does not load (" in line


def test_a_damaged_mixture_dir_is_one_line(capsys, monkeypatch, tmp_path, converted_folder):
    from datasets import Dataset, DatasetDict

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = ["--config", str(TINY_SFT), "--model_name_or_path", str(converted_folder), "--max_length", "128"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset_dict.json").write_text("{not json")
    code, line = run_script("sft.py", [*base, "--mixture_dir", str(broken), "--output_dir", str(tmp_path / "a")],
                            capsys, monkeypatch)
    assert code == 2 and "dataset_dict.json is not a datasets DatasetDict file" in line
    (broken / "dataset_dict.json").write_text('{"splits": ["train", "validation"]}')  # the splits' folders missing
    code, line = run_script("sft.py", [*base, "--mixture_dir", str(broken), "--output_dir", str(tmp_path / "b")],
                            capsys, monkeypatch)
    assert code == 2 and f"mixture_dir {broken}: cannot load it (" in line
    texts = tmp_path / "texts"
    DatasetDict({split: Dataset.from_dict({"text": ["a", "b"]}) for split in ("train", "validation")}).save_to_disk(texts)
    code, line = run_script("sft.py", [*base, "--mixture_dir", str(texts), "--output_dir", str(tmp_path / "c")],
                            capsys, monkeypatch)
    assert code == 2 and "needs a `messages` column in train and validation" in line


def test_resuming_from_another_models_checkpoint_is_one_line(capsys, monkeypatch, tmp_path, converted_folder):
    """Before the Trainer's `load_state_dict` traceback (after the data was built): the first tensor that differs."""
    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    base = ["--config", str(TINY_SFT), "--model_name_or_path", str(converted_folder), "--max_length", "128",
            "--resume_from_checkpoint", str(checkpoint)]

    def attempt(out: str) -> str:
        code, line = run_script("sft.py", [*base, "--output_dir", str(tmp_path / out)], capsys, monkeypatch)
        assert code == 2
        assert [p.name for p in (tmp_path / out).iterdir()] == [".akshara-hf.json"]  # no data built, nothing else
        return line

    assert "checkpoint-3: no model.safetensors" in attempt("a")
    (checkpoint / "model.safetensors").write_bytes(b"\x00" * 64)
    assert "model.safetensors: not a readable safetensors file" in attempt("b")
    from safetensors import safe_open

    with safe_open(str(converted_folder / "model.safetensors"), framework="pt") as file:
        state = {name: file.get_tensor(name) for name in file.keys()}
    wrong = dict(state, **{"transformer.wte.weight": torch.zeros(3, 3)})
    save_file(wrong, str(checkpoint / "model.safetensors"))
    line = attempt("c")
    assert "transformer.wte.weight is [3, 3], this run's model has [" in line and "checkpoint is of another model" in line
    save_file({k: v for k, v in state.items() if k != "lm_head.weight"}, str(checkpoint / "model.safetensors"))
    assert "has no lm_head.weight" in attempt("d")
    save_file(dict(state, extra=torch.zeros(1)), str(checkpoint / "model.safetensors"))
    assert "extra is not in this run's model" in attempt("e")


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["rng_state.pth", "optimizer.pt", "scheduler.pt"])
def test_a_resume_checkpoint_pickle_calling_code_is_one_line_and_never_runs(capsys, monkeypatch, tmp_path,
                                                                           converted_folder, name):
    """The Trainer loads these with weights_only=True, so nothing ran, but the run ended in a traceback naming no
    file, after the data was built."""
    import shutil

    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    shutil.copy(converted_folder / "model.safetensors", checkpoint)
    marker = tmp_path / "ran"
    torch.save({"x": _Planted(marker)}, checkpoint / name)
    code, line = run_script("sft.py", ["--config", str(TINY_SFT), "--model_name_or_path", str(converted_folder),
                                       "--max_length", "128", "--resume_from_checkpoint", str(checkpoint),
                                       "--output_dir", str(tmp_path / "out")], capsys, monkeypatch)
    assert code == 2 and line == (f"sft.py: error: resume_from_checkpoint {checkpoint / name}: a pickle calling "
                                  "posix.system, which is not a tensor; refused, never run"), line
    assert not marker.exists()


def test_a_run_that_failed_early_can_run_again_in_its_folder(capsys, monkeypatch, tmp_path, converted_folder):
    """The output folder is marked as a training run's from the start: a run stopped before its first save (here:
    refused after the folder was made) does not leave a folder the next attempt refuses. Another command's marked
    output is still refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    base = ["--config", str(TINY_SFT), "--model_name_or_path", str(converted_folder), "--output_dir", str(out)]
    code, line = run_script("sft.py", [*base, "--max_length", "1000"], capsys, monkeypatch)
    assert code == 2 and "exceed the model's" in line and out.is_dir()
    (out / "mixture").mkdir()  # what a run interrupted while training leaves besides the marker
    code, line = run_script("sft.py", [*base, "--max_length", "1000"], capsys, monkeypatch)
    assert code == 2 and "exceed the model's" in line  # the folder was accepted: the same check refuses again
    other = tmp_path / "converted"
    other.mkdir()
    (other / ".akshara-hf.json").write_text('{"command": "convert-nanochat", "written_by": "akshara-hf"}')
    (other / "config.json").write_text("{}")
    code, line = run_script("sft.py", [*base[:-1], str(other)], capsys, monkeypatch)
    assert code == 2 and "is an earlier `akshara-hf convert-nanochat` output, not a training run's" in line


def test_only_the_main_process_writes_before_training(capsys, monkeypatch, tmp_path, converted_folder):
    """Another process of a multi-process run writes nothing into output_dir before training (no marker, no
    mixture/): it reads what the main process wrote, and where there is nothing (a main process that stopped, or
    machines without a shared filesystem) it says so in one line."""
    from trl import SFTConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(SFTConfig, "process_index", property(lambda self: 1))
    out = tmp_path / "out"
    code, line = run_script("sft.py", ["--config", str(TINY_SFT), "--model_name_or_path", str(converted_folder),
                                       "--max_length", "128", "--output_dir", str(out)], capsys, monkeypatch)
    assert code == 2 and f"{out / 'mixture'}: not found by this process; the main process writes it" in line, line
    assert not out.exists()


# --- the output rule (akshara_hf.folders) for output_dir -----------------------------------------------------------


def marked_run(folder: Path, **files) -> Path:
    """An earlier training run's output_dir as this project marks it, with `files` (name: text) in it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".akshara-hf.json").write_text('{"command": "train", "written_by": "akshara-hf"}\n')
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else str(p.readlink())
                                         if p.is_symlink() else None)
            for p in sorted(folder.rglob("*"))}


def refused_output(capsys, monkeypatch, args: list[str], fragment: str, *untouched: Path, script="sft.py") -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = [snapshot(folder) for folder in untouched]
    code, line = run_script(script, ["--config", str(TINY_SFT), *args], capsys, monkeypatch)
    assert code == 2 and fragment in line, line
    assert [snapshot(folder) for folder in untouched] == before


def test_training_over_its_own_parent_model_is_refused(capsys, monkeypatch, tmp_path):
    """`--model_name_or_path runs/parent --output_dir runs/parent` used to overwrite the parent's weights."""
    parent = marked_run(tmp_path / "runs" / "parent", **{"config.json": "{}", "model.safetensors": "weights"})
    for output, why in ((parent, "is the input"), (parent / "child", "lies inside the input"),
                        (tmp_path / "runs", "contains the input")):
        marked_run(tmp_path / "runs")  # even an earlier run of ours around it
        refused_output(capsys, monkeypatch, ["--model_name_or_path", str(parent), "--output_dir", str(output)],
                       f"output_dir {output}: {why}", parent)
        (tmp_path / "runs" / ".akshara-hf.json").unlink()
    assert not (parent / "child").exists()


def test_a_users_folder_that_looks_like_a_run_is_refused(capsys, monkeypatch, tmp_path):
    """log.jsonl, config.json, README.md, a checkpoint-* folder: names do not make a folder ours, the marker does."""
    (tmp_path / "parent").mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, text in {"log.jsonl": '{"step": 1}\n', "config.json": "{}", "README.md": "my notes",
                       "run_facts.json": "{}", "trainer_state.json": "{}", "checkpoint-5/x": "x"}.items():
        (mine / name).parent.mkdir(exist_ok=True)
        (mine / name).write_text(text)
        refused_output(capsys, monkeypatch, ["--model_name_or_path", str(tmp_path / "parent"), "--output_dir",
                                             str(mine)], "was not written by akshara-hf", mine)
    assert not (mine / ".akshara-hf.json").exists()


def test_the_resume_checkpoint_mixture_and_data_files_are_never_the_output(capsys, monkeypatch, tmp_path):
    parent = marked_run(tmp_path / "parent", **{"config.json": "{}"})
    checkpoint = marked_run(tmp_path / "old", **{"checkpoint-4/trainer_state.json": "{}"}) / "checkpoint-4"
    base = ["--model_name_or_path", str(parent)]
    for output, why in ((checkpoint, "is the input"), (checkpoint / "out", "lies inside the input")):
        refused_output(capsys, monkeypatch, [*base, "--resume_from_checkpoint", str(checkpoint), "--output_dir",
                                             str(output)], f"output_dir {output}: {why}", checkpoint)
    mixture = tmp_path / "run" / "mix"
    mixture.mkdir(parents=True)
    (mixture / "dataset_dict.json").write_text('{"splits": ["train", "validation"]}')
    marked_run(tmp_path / "run")
    for output, why in ((tmp_path / "run", "contains the input"), (mixture, "is the input")):
        refused_output(capsys, monkeypatch, [*base, "--mixture_dir", str(mixture), "--output_dir", str(output)],
                       why, mixture)
    # A data file inside an earlier run's folder, named like a file the run appends to: never the output.
    run = marked_run(tmp_path / "news-run", **{"log.jsonl": (REPO / "data/samples/news/train.jsonl").read_text()})
    data = f"{{sources: [{{kind: news, path: {run / 'log.jsonl'}}}], validation_fraction: 0.2}}"
    refused_output(capsys, monkeypatch, [*base, "--data", data, "--output_dir", str(run)],
                   f"output_dir {run}: contains the input {run / 'log.jsonl'}", run)


def test_output_dir_through_a_symlink_is_refused(capsys, monkeypatch, tmp_path):
    """Neither a link as output_dir (to a user's folder or to an earlier run), nor an earlier run holding a link the
    run would write through (log.jsonl is appended to, run_facts.json and the card replaced)."""
    (tmp_path / "parent").mkdir()
    base = ["--model_name_or_path", str(tmp_path / "parent")]
    run = marked_run(tmp_path / "run", **{"log.jsonl": "{}\n"})
    (tmp_path / "link").symlink_to(run, target_is_directory=True)
    refused_output(capsys, monkeypatch, [*base, "--output_dir", str(tmp_path / "link")], "is a symbolic link", run)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    for name in ("log.jsonl", "run_facts.json", "README.md", "checkpoint-2/model.safetensors"):
        (run / name).unlink(missing_ok=True)
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).symlink_to(precious)
        refused_output(capsys, monkeypatch, [*base, "--output_dir", str(run)],
                       f"output_dir {run}: holds a symbolic link, {run / name}", run)
        (run / name).unlink()
    assert precious.read_text() == "keep me"


def test_an_earlier_run_holding_a_hard_link_is_refused(capsys, monkeypatch, tmp_path):
    """`cp -al run backup`, then training on in `run`: log.jsonl was appended to in place, and the saves truncate and
    rewrite model.safetensors, so the backup changed with it (a hard link is the same file)."""
    (tmp_path / "parent").mkdir()
    run = marked_run(tmp_path / "run")
    backup = tmp_path / "backup"
    backup.mkdir()
    for name in ("log.jsonl", "checkpoint-2/model.safetensors"):
        (backup / name).parent.mkdir(exist_ok=True)
        (backup / name).write_text("the backup's copy")
        (run / name).parent.mkdir(exist_ok=True)
        os.link(backup / name, run / name)
        refused_output(capsys, monkeypatch, ["--model_name_or_path", str(tmp_path / "parent"), "--output_dir",
                                             str(run)], f"output_dir {run}: holds a hard link", run, backup)
        (run / name).unlink()


def test_a_tokenizer_beside_a_model_folder_is_refused_not_ignored(refused, tmp_path, converted_folder):
    """tokenizer_name_or_path with an HF model folder trained with the folder's own tokenizer, exit 0."""
    refused(["--model_name_or_path", str(converted_folder), "--tokenizer_name_or_path", str(converted_folder)],
            f"tokenizer_name_or_path {converted_folder}: a model folder brings its own tokenizer", parent=False)


def test_resume_from_checkpoint_of_the_wrong_type_is_one_line(refused, tmp_path):
    """`resume_from_checkpoint: true` (the Trainer's "the last checkpoint") was a TypeError from pathlib."""
    for value, fragment in (("true", "resume_from_checkpoint true: "),
                            ("7", "resume_from_checkpoint must be a checkpoint folder (or true: output_dir's last), "
                                  "got 7")):
        recipe = recipe_with(tmp_path, TINY_SFT.read_text() + f"\nresume_from_checkpoint: {value}\n")
        refused([], fragment, recipe=recipe)


def test_an_earlier_run_holding_a_users_card_curve_or_a_pipe_is_refused(capsys, monkeypatch, tmp_path):
    """A re-run writes its card and loss curve again and appends to its log: a user's own README.md (or
    loss_curve.png) there was replaced without a word (exit 0), and a named pipe at log.jsonl blocked the run."""
    (tmp_path / "parent").mkdir()
    base = ["--model_name_or_path", str(tmp_path / "parent")]
    run = marked_run(tmp_path / "run", **{"README.md": "MY NOTES"})
    refused_output(capsys, monkeypatch, [*base, "--output_dir", str(run)], "README.md: a README.md the run did not "
                   "write", run)
    (run / "README.md").write_text("a card\n<!-- written by akshara-hf model-card -->\n")  # ours: passes this check
    (run / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n my own figure")
    refused_output(capsys, monkeypatch, [*base, "--output_dir", str(run)], "loss_curve.png: a loss_curve.png the run "
                   "did not write", run)
    (run / "loss_curve.png").unlink()
    os.mkfifo(run / "log.jsonl")
    refused_output(capsys, monkeypatch, [*base, "--output_dir", str(run)], "log.jsonl: not a regular file", run)
    (run / "log.jsonl").unlink()
    # a checkpoint-0 folder the user made: transformers' rotation deleted it (exit 0)
    (run / "checkpoint-0").mkdir()
    (run / "checkpoint-0" / "mine.txt").write_text("keep")
    refused_output(capsys, monkeypatch, [*base, "--output_dir", str(run), "--save_strategy", "steps", "--save_steps",
                                         "1", "--save_total_limit", "1"], "checkpoint-0: not a checkpoint the Trainer "
                   "wrote (no trainer_state.json); save_total_limit would delete it", run)


# --- bounds before work: sizes, named pipes; one error path: Ctrl-C, a full disk -----------------------------------


@pytest.mark.parametrize("flags, fragment", [
    (["--model_config", "{depth: 1000000000}"], "model_config: depth 1,000,000,000: a model of this size needs at least"),
    (["--model_config", "{depth: 4}", "--max_seq_len", "1000000000"],
     "model_config: max_seq_len 1,000,000,000: a model of this size needs at least"),
    (["--model_config", "{num_hidden_layers: 100000, hidden_size: 4096, num_attention_heads: 32}"],
     "model_config: num_hidden_layers 100,000: a model of this size needs at least"),
    (["--model_config", "{depth: 4, vocab_size: 10000000000}"], "model_config: vocab_size 10,000,000,000: a model"),
])
def test_a_model_too_big_for_this_machine_is_refused_before_any_work(refused, no_hang, flags, fragment):
    """`{depth: 1000000000}` filled the memory building the config's per-layer lists."""
    with no_hang(60):
        line = refused(flags, fragment, script="mid_train.py", recipe=TINY_BASE, parent=False)
    assert "this machine has" in line


def test_yaml_nested_too_deeply_is_one_line(refused, tmp_path):
    """PyYAML's parser recurses once per level: 100,000 `[` ended in a RecursionError traceback."""
    deep = "[" * 100_000 + "]" * 100_000
    refused([], "not valid YAML (nested too deeply)", recipe=recipe_with(tmp_path, f"stage: sft\nx: {deep}\n"))
    refused(["--data", "[" * 20_000 + "]" * 20_000], "--data: not valid YAML or JSON (nested too deeply)")


def test_named_pipes_are_refused_before_any_work(refused, tmp_path, no_hang):
    pipe = tmp_path / "pipe.yaml"
    os.mkfifo(pipe)
    with no_hang():
        refused([], f"{pipe}: is a named pipe, not a regular file", recipe=pipe)
        refused(["--data", f"{{sources: [{{kind: news, path: {pipe}}}]}}"],
                f"data.sources[0].path: {pipe}: is a named pipe, not a regular file")
        mixture = tmp_path / "mixture"
        mixture.mkdir()
        os.mkfifo(mixture / "dataset_dict.json")
        refused(["--mixture_dir", str(mixture)], "dataset_dict.json: is a named pipe, not a regular file")


def test_ctrl_c_in_a_training_script_is_one_line_and_130(capsys, monkeypatch):
    from akshara_hf.training import run

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "train", interrupted)
    assert main(script="sft.py") == 130
    assert capsys.readouterr().err == "sft.py: interrupted\n"


def test_a_full_disk_while_training_names_the_file(tmp_path, monkeypatch):
    """The Trainer's checkpoint writes fail with safetensors' or torch's own errors; the run says which file."""
    from safetensors import SafetensorError

    from akshara_hf.training import run

    def training_until_the_disk_fills(argv, script, card_writer, output):
        output.append(tmp_path)
        (tmp_path / "checkpoint-5").mkdir()
        (tmp_path / "checkpoint-5" / "model.safetensors").write_bytes(b"\0" * 10)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(run, "_train", training_until_the_disk_fills)
    with pytest.raises(AksharaError) as error:
        run.train([], "sft.py")
    assert str(error.value) == (f"{tmp_path}/checkpoint-5/model.safetensors: no space left on device while writing "
                                "it (checkpoints saved before it are complete)")


# --- AKSHARA_MAX_STEPS (the README's quick-look cap) ----------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-3", "three", "2.5", " ", "1e3"])
def test_a_bad_step_cap_is_refused(refused, monkeypatch, value):
    monkeypatch.setenv("AKSHARA_MAX_STEPS", value)
    refused([], f"AKSHARA_MAX_STEPS={value!r}: must be a positive whole number of steps")


@pytest.mark.parametrize("recipe, flags, cap, expected", [
    (TINY_BASE, [], "3", 3),  # recipe: max_steps 40
    (TINY_SFT, [], "3", 3),  # recipe: 2 epochs, no max_steps
    (TINY_BASE, ["--max_steps", "2"], "3", 2),  # already shorter: unchanged
    (TINY_BASE, [], "", 40),  # empty: no cap
])
def test_the_step_cap_shortens_every_run(tmp_path, monkeypatch, capsys, recipe, flags, cap, expected):
    from akshara_hf.training.run import parse_recipe

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AKSHARA_MAX_STEPS", cap)
    (tmp_path / "parent").mkdir()
    script = "sft.py" if recipe == TINY_SFT else "mid_train.py"
    parent = ["--model_name_or_path", "parent"] if recipe == TINY_SFT else []  # tiny-base builds a new model
    args, _ = parse_recipe(["--config", str(recipe), *parent, *flags], script)
    assert args.max_steps == expected
    said = capsys.readouterr().err
    assert (f"AKSHARA_MAX_STEPS={cap}: this run stops after {cap} steps" in said) == (expected != 40 and not flags)


def test_a_mixture_without_a_learnable_row_is_one_line(capsys, monkeypatch, tmp_path, converted_folder):
    """Every conversation's assistant tokens beyond max_length: all rows dropped, and TRL's trainer stopped with a
    StopIteration traceback looking at the first one."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    news = REPO / "data" / "samples" / "news" / "train.jsonl"  # every article longer than 64 tokens
    base = ["--config", str(TINY_SFT), "--model_name_or_path", str(converted_folder), "--max_length", "64",
            "--data", f"{{sources: [{{kind: news, path: {news}}}], validation_fraction: 0.2}}"]
    code, line = run_script("sft.py", [*base, "--output_dir", str(tmp_path / "a")], capsys, monkeypatch)
    assert line == ("sft.py: error: no training rows: none of the 16 training conversations has an assistant token "
                    "within max_length 64; raise max_length"), line


@pytest.mark.parametrize("where, fragment", [("file/out", "output_dir file/out: cannot be made: "),
                                             ("/proc/akshara-run", "/proc/akshara-run")])
def test_an_output_dir_that_cannot_be_made_is_one_line(capsys, monkeypatch, tmp_path, converted_folder, where,
                                                       fragment):
    """An output_dir under a file, or where nothing may be created, was an OSError traceback from mkdir (then a line
    from the main process only: checked by every process now, the others said the mixture was missing)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, line = run_script("sft.py", ["--config", str(TINY_SFT), "--model_name_or_path", str(converted_folder),
                                       "--output_dir", where], capsys, monkeypatch)
    assert code == 2 and line.startswith("sft.py: error: ") and fragment in line, line


@pytest.mark.parametrize("text, flags, fragment", [
    ("max_steps: 1\nmax_steps: 1000000\n", [], "('max_steps' given twice (first on line "),
    ("", ["--data", "{sources: [{kind: news, path: a.jsonl, path: b.jsonl}]}"],
     "--data: not valid YAML or JSON at line 1 ('path' given twice (first on line 1))"),
    ("", ["--model_config", "{depth: 2, depth: 20}"], "'depth' given twice (first on line 1)"),
], ids=["recipe", "--data", "--model_config"])
def test_a_key_given_twice_is_refused(refused, tmp_path, text, flags, fragment):
    """YAML keeps the last of two equal keys without a word (`max_steps: 1000000` added below a `max_steps: 1` trained
    a million steps); recipes, --data and --model_config refuse them, naming the lines."""
    refused(flags, fragment, recipe=recipe_with(tmp_path, TINY_SFT.read_text(encoding="utf-8") + text))


def test_a_parent_model_with_nan_weights_is_refused_before_the_data(capsys, monkeypatch, tmp_path, converted_folder):
    """NaN weights trained on: the Trainer's NaN filter logged the loss as 0.0, the NaN model was saved, and only the
    model card's figures stopped the run at its very end."""
    import shutil

    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parent = Path(shutil.copytree(converted_folder, tmp_path / "parent"))
    state = load_file(parent / "model.safetensors")
    state["transformer.wte.weight"][0, 0] = float("inf")
    save_file(state, parent / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    code, line = run_script("sft.py", ["--config", str(TINY_SFT), "--model_name_or_path", str(parent),
                                       "--output_dir", str(out)], capsys, monkeypatch)
    assert code == 2 and line == (f"sft.py: error: {parent}: transformer.wte.weight holds NaN or infinite values (a "
                                  "diverged or damaged model)"), line
    assert not (out / "mixture").exists() and not (out / "model.safetensors").exists()
