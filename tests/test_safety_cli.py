"""Hostile input to every `akshara-hf` command that reads a model folder: one line on stderr, exit status 2, no
traceback, no Hub retries; and generation that fails or outgrows the context never hangs `chat`."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from akshara_hf import cli

ROOT = Path(__file__).resolve().parents[1]

BROKEN = ("missing", "file", "empty folder", "config not JSON", "config wrong type", "zero heads", "config no weights",
          "truncated weights", "fewer layers than weights")


@pytest.fixture(scope="module")
def broken(converted_folder, tmp_path_factory):
    """name -> a path that must be refused."""
    root = tmp_path_factory.mktemp("broken")
    paths = {"missing": root / "nope", "file": root / "file.txt", "empty folder": root / "empty"}
    paths["file"].write_text("not a folder")
    paths["empty folder"].mkdir()

    def variant(name, edit):
        folder = root / name.replace(" ", "-")
        shutil.copytree(converted_folder, folder)
        edit(folder)
        paths[name] = folder

    def edit_config(**changes):
        def edit(folder):
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**config, **changes}))
        return edit

    variant("config not JSON", lambda folder: (folder / "config.json").write_text('{"model_type": "akshara",'))
    variant("config wrong type", edit_config(hidden_size="64"))
    variant("zero heads", edit_config(num_attention_heads=0))
    variant("config no weights", lambda folder: (folder / "model.safetensors").unlink())
    variant("fewer layers than weights", edit_config(num_hidden_layers=1, layer_types=["full_attention"]))  # transformers only warns: layer 1 unused

    def truncate(folder):
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    variant("truncated weights", truncate)
    return paths


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "rows.jsonl"
    path.write_text(json.dumps({"text": "నమస్తే"}) + "\n")
    return path


COMMANDS = {
    "chat": lambda folder, out, data: [folder, "--prompt", "hi", "--max-new-tokens", "2"],
    "evaluate": lambda folder, out, data: [folder, "--data", data, "--tasks", ""],
    "export-native": lambda folder, out, data: [folder, out],
    "import-native": lambda folder, out, data: [folder, out],
    "export-nanochat": lambda folder, out, data: [folder, out],
    "publish": lambda folder, out, data: [folder, "--repo-id", "org/name", "--dry-run"],
    "serve": lambda folder, out, data: [folder, "--device", "cpu", "--port", str(_free_port())],  # never listens
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", BROKEN)
def test_broken_folder_is_one_line_exit_2(command, case, broken, eval_data, tmp_path, capsys):
    path = broken[case]
    argv = [command, *map(str, COMMANDS[command](path, tmp_path / "out", eval_data))]
    code, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"akshara-hf {command}: error: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written for a refused input


@pytest.mark.parametrize("case, expected", [
    ("missing", "nope: no such folder"),
    ("file", "is a file, not a model folder"),
    ("empty folder", "config.json: missing"),
    ("config not JSON", "config.json: not valid JSON"),
    ("config wrong type", "config.json: "),
    ("zero heads", "num_attention_heads"),
    ("config no weights", "no weights (model.safetensors missing)"),
    ("truncated weights", "the weights do not load"),
    ("fewer layers than weights", "the weights do not fit config.json (akshara): unexpected: transformer.h.1."),
])
def test_errors_name_the_file_and_field(case, expected, broken, capsys):
    code, err = run_cli(["chat", str(broken[case]), "--prompt", "hi"], capsys)
    assert code == 2 and expected in err and str(broken[case].name) in err, err


@pytest.mark.parametrize("name, text, expected", [
    ("rows.jsonl", "{bad\n", "cannot read it as a dataset"),
    ("rows.jsonl", "", "empty file"),
    ("rows.jsonl", '{"x": 1}\n', "row 0: needs a 'messages' or a 'text' column"),
    ("rows.parquet", "garbage", "cannot read it as a dataset (ArrowInvalid"),
    ("rows.csv", "a,b\n", "expected a dataset folder or a .jsonl/.json/.parquet file"),
    ("folder", None, "cannot read it as a dataset"),
])
def test_evaluate_bad_data_is_one_line(converted_folder, tmp_path, capsys, name, text, expected):
    path = tmp_path / name
    path.mkdir() if text is None else path.write_text(text)
    code, err = run_cli(["evaluate", str(converted_folder), "--data", str(path), "--tasks", ""], capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and f"{path}: " in errors[0] and expected in errors[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("option, value", [("--limit", "-1"), ("--limit", "0"), ("--batch-size", "0"),
                                           ("--batch-size", "-1"), ("--max-new-tokens", "0")])
def test_evaluate_counts_that_evaluate_nothing_are_one_line(converted_folder, capsys, eval_data, option, value):
    """`--limit -1 --no-loss` printed an empty table with exit status 0; `--batch-size 0` blamed the model."""
    code, err = run_cli(["evaluate", str(converted_folder), "--data", str(eval_data), "--no-loss", option, value],
                        capsys)
    assert code == 2 and err.strip() == f"akshara-hf evaluate: error: {option} {value}: must be a positive integer", err


@pytest.mark.parametrize("flags, expected", [
    (["--max-steps", "-1"], "--max-steps -1: must be a positive number of steps"),  # ran the whole demo, uncapped
    (["--max-steps", "0"], "--max-steps 0: must be a positive number of steps"),
    (["--vocab-size", "10"], "--vocab-size 10: must be between 265"),  # refused only after the corpus was built
], ids=["max-steps -1", "max-steps 0", "vocab-size 10"])
def test_demo_options_are_checked_before_any_work(tmp_path, capsys, monkeypatch, flags, expected):
    from akshara_hf.cli import demo

    def went_on(*args):
        raise RuntimeError("the demo started its work")

    monkeypatch.setattr(demo, "_train_tokenizer", went_on)
    code, err = run_cli(["demo", "--output", str(tmp_path / "out"), *flags], capsys)
    assert code == 2 and err.strip().startswith(f"akshara-hf demo: error: {expected}"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--facts", "--eval-results"])
def test_model_card_inputs_that_are_named_pipes_are_one_line(converted_folder, tmp_path, capsys, no_hang, flag):
    """`model-card --facts FIFO` waited for a writer forever: every JSON input is read only as a regular file."""
    folder = tmp_path / "model"
    shutil.copytree(converted_folder, folder)
    os.mkfifo(tmp_path / "pipe.json")
    with no_hang(30):
        code, err = run_cli(["model-card", str(folder), flag, str(tmp_path / "pipe.json")], capsys)
    assert code == 2 and err.strip() == (f"akshara-hf model-card: error: {tmp_path / 'pipe.json'}: is a named pipe, "
                                         "not a regular file; refusing to read it as a file"), err


def test_model_card_facts_in_the_folder_that_are_a_named_pipe_or_a_bad_license_are_one_line(converted_folder, tmp_path,
                                                                                             capsys, no_hang):
    """A named pipe at the folder's run_facts.json was passed over (the card written from nanochat_meta.json, without
    the run's facts), and `--license` took any text into the card's metadata, which the Hub refuses on upload."""
    folder = tmp_path / "model"
    shutil.copytree(converted_folder, folder)
    os.mkfifo(folder / "run_facts.json")
    with no_hang(30):
        code, err = run_cli(["model-card", str(folder)], capsys)
    assert code == 2 and err.strip() == (f"akshara-hf model-card: error: {folder / 'run_facts.json'}: is a named pipe, "
                                         "not a regular file; refusing to read it as a file"), err
    (folder / "run_facts.json").unlink()
    for license in ("MIT License", "mit\nevil: 1", "", "-x"):
        code, err = run_cli(["model-card", str(folder), f"--license={license}"], capsys)
        assert code == 2 and err.strip() == ("akshara-hf model-card: error: license: must be a Hub license id (as "
                                             f"apache-2.0, mit, cc-by-4.0 or other), got {license!r}"), err
    assert not (folder / "README.md").exists() or "MIT License" not in (folder / "README.md").read_text()
    code, err = run_cli(["model-card", str(folder), "--license", "cc-by-nc-sa-4.0"], capsys)
    assert code == 0, err


def test_mistyped_folder_fails_at_once_without_the_hub(tmp_path, monkeypatch, capsys, network_calls):
    """`runs/nope` with a `runs/` folder here is a typo, not the Hub repo `runs/nope` (was ~28 s of Hub retries):
    refused without a single attempt to reach the Hub."""
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for argument, hint in (("runs/nope", "runs/ exists here"), ("./nope", ""), ("nope", "ORG/NAME"), ("a/b/c", "")):
        code, err = run_cli(["chat", argument, "--prompt", "hi"], capsys)
        assert code == 2 and f"{argument}: no such folder" in err and hint in err, err
    assert network_calls == []


def test_serve_mistyped_folder_fails_at_once(tmp_path, monkeypatch, capsys, network_calls):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code, err = run_cli(["serve", "runs/nope"], capsys)
    assert code == 2 and "runs/nope: no such folder (runs/ exists here" in err, err
    assert network_calls == []


def test_hub_ids_are_told_apart_from_local_paths(tmp_path, monkeypatch):
    from akshara_hf.loading import is_hub_id

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("ORG/akshara-d20") and is_hub_id("karpathy/nanochat-d32")
    for local in ("runs/nope", "./x/y", "/abs/path", "~/x", "nope", "a/b/c", "bad name/x", "x\\y"):
        assert not is_hub_id(local), local


# ---------------------------------------------------------------------------------------------------------------
# chat: failures during generation, the context, sampling options


CHAT = [sys.executable, "-m", "akshara_hf.cli", "chat"]


def chat_process(*args, timeout=120, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([*CHAT, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def test_generation_failure_exits_2_with_one_line_and_no_hang(converted_folder, tmp_path):
    """generate raises inside its thread (here: beam search, which refuses a streamer; NaN weights did it before they
    were refused at load): was a printed traceback and a reader waiting forever."""
    folder = tmp_path / "beams"
    shutil.copytree(converted_folder, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "num_beams": 2}))
    result = chat_process(folder, "--prompt", "hi", "--temperature", "1", "--max-new-tokens", "4")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines == [lines[0]] and lines[0].startswith("akshara-hf chat: error: generation failed"), result.stderr
    assert "Traceback" not in result.stderr


def test_history_past_the_context_drops_old_turns_with_a_notice(converted_folder):
    """The tiny model's context is 64 tokens: the third long message no longer fits beside the first two."""
    from io import StringIO

    from akshara_hf.cli.chat import chat

    long = "తెలుగు " * 6
    stdout, stderr = StringIO(), StringIO()
    code = chat(str(converted_folder), stdin=StringIO(f"{long}\n{long}\n{long}\n{long * 20}\nok\n"), stdout=stdout,
                stderr=stderr, temperature=0, max_new_tokens=4)
    assert code == 0 and stdout.getvalue().count("akshara> ") == 4, (stdout.getvalue(), stderr.getvalue())
    assert "dropped its" in stderr.getvalue() and "oldest exchange" in stderr.getvalue()
    assert "the model's context is 64" in stderr.getvalue()  # the over-long message alone is refused, the chat goes on


