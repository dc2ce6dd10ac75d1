"""Help that answers at once and says what each script runs; GPU-only recipes refused on a machine without a GPU.
(How fast `--help` is, is measured by bench/bench_first_hour.py: timings are no test on a shared machine.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from akshara_hf.training import help as recipe_help

REPO = Path(__file__).resolve().parents[1]

HELP_RUN = """
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as done:
    print("EXIT", done.code)
loaded = lambda name: name in sys.modules and type(sys.modules[name]).__name__ != "_LazyModule"
print("HEAVY", sorted(name for name in ("torch", "transformers", "trl", "datasets") if loaded(name)))
"""


@pytest.mark.parametrize("script,stages,default", [("sft.py", "sft", "sft"), ("mid_train.py", "mid or base", "mid")])
def test_training_script_help_imports_no_torch_and_names_its_stage(script, stages, default):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-c", HELP_RUN.format(script=f"training/{script}")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert "EXIT 0" in out and "HEAVY []" in out, (out[-2000:], done.stderr[-2000:])
    assert out.startswith(f"usage: {script} [--config RECIPE]")
    assert f"this script runs stage {stages}" in " ".join(out.split())
    stage = out[out.index("  --stage {base,mid,sft}"):].split("\n  --")[0]
    assert f"(default: {default})" in stage and f"{script} runs {stages}" in " ".join(stage.split())
    assert "--help-all lists them" in out


@pytest.mark.parametrize("script", sorted(recipe_help.SCRIPT_STAGES))
def test_the_light_help_is_the_real_parsers(script, monkeypatch):
    """recipe_options.json holds what the real parser (TRL's SFTConfig and ours) offers, option by option, and both
    print the same text. When this fails, a recipe option changed: `python -m akshara_hf.training.help --write`."""
    import json

    from akshara_hf.training.run import recipe_parser

    monkeypatch.setenv("COLUMNS", "100")
    parser = recipe_parser(script)
    stored = json.loads(recipe_help.OPTIONS_FILE.read_text(encoding="utf-8"))[script]
    assert stored["options"] == [recipe_help.option_record(action) for action in parser.recipe_actions()]
    assert stored["total"] == parser.option_count()
    assert recipe_help.light_help(script) == parser.format_help()


def test_mid_train_defaults_to_its_own_stage(tmp_path):
    """A recipe without `stage:` run by mid_train.py is a mid-training run (was: stage sft, refused)."""
    from akshara_hf.training.run import parse_recipe

    recipe = (REPO / "training" / "recipes" / "tiny-mid.yaml").read_text().replace("stage: mid\n", "")
    (tmp_path / "r.yaml").write_text(recipe)
    parent = tmp_path / "parent"
    parent.mkdir()
    args, _ = parse_recipe(["--config", str(tmp_path / "r.yaml"), "--model_name_or_path", str(parent),
                            "--output_dir", str(tmp_path / "out")], script="mid_train.py")
    assert args.stage == "mid"


def test_demo_help_documents_every_option_and_default():
    from akshara_hf.cli import build_parser

    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    text = " ".join(demo.format_help().split())
    for action in demo._actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
        assert f"(default: {action.default})" in text, action.dest
    assert "(default: runs/demo)" in text and "(default: 1024)" in text


def test_a_gpu_recipe_on_a_machine_without_one_is_refused_saying_what_to_do(capsys, monkeypatch):
    import transformers.utils

    from akshara_hf.training.run import main

    monkeypatch.setattr(transformers.utils, "is_torch_bf16_gpu_available", lambda: False)  # as on a CPU-only machine
    monkeypatch.setattr(sys, "argv", ["sft.py", "--config", "nanochat-telugu-d20-sft-v1"])
    assert main(script="sft.py") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sft.py: error: ")
    assert "bf16 on a GPU" in err and "--bf16 false --use_cpu true" in err and "akshara-hf recipes" in err
    monkeypatch.setattr(sys, "argv", ["sft.py", "--config", "nanochat-telugu-d20-sft-v1", "--bf16", "false",
                                      "--output_dir", "/nonexistent-dir/x", "--model_name_or_path", "nope"])
    assert main(script="sft.py") == 2
    assert "bf16 on a GPU" not in capsys.readouterr().err  # with the advice followed, the next check speaks
