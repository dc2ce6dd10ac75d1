"""Progress on everything long (counts and rate on stderr; whole lines when stderr is not a terminal, as under pytest),
and the CPU thread setting of the entry points (`akshara_hf.threads`)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from akshara_hf import cli
from akshara_hf.progress import LineTqdm, bar, progress, with_phases, next_phase

REPO = Path(__file__).resolve().parents[1]


def progress_lines(err: str, desc: str) -> list[str]:
    """The bar's lines (`DESC: 40%|####  | 2/5 [...]`) among the output."""
    return [line for line in err.splitlines() if line.startswith(f"{desc}:") and "|" in line]


# ---------------------------------------------------------------------------------------------------------------
# the bars


def test_off_a_terminal_the_bar_is_whole_lines_with_counts_rate_and_eta(capsys):
    progress_bar = bar(total=3, desc="work", unit="step", interval=0.0)
    assert isinstance(progress_bar, LineTqdm)  # pytest's stderr is no terminal
    for _ in range(3):
        progress_bar.update(1)
    progress_bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err  # no carriage returns, no cursor moves: a log reads line by line
    lines = progress_lines(err, "work")
    assert [re.search(r"\| (\d)/3 \[", line).group(1) for line in lines] == ["0", "1", "2", "3"]  # 3/3 once
    assert re.search(r"3/3 \[\d\d:\d\d<\d\d:\d\d, ", lines[-1])  # elapsed < remaining (ETA), then the rate


def test_the_completed_count_is_one_line_with_the_postfix_set_after_the_last_update(capsys):
    """The Trainer updates the bar, then logs the step's loss: a refresh on the last step printed "3/3" with the
    previous loss, and close printed "3/3" again with the last (the demo's log showed two 10/10 lines at random)."""
    progress_bar = bar(total=3, desc="train", unit="step", interval=0.0)
    for step in range(3):
        progress_bar.update(1)
        progress_bar.set_postfix({"loss": str(step)}, refresh=False)
    progress_bar.close()
    done = [line for line in progress_lines(capsys.readouterr().err, "train") if " 3/3 [" in line]
    assert len(done) == 1 and "loss=2" in done[0], done


def test_a_short_bar_prints_one_line_when_done_and_none_when_its_block_fails(capsys):
    with progress(7, "build-mixture: sources", "source") as progress_bar:  # faster than its 10 s interval
        progress_bar.update(7)
    assert progress_lines(capsys.readouterr().err, "build-mixture: sources")[-1].split("|")[-1].startswith(" 7/7 [")
    with pytest.raises(ValueError), progress(7, "failing", "source") as progress_bar:
        progress_bar.update(3)
        raise ValueError("bad row")
    assert capsys.readouterr().err == ""  # the command's one error line stands alone


def test_phases_count_up_to_the_end_of_the_command(capsys):
    @with_phases("convert", "reading", "converting", "writing")
    def command(fail=False):
        next_phase()
        if fail:
            raise ValueError("broken")
        next_phase()
        return "done"

    assert command() == "done"
    lines = progress_lines(capsys.readouterr().err, "convert")
    assert len(lines) == 1 and "3/3 [" in lines[0] and lines[0].endswith("done]")
    with pytest.raises(ValueError):
        command(fail=True)
    assert capsys.readouterr().err == ""
    next_phase()  # outside a command: nothing


def test_tqdm_disable_silences_the_bars():
    code = ("from akshara_hf.progress import progress\n"
            "with progress(2, 'quiet', 'step') as p: p.update(2)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr


# ---------------------------------------------------------------------------------------------------------------
# each command


def test_build_mixture_counts_its_sources(tmp_path, capsys):
    assert cli.main(["build-mixture", "tiny-sft", str(tmp_path / "mix")]) == 0
    lines = progress_lines(capsys.readouterr().err, "build-mixture: sources")
    assert lines and "| 7/7 [" in lines[-1]


def test_conversions_count_their_phases(tmp_path, capsys):
    from model_fixtures import make_nanochat_run

    _, checkpoints, _ = make_nanochat_run(tmp_path / "nanochat")
    capsys.readouterr()
    commands = {
        "convert-nanochat": [str(checkpoints), str(tmp_path / "hf")],
        "export-nanochat": [str(tmp_path / "hf"), str(tmp_path / "back")],
        "export-native": [str(tmp_path / "hf"), str(tmp_path / "native")],
        "import-native": [str(tmp_path / "native"), str(tmp_path / "again")],
    }
    for command, args in commands.items():
        assert cli.main([command, *args]) == 0, command
        lines = progress_lines(capsys.readouterr().err, command)
        assert len(lines) == 1 and "| 3/3 [" in lines[0] and lines[0].endswith("done]"), (command, lines)


def test_evaluate_counts_rows_and_replies(converted_folder, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"నమస్తే {i}"}) + "\n" for i in range(5)), encoding="utf-8")
    assert cli.main(["evaluate", str(converted_folder), "--data", str(data), "--tasks", "", "--batch-size", "2"]) == 0
    lines = progress_lines(capsys.readouterr().err, "evaluate: loss")
    assert len(lines) == 1 and "| 5/5 [" in lines[0] and "row" in lines[0]

    from datasets import Dataset

    from akshara_hf.evaluation.evaluate import evaluate_tasks
    from akshara_hf.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(converted_folder))
    rows = Dataset.from_list([{"source": "paraphrase", "messages": [{"role": "user", "content": f"వాక్యం {i}"},
                                                                    {"role": "assistant", "content": "జవాబు"}]}
                              for i in range(3)])
    evaluate_tasks(model, tokenizer, rows, tasks=("paraphrase",), batch_size=2, max_new_tokens=2)
    lines = progress_lines(capsys.readouterr().err, "evaluate: paraphrase")
    assert len(lines) == 1 and "| 3/3 [" in lines[0] and "reply" in lines[0]


# ---------------------------------------------------------------------------------------------------------------
# CPU threads


THREADS = """
import os, sys
sys.argv = ["sft.py", "--config", "no-such-recipe.yaml"]
{call}
print("POLICY", os.environ.get("OMP_WAIT_POLICY"))
"""


def test_entry_points_let_idle_openmp_threads_sleep_unless_the_user_chose():
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(REPO)

    def policy(call: str, **extra) -> str:
        done = subprocess.run([sys.executable, "-c", THREADS.format(call=call)], capture_output=True, text=True,
                              env={**env, **extra}, timeout=300)
        return done.stdout.strip().splitlines()[-1]

    cli_call = "from akshara_hf import cli\ncli.main(['recipes'])"  # every command of the CLI
    assert policy(cli_call) == "POLICY PASSIVE"
    assert policy(cli_call, OMP_WAIT_POLICY="ACTIVE") == "POLICY ACTIVE"  # the user's choice stands
    assert policy(cli_call, GOMP_SPINCOUNT="1000") == "POLICY None"  # a spin count is a choice too
    # The training scripts' entry point, before it imports torch (this recipe name fails after the import)
    assert policy("from akshara_hf.training.run import main\nmain(script='sft.py')") == "POLICY PASSIVE"


def test_a_process_that_imported_torch_keeps_its_settings(monkeypatch):
    from akshara_hf.threads import configure_threads

    import torch

    torch.zeros(1)  # loaded (not akshara_hf.lazy's placeholder)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert configure_threads() is False and "OMP_WAIT_POLICY" not in os.environ