def test_one_shot_prompt_past_the_context_is_refused(converted_folder, capsys):
    code, err = run_cli(["chat", str(converted_folder), "--prompt", "తెలుగు " * 100], capsys)
    assert code == 2 and "the model's context is 64" in err and len(err.strip().splitlines()) == 1


def test_greedy_chat_prints_no_warnings(converted_folder):
    result = chat_process(converted_folder, "--prompt", "కథ చెప్పు", "--temperature", "0", "--max-new-tokens", "5")
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_top_k_and_top_p_reach_generate(converted_folder):
    from akshara_hf.cli.chat import generation_overrides
    from akshara_hf.loading import load_model

    config = load_model(str(converted_folder)).generation_config
    sampled = generation_overrides(config, temperature=0.9, top_k=5, top_p=0.5)
    assert (sampled.do_sample, sampled.temperature, sampled.top_k, sampled.top_p) == (True, 0.9, 5, 0.5)
    greedy = generation_overrides(config, temperature=0, top_k=5)
    assert (greedy.do_sample, greedy.temperature, greedy.top_k, greedy.top_p) == (False, None, None, None)
    assert config.temperature == 0.6  # the folder's own config is untouched


@pytest.mark.parametrize("option, value", [("--temperature", "-1"), ("--temperature", "nan"), ("--temperature", "inf"),
                                           ("--top-k", "-2"), ("--top-p", "0"),
                                           ("--top-p", "1.5"), ("--max-new-tokens", "0"), ("--system", "a\U000f0000"),
                                           ("--system", "  ")])
def test_bad_sampling_options_are_one_line(converted_folder, option, value, capsys):
    code, err = run_cli(["chat", str(converted_folder), "--prompt", "hi", option, value], capsys)
    prefix = f"akshara-hf chat: error: {option}{':' if option == '--system' else ''} {'' if option == '--system' else value}"
    assert code == 2 and err.startswith(prefix.rstrip()) and len(err.splitlines()) == 1, err


# ---------------------------------------------------------------------------------------------------------------
# --help is fast: no torch, no transformers


HELP_CHECK = """
import sys
from akshara_hf import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
loaded = lambda name: name in sys.modules and type(sys.modules[name]).__name__ != "_LazyModule"  # lazy_import's
heavy = sorted(name for name in ("torch", "transformers", "trl", "datasets") if loaded(name))
print("HEAVY", heavy)
"""


def test_help_imports_neither_torch_nor_transformers():
    from akshara_hf.cli import build_parser

    commands = [None, *build_parser()._subparsers._group_actions[0].choices]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for command in commands:
        argv = ["--help"] if command is None else [command, "--help"]
        result = subprocess.run([sys.executable, "-c", HELP_CHECK, *argv], capture_output=True, text=True, timeout=60,
                                env=env)
        assert "HEAVY []" in result.stdout, (command, result.stdout[-500:], result.stderr[-2000:])


def test_package_import_is_lazy_and_still_registers_the_auto_classes():
    code = """
import sys
import akshara_hf
assert "torch" not in sys.modules and "transformers" not in sys.modules
from akshara_hf import AksharaForCausalLM, AksharaConfig
from transformers import AutoConfig, AutoModelForCausalLM
config = AutoConfig.for_model("akshara", hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                              num_hidden_layers=1, vocab_size=300)
assert type(AutoModelForCausalLM.from_config(config)) is AksharaForCausalLM
print("OK")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.stdout.strip().endswith("OK"), result.stderr[-2000:]


def test_demo_stage_failure_is_one_line(tmp_path):
    """A recipe whose training script fails: the demo says which stage, once, instead of a CalledProcessError trace."""
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("stage: mid\nmodel_config: {num_attention_heads: 0}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-m", "akshara_hf.cli", "demo", str(recipe), "--output",
                             str(tmp_path / "demo")], capture_output=True, text=True, timeout=300, env=env)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("akshara-hf demo: error: the mid stage"), result.stderr[-3000:]
    assert "CalledProcessError" not in result.stderr


def test_evaluate_generation_past_the_rotary_tables_is_one_line(converted_folder, tmp_path, capsys):
    """A task prompt longer than the model can position (64 x 10 rotary rows) fails as one line, not a torch trace."""
    row = {"source": "tesum", "messages": [{"role": "user", "content": "తెలుగు " * 400},
                                           {"role": "assistant", "content": "సారాంశం"}]}
    data = tmp_path / "tasks.jsonl"
    data.write_text(json.dumps(row, ensure_ascii=False) + "\n")
    code, err = run_cli(["evaluate", str(converted_folder), "--data", str(data), "--no-loss",
                         "--tasks", "summarization", "--max-new-tokens", "2"], capsys)
    errors = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(errors) == 1 and "evaluation failed" in errors[0] and "Traceback" not in err, err


def test_output_piped_into_a_reader_that_left_ends_quietly():
    """`akshara-hf recipes | head -1`: the reader closes the pipe; the command stops with status 0 and prints no
    error (it printed "error: [Errno 32] Broken pipe")."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(cli.__file__).rsplit("/akshara_hf/", 1)[0],
                                                                        os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen([sys.executable, "-m", "akshara_hf.cli", "recipes"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # before the command writes: its first write meets a pipe with no reader
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0, err
    assert err == "", err


# ---------------------------------------------------------------------------------------------------------------
# Bounds before work: model folders that were silently wrong, hung or crashed deep inside a library


def _int8_weights(folder):
    from safetensors.torch import load_file, save_file
    import torch

    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"] = state["lm_head.weight"].to(torch.int8)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return edit


def _generation(text):
    return lambda folder: (folder / "generation_config.json").write_text(text)


def _fifo(name):
    def edit(folder):
        (folder / name).unlink()
        os.mkfifo(folder / name)
    return edit


def _nan_weight(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"][3, 5] = float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _weights_outside(folder):
    """The weights moved beside the folder, an index naming them through `..`: transformers joins the name to the
    folder and read them (any safetensors file on the machine became the model)."""
    from safetensors import safe_open

    outside = folder.parent / f"outside-{folder.name}.safetensors"
    (folder / "model.safetensors").rename(outside)
    with safe_open(outside, "pt") as weights:
        names = list(weights.keys())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {name: f"../{outside.name}" for name in names}}))


def _crafted_split_regex(folder):
    """A tokenizer.json whose split regex backtracks: `chat --prompt` of 40 x "a" ended in a Rust panic
    (pyo3's PanicException, a BaseException) with a traceback; longer inputs backtrack for hours first."""
    data = json.loads((folder / "tokenizer.json").read_text())
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a|a)*b|\\s+|[^\\s]+"
    (folder / "tokenizer.json").write_text(json.dumps(data))


HOSTILE_FOLDERS = {
    "a NaN weight": (_nan_weight, ": lm_head.weight holds NaN or infinite values"),
    "weights named outside the folder": (_weights_outside, "model.safetensors.index.json: weight_map names "
                                                           "'../outside-"),
    "crafted tokenizer regex": (_crafted_split_regex, "tokenizer.json: regex '(a|a)*b|\\\\s+|[^\\\\s]+' is not "
                                                      "nanochat's split pattern"),
    "int8 weights (chatted, exported silently)": (_int8_weights, "model.safetensors: lm_head.weight is I8, not a "
                                                                 "floating-point weight"),
    "generation config not JSON (defaults used)": (_generation("{bad"), "generation_config.json: not valid JSON"),
    "generation config a list": (_generation("[1]"), "generation_config.json: not a JSON object"),
    "generation temperature text": (_generation('{"do_sample": true, "temperature": "abc"}'),
                                    "generation_config.json: temperature 'abc' is not a valid value"),
    "generation max_new_tokens -1": (_generation('{"max_new_tokens": -1}'), "generation_config.json: max_new_tokens"),
    "generation eos past the vocabulary (replies never stopped)": (
        _generation('{"eos_token_id": [299, 1000000]}'),
        "generation_config.json: eos_token_id [299, 1000000] is not a token of this model (vocab_size 300)"),
    "config eos past the vocabulary (transformers only warned)": (
        _config(eos_token_id=10**6), "config.json: eos_token_id 1000000 is not a token of this model (vocab_size 300)"),
    "config pad -3": (_config(pad_token_id=-3), "config.json: pad_token_id -3 is not a token of this model"),
    "config dtype float7 (a traceback)": (_config(dtype="float7"), "config.json: dtype 'float7' is not a "
                                                                  "floating-point torch dtype"),
    "config torch_dtype int8": (_config(torch_dtype="int8"), "config.json: torch_dtype 'int8' is not a floating"),
    "hidden_size 2**20": (_config(hidden_size=2**20, intermediate_size=None, head_dim=None),
                          "config.json: hidden_size 1,048,576: a model of this size needs at least"),
    "num_hidden_layers 10**7": (_config(num_hidden_layers=10**7, layer_types=None),
                                "config.json: num_hidden_layers 10,000,000: a model of this size needs at least"),
    "generation config a named pipe": (_fifo("generation_config.json"),
                                       "generation_config.json: is a named pipe, not a regular file"),
    "tokenizer.json a named pipe": (_fifo("tokenizer.json"), "tokenizer.json: is a named pipe, not a regular file"),
}
MODEL_COMMANDS = {name: COMMANDS[name] for name in ("chat", "evaluate", "export-native", "export-nanochat")}


@pytest.fixture(scope="module")
def hostile(converted_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    paths = {}
    for number, (case, (edit, _)) in enumerate(HOSTILE_FOLDERS.items()):
        paths[case] = root / f"case{number}"
        shutil.copytree(converted_folder, paths[case])
        edit(paths[case])
    return paths


@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize("case", HOSTILE_FOLDERS)
def test_hostile_model_folders_are_one_line(command, case, hostile, eval_data, tmp_path, capsys, no_hang):
    argv = [command, *map(str, MODEL_COMMANDS[command](hostile[case], tmp_path / "out", eval_data))]
    with no_hang(60):  # 10**7 layers were built one by one; a named pipe blocked the read
        code, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"akshara-hf {command}: error: "), err
    assert HOSTILE_FOLDERS[case][1] in lines[0], err
    assert not (tmp_path / "out").exists()


def test_export_native_bad_tokenizer_json_is_one_line(converted_folder, tmp_path, capsys):
    folder = tmp_path / "folder"
    shutil.copytree(converted_folder, folder)
    (folder / "tokenizer.json").write_text("{bad")
    code, err = run_cli(["export-native", str(folder), str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "the tokenizer does not load" in err, err


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**70)])
def test_chat_seed_out_of_range_is_one_line(converted_folder, capsys, seed):
    code, err = run_cli(["chat", str(converted_folder), "--prompt", "hi", "--seed", seed], capsys)
    assert code == 2 and err.strip() == f"akshara-hf chat: error: --seed {seed}: must be between 0 and 4294967295"


def test_chat_non_utf8_stdin_is_one_line(converted_folder):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([*CHAT, str(converted_folder), "--max-new-tokens", "2"], input=b"\xff\xfe hi\n",
                            capture_output=True, timeout=120, env=env)
    err = result.stderr.decode()
    assert result.returncode == 2 and err.strip() == "akshara-hf chat: error: stdin: a line is not UTF-8 text (set " \
        "the terminal to UTF-8)", err[-2000:]


def test_chat_stdin_without_line_ends_is_one_line(converted_folder):
    """`chat < /dev/zero` read one endless line into memory (a MemoryError traceback under a memory limit, else the
    machine's memory); a line is refused past 1 MiB. The limit here makes the old behaviour fail fast."""
    import resource

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with open("/dev/zero", "rb") as zeros:
        result = subprocess.run([*CHAT, str(converted_folder), "--max-new-tokens", "2"], stdin=zeros,
                                capture_output=True, timeout=300, env=env, preexec_fn=limit_memory)
    err = result.stderr.decode()
    assert result.returncode == 2 and err.strip() == "akshara-hf chat: error: stdin: a line longer than 1,048,576 " \
        "bytes (no model's context holds it)", err[-2000:]


def test_chat_prompt_of_undecodable_bytes_is_one_line(converted_folder, capsys):
    """argv bytes that are not UTF-8 reach Python as lone surrogates, which the tokenizer cannot take."""
    code, err = run_cli(["chat", str(converted_folder), "--prompt", "hi \udcff"], capsys)
    assert code == 2 and err.strip().startswith("akshara-hf chat: error: --prompt: not UTF-8 text"), err


@pytest.mark.parametrize("size", [str(10**20), str(2**31), "12"])
def test_train_tokenizer_vocab_size_out_of_range_is_one_line(tmp_path, capsys, size):
    text = tmp_path / "text.txt"
    text.write_text("తెలుగు\n")
    code, err = run_cli(["train-tokenizer", str(text), "--vocab-size", size, "--output", str(tmp_path / "t")], capsys)
    assert code == 2 and err.strip().startswith(f"akshara-hf train-tokenizer: error: --vocab-size {size}: must be "
                                                "between 265"), err


def test_train_tokenizer_vocab_size_past_the_memory_is_one_line(tmp_path, capsys):
    """The Rust trainer reserves ~66 bytes per entry up front: 2**31 - 1 aborted the process (`memory allocation of
    141733920784 bytes failed`, status 134) on a machine with less memory."""
    text = tmp_path / "text.txt"
    text.write_text("తెలుగు\n")
    code, err = run_cli(["train-tokenizer", str(text), "--vocab-size", str(2**31 - 1), "--output",
                         str(tmp_path / "t")], capsys)
    assert code == 2 and "the tokenizer trainer needs at least 132.0 GiB of memory" in err, err


def test_evaluate_data_nested_too_deeply_is_one_line(converted_folder, tmp_path, capsys):
    """pyarrow's JSON reader recursed until the process died (SIGSEGV, no message at all)."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a"}\n{"text": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    code, err = run_cli(["evaluate", str(converted_folder), "--data", str(rows), "--tasks", ""], capsys)
    assert code == 2 and err.strip() == f"akshara-hf evaluate: error: {rows}: line 2: JSON nested too deeply", err
    document = tmp_path / "rows.json"
    document.write_text("[\n" * 100_000 + "]\n" * 100_000)
    code, err = run_cli(["evaluate", str(converted_folder), "--data", str(document), "--tasks", ""], capsys)
    assert code == 2 and err.strip() == f"akshara-hf evaluate: error: {document}: JSON nested too deeply", err


def test_a_key_given_twice_in_config_json_is_one_line(converted_folder, tmp_path, capsys):
    """json keeps the last of a key given twice without a word: a second softcap changed the model silently."""
    folder = tmp_path / "model"
    shutil.copytree(converted_folder, folder)
    config = folder / "config.json"
    config.write_text(config.read_text().rstrip()[:-1] + ', "final_logit_softcapping": 30.0}')
    code, err = run_cli(["chat", str(folder), "--prompt", "hi"], capsys)
    assert code == 2 and err.strip() == (f"akshara-hf chat: error: {config}: not valid JSON (key "
                                         "'final_logit_softcapping' given twice)"), err


@pytest.mark.parametrize("argv", [["chat", "m", "--max-new-tokens", "abc"], ["chat"], ["chatt"],
                                  ["evaluate", "m", "--data", "d", "--nope"]])
def test_a_bad_flag_is_one_line_without_the_usage_block(capsys, argv):
    """argparse printed its usage (several lines) above the error line."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "usage:" not in err, err
    assert err.startswith(f"akshara-hf {argv[0]}: error: " if argv[0] != "chatt" else "akshara-hf: error: "), err


def test_a_step_past_int64_is_one_line(converted_folder, tmp_path, capsys):
    """`export-nanochat --step 10**30` wrote model_1000000000000000000000000000000.pt, exit status 0."""
    code, err = run_cli(["export-nanochat", str(converted_folder), str(tmp_path / "out"), "--step", str(10**30)], capsys)
    assert code == 2 and err.strip() == (f"akshara-hf export-nanochat: error: --step {10**30}: must be below 2**63 "
                                         "(steps are int64 in nanochat and torch)"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["chat", "export-native", "export-nanochat", "evaluate"])
def test_a_tokenizer_larger_than_the_vocabulary_is_one_line(converted_folder, tmp_path, capsys, eval_data, command):
    """Another model's tokenizer (400 ids in a 300-id model) chatted, evaluated and exported with exit status 0."""
    from nanochat_fixtures import corpus

    text = tmp_path / "text.txt"
    text.write_text("\n".join(corpus()), encoding="utf-8")
    assert cli.main(["train-tokenizer", str(text), "--vocab-size", "400", "--output", str(tmp_path / "tok")]) == 0
    folder = tmp_path / "model"
    shutil.copytree(converted_folder, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tmp_path / "tok" / name, folder / name)
    capsys.readouterr()
    code, err = run_cli([command, *map(str, COMMANDS[command](folder, tmp_path / "out", eval_data))], capsys)
    assert code == 2 and err.strip().endswith(f"error: {folder}: the tokenizer has 400 ids, config.json's vocab_size "
                                              "is 300 (a tokenizer of another model?)"), err


def _parquet(path, **columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


TOKENIZER_INPUTS = {  # name -> (write the file, what the line says); each was a traceback, mid-training
    "txt not UTF-8 late": ("a.txt", lambda p: p.write_bytes("తెలుగు భాష\n".encode() * 300 + b"\xff\xfe\n"),
                           "a.txt:301: not UTF-8 text"),
    "jsonl not UTF-8 late": ("a.jsonl", lambda p: p.write_bytes(b'{"text": "hello"}\n' * 300 + b'{"text": "\xff"}\n'),
                             "a.jsonl:301: not UTF-8 text"),
    "parquet text of ints": ("a.parquet", lambda p: _parquet(p, text=list(range(50))),
                             "a.parquet: the 'text' column holds int64, not strings"),
}


@pytest.mark.parametrize("case", TOKENIZER_INPUTS)
def test_train_tokenizer_bad_input_is_one_line_naming_the_line(tmp_path, capsys, case):
    name, write, expected = TOKENIZER_INPUTS[case]
    write(tmp_path / name)
    code, err = run_cli(["train-tokenizer", str(tmp_path / name), "--vocab-size", "300", "--output",
                         str(tmp_path / "t")], capsys)
    assert code == 2 and err.strip() == f"akshara-hf train-tokenizer: error: {tmp_path / expected}", err
    assert not (tmp_path / "t").exists()


# ---------------------------------------------------------------------------------------------------------------
# One error path: Ctrl-C anywhere is one line and status 130; a full disk names the file and keeps the old output


def test_ctrl_c_in_any_command_is_one_line_and_130(monkeypatch, capsys):
    from akshara_hf.cli import recipes

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipes, "recipes_command", interrupted)
    code, err = run_cli(["recipes"], capsys)
    assert code == 130 and err == "akshara-hf recipes: interrupted\n", err


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ctrl_c_during_a_build_keeps_the_old_output(tmp_path):
    """A real SIGINT while `build-mixture --overwrite` writes its staging folder: status 130, one line, the earlier
    build byte for byte as it was, and no staging folder left."""
    import signal

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"ప్రశ్న {n} " * 20},
                                                      {"role": "assistant", "content": f"జవాబు {n} " * 20}]},
                                        ensure_ascii=False) + "\n" for n in range(30000)), encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data:\n  validation_fraction: 0.01\n  sources: [{{kind: smoltalk, path: {chats}}}]\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".akshara-hf.json").write_text(json.dumps({"command": "build-mixture", "written_by": "akshara-hf"}))
    (out / "report.md").write_text("the earlier build")
    before = _digests(out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "akshara_hf.cli", "build-mixture", str(recipe), str(out),
                                "--overwrite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".out.akshara-hf-staging-*")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    err = err.decode()
    # 130 from our handler; CPython itself ends the process by SIGINT (a shell shows 130 all the same) when the
    # interrupt landed inside an import that a C extension runs through PyRun_* (seen about once in 20 early signals)
    assert process.returncode in (130, -signal.SIGINT), err[-3000:]
    assert err.strip().splitlines()[-1] == "akshara-hf build-mixture: interrupted" and "Traceback" not in err, err
    assert _digests(out) == before and not list(tmp_path.glob(".out.akshara-hf-staging-*"))


def _fill_disk(path: Path):
    """What a full disk does to a write: part of the file lands, then errno 28."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 100)
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_in_build_mixture_names_the_file_and_keeps_the_old_output(tmp_path, capsys, monkeypatch):
    import datasets

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data:\n  sources: [{{kind: stories, path: {ROOT / 'data/samples/stories'}}}]\n")
    out = tmp_path / "out"
    assert cli.main(["build-mixture", str(recipe), str(out)]) == 0
    before = _digests(out)
    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk",
                        lambda self, folder, **kw: _fill_disk(Path(folder) / "train" / "data-00000-of-00001.arrow"))
    capsys.readouterr()
    code, err = run_cli(["build-mixture", str(recipe), str(out), "--overwrite"], capsys)
    assert code == 2 and [line for line in err.splitlines() if "error" in line] == [(f"akshara-hf build-mixture: error: {out}/train/data-00000-of-00001.arrow: "
                                         f"no space left on device while writing it; {out} is as it was")], err
    assert _digests(out) == before and not list(tmp_path.glob(".out.akshara-hf-staging-*"))


def test_full_disk_under_torch_save_names_the_file(converted_folder, tmp_path, capsys, monkeypatch):
    """torch.save says only 'unexpected pos' on a full disk (measured on a 2 MB tmpfs); the free space decides."""
    import torch

    from akshara_hf import folders

    def torch_save_on_a_full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK" * 50)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", torch_save_on_a_full_disk)
    monkeypatch.setattr(folders.os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 100, 0, 0, 0, 0, 0, 0, 255)))
    code, err = run_cli(["export-nanochat", str(converted_folder), str(tmp_path / "out")], capsys)
    assert code == 2 and err.strip() == (f"akshara-hf export-nanochat: error: {tmp_path / 'out'}/model_000200.pt: no "
                                         "space left on device while writing it; nothing was written"), err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.akshara-hf-staging-*"))


def test_full_disk_under_safetensors_names_the_file(tmp_path, capsys, monkeypatch):
    from model_fixtures import make_nanochat_run
    from safetensors import SafetensorError
    from transformers import modeling_utils

    _, checkpoints, _ = make_nanochat_run(tmp_path / "nanochat")

    def safetensors_on_a_full_disk(tensors, path, *args, **kwargs):
        Path(path).write_bytes(b"\0" * 100)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(modeling_utils, "safe_save_file", safetensors_on_a_full_disk)
    code, err = run_cli(["convert-nanochat", str(checkpoints), str(tmp_path / "hf")], capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and errors == [f"akshara-hf convert-nanochat: error: {tmp_path / 'hf'}/model.safetensors: no "
                                    "space left on device while writing it; nothing was written"], err
    assert "Traceback" not in err and not (tmp_path / "hf").exists()


def test_a_full_disk_is_told_apart_from_other_errors(tmp_path):
    from akshara_hf.folders import disk_full_error, is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    assert not is_disk_full(RuntimeError("unexpected pos 576 vs 534"), tmp_path)  # this disk has room
    assert not is_disk_full(ValueError("No room for this value"), tmp_path)
    assert disk_full_error(ValueError("x"), tmp_path) is None


def test_a_full_disk_outside_a_staged_output_is_one_line(monkeypatch, capsys):
    """A library that reports the full disk in its own words (safetensors) still ends in one line, status 2."""
    from safetensors import SafetensorError

    from akshara_hf.cli import recipes

    def full(args):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(recipes, "recipes_command", full)
    code, err = run_cli(["recipes"], capsys)
    assert code == 2 and err.startswith("akshara-hf recipes: error: no space left on device (") and \
        err.count("\n") == 1, err
