"""The trust rule: no command runs Python from a model folder or Hub repo unless the user passes --trust-remote-code.

Each case plants code that writes a marker file when it runs, in one of the ways transformers can be made to import
a folder's Python: a tokenizer `auto_map`, a config `auto_map` under another model_type (so the installed Akshara
classes do not answer for it), a foreign modeling file in the config's `auto_map`, a `tokenizer_class` naming a
module, a `custom_generate/generate.py`, and an edited copy of `configuration_akshara.py`. Every command that reads
a model refuses the folder in one line naming the file, and the marker never appears; with the flag the code runs
(where transformers has a path that runs it). Before the rule, `chat` and `evaluate` loaded with
trust_remote_code=True and ran the tokenizer's and the config's code, and the demo's reload step and publish's check
ran every case's code.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from akshara_hf import cli
from akshara_hf.loading import OUR_AUTO_MAP, check_folder_code

REPO = Path(__file__).resolve().parents[1]
MODEL_FILES = REPO / "akshara_hf" / "model"


def _marker_code(marker: Path) -> str:
    return f"\nimport pathlib as _pathlib\n_pathlib.Path({str(marker)!r}).write_text(__name__)\n"


def _tokenizer_module(folder: Path, marker: Path) -> None:
    (folder / "tok_evil.py").write_text(_marker_code(marker) + (
        "from transformers import TokenizersBackend\n\n\nclass EvilTokenizer(TokenizersBackend):\n    pass\n"))


def _edit_json(folder: Path, name: str, **changes) -> None:
    path = folder / name
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def plant_tokenizer_auto_map(folder, marker):
    _tokenizer_module(folder, marker)
    _edit_json(folder, "tokenizer_config.json", auto_map={"AutoTokenizer": [None, "tok_evil.EvilTokenizer"]})
    return "tokenizer_config.json"


def plant_config_under_other_model_type(folder, marker):
    """Our auto_map, but a model_type the installed package does not register: transformers imports the folder's
    configuration_akshara.py (edited here) and modeling_akshara.py."""
    source = folder / "configuration_akshara.py"
    source.write_text((source.read_text() if source.exists() else (MODEL_FILES / source.name).read_text())
                      + _marker_code(marker))
    if not (folder / "modeling_akshara.py").exists():
        shutil.copy(MODEL_FILES / "modeling_akshara.py", folder)
    _edit_json(folder, "config.json", model_type="akshara-evil", auto_map=OUR_AUTO_MAP)
    return "config.json"


def plant_modeling_file(folder, marker):
    (folder / "modeling_evil.py").write_text((MODEL_FILES / "modeling_akshara.py").read_text() + _marker_code(marker))
    if not (folder / "configuration_akshara.py").exists():
        shutil.copy(MODEL_FILES / "configuration_akshara.py", folder)
    auto_map = json.loads((folder / "config.json").read_text()).get("auto_map") or {}
    _edit_json(folder, "config.json", auto_map={**auto_map, "AutoModelForCausalLM": "modeling_evil.AksharaForCausalLM"})
    return "config.json"


def plant_tokenizer_class_module(folder, marker):
    _tokenizer_module(folder, marker)
    _edit_json(folder, "tokenizer_config.json", tokenizer_class="tok_evil.EvilTokenizer")
    return "tokenizer_config.json"


def plant_custom_generate(folder, marker):
    (folder / "custom_generate").mkdir()
    (folder / "custom_generate" / "generate.py").write_text(_marker_code(marker) + (
        "from transformers import GenerationMixin\n\n\ndef generate(model, *args, **kwargs):\n"
        "    return GenerationMixin.generate(model, *args, **kwargs)\n"))
    return "custom_generate/generate.py"


def plant_edited_configuration(folder, marker):
    """Only the file changes: commands that load with the installed classes never run it (and need not refuse);
    the steps that run a folder's own remote code (publish's check, the demo's reload) refuse it."""
    source = folder / "configuration_akshara.py"
    source.write_text(source.read_text() + _marker_code(marker))
    return "configuration_akshara.py"


REFUSED = {"tokenizer auto_map": plant_tokenizer_auto_map, "config under another model_type":
           plant_config_under_other_model_type, "modeling file": plant_modeling_file,
           "tokenizer_class module": plant_tokenizer_class_module, "custom generate": plant_custom_generate}
CASES = {**REFUSED, "edited configuration_akshara.py": plant_edited_configuration}


@pytest.fixture(scope="module")
def native_folder(converted_folder, tmp_path_factory):
    from akshara_hf.conversion.convert import export_native

    return export_native(converted_folder, tmp_path_factory.mktemp("native") / "native")


@pytest.fixture
def planted(converted_folder, native_folder, tmp_path):
    """planted(case, native=False, card=False) -> (folder, the file the error must name, marker path); `card`: a
    model card written before planting (publish wants one). Folder names are unique: transformers caches remote
    modules by folder name."""

    def make(case, native=False, card=False):
        folder = tmp_path / f"planted-{uuid.uuid4().hex[:8]}"
        shutil.copytree(native_folder if native else converted_folder, folder)
        if card:
            _card(folder)
        marker = tmp_path / f"ran-{folder.name}"
        named = CASES[case](folder, marker)
        return folder, folder / named, marker

    return make


def _recipe(tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps({"data": {"sources": [
        {"kind": "stories", "path": str(REPO / "data" / "samples" / "stories")}]}}))
    return path


def _card(folder):
    from model_card import write_model_card

    write_model_card(folder, repo_id="org/name", overwrite=True)


# command -> (argv maker, whether it reads only a tokenizer); each gets (folder, tmp_path, data)
COMMANDS = {
    "chat": lambda f, t, d: ["chat", f, "--prompt", "hi", "--max-new-tokens", "2"],
    "evaluate": lambda f, t, d: ["evaluate", f, "--data", d, "--tasks", ""],
    "export-native": lambda f, t, d: ["export-native", f, t / "out"],
    "export-nanochat": lambda f, t, d: ["export-nanochat", f, t / "out"],
    "serve": lambda f, t, d: ["serve", f, "--device", "cpu", "--port", str(_free_port())],
    "build-mixture": lambda f, t, d: ["build-mixture", _recipe(t), t / "out", "--tokenizer", f],
    "publish": lambda f, t, d: ["publish", f, "--repo-id", "org/name", "--dry-run"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "నమస్తే"}) + "\n")
    return path


def run_cli(argv, capsys):
    capsys.readouterr()
    code = cli.main([str(arg) for arg in argv])
    return code, capsys.readouterr().err


def _refused_in_one_line(code, err, command, named):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"akshara-hf {command}: error: "), err
    assert f"{named}: " in lines[0], err  # (build-mixture says first which flag named the folder)
    assert "--trust-remote-code" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("case", REFUSED)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_loading_command_refuses_planted_code(command, case, planted, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, named, marker = planted(case, card=command == "publish")
    code, err = run_cli(COMMANDS[command](folder, tmp_path, data), capsys)
    _refused_in_one_line(code, err, command, named)
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", [c for c in REFUSED if c != "config under another model_type"])
def test_import_native_refuses_planted_code(case, planted, tmp_path, capsys):
    folder, named, marker = planted(case, native=True)
    code, err = run_cli(["import-native", folder, tmp_path / "out"], capsys)
    _refused_in_one_line(code, err, "import-native", named)
    assert not marker.exists()


def test_training_refuses_planted_code_and_its_recipe_key_trusts_it(planted, tmp_path, capsys, monkeypatch):
    """The scripts' `trust_remote_code` (TRL's SFTConfig field, default false). With it, the run gets past loading
    (the tokenizer's code ran) and stops at the next check, a max_length beyond the model's positions."""
    from akshara_hf.training.run import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, named, marker = planted("tokenizer auto_map")
    for trust, expected in ((False, f"sft.py: error: {named}: "), (True, "sft.py: error: max_length 100000")):
        args = ["--config", str(REPO / "training" / "recipes" / "tiny-sft.yaml"), "--model_name_or_path", str(folder),
                "--output_dir", str(tmp_path / f"run-{trust}"), "--max_length", "100000",
                "--trust_remote_code", str(trust).lower()]
        monkeypatch.setattr(sys, "argv", ["sft.py", *args])
        capsys.readouterr()
        code = main(script="sft.py")
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "Traceback" not in err, err
        assert marker.exists() == trust and (trust or "pass trust_remote_code: true" in err)


def test_edited_model_files_are_never_run_by_commands_that_load_them(planted, data, tmp_path, capsys):
    """The installed Akshara classes answer for model_type akshara (transformers prefers a registered class from
    outside transformers to the folder's copy): the folder loads, its edited file never runs, flag or not."""
    folder, _, marker = planted("edited configuration_akshara.py")
    for argv in (COMMANDS["chat"](folder, tmp_path, data), COMMANDS["evaluate"](folder, tmp_path, data),
                 [*COMMANDS["chat"](folder, tmp_path, data), "--trust-remote-code"],
                 ["model-card", folder, "--repo-id", "org/name"]):
        code, err = run_cli(argv, capsys)
        assert code == 0, err
    assert not marker.exists()


@pytest.mark.parametrize("case", CASES)
def test_model_card_reads_config_as_data(case, planted, tmp_path, capsys):
    folder, _, marker = planted(case)
    code, err = run_cli(["model-card", folder, "--repo-id", "org/name", "--overwrite"], capsys)
    assert not marker.exists(), err
    assert code == 0 or "model_type 'akshara-evil' is not an Akshara/nanochat model" in err, err


@pytest.mark.parametrize("case", ["tokenizer auto_map", "config under another model_type", "custom generate"])
def test_trust_remote_code_runs_it(case, planted, capsys):
    """The flag works: the planted code runs (chat loads with trust_remote_code=True)."""
    folder, _, marker = planted(case)
    code, err = run_cli(["chat", folder, "--prompt", "hi", "--max-new-tokens", "2", "--trust-remote-code"], capsys)
    assert code == 0 and marker.exists(), err


def test_tokenizer_class_is_not_a_code_path_in_transformers(planted, capsys):
    """Refused by name, though transformers 5.23 resolves tokenizer_class only among its own classes (checked: the
    module never ran, before the rule either): with the flag the folder loads with transformers' fallback class."""
    folder, _, marker = planted("tokenizer_class module")
    code, err = run_cli(["chat", folder, "--prompt", "hi", "--max-new-tokens", "2", "--trust-remote-code"], capsys)
    assert code == 0 and not marker.exists(), err


@pytest.mark.parametrize("command", ["evaluate", "export-native", "export-nanochat", "build-mixture"])
def test_every_flag_reaches_the_loader(command, planted, data, tmp_path, capsys):
    folder, _, marker = planted("tokenizer auto_map")
    code, err = run_cli([*COMMANDS[command](folder, tmp_path, data), "--trust-remote-code"], capsys)
    assert code == 0 and marker.exists(), err


def test_serve_and_import_native_flags_reach_the_loader(planted, tmp_path, capsys):
    from akshara_hf.cli.serve import load_pinned

    folder, _, marker = planted("tokenizer auto_map")
    load_pinned(str(folder), device="cpu", trust_remote_code=True).shutdown()
    assert marker.exists()
    folder, _, marker = planted("tokenizer auto_map", native=True)
    code, err = run_cli(["import-native", folder, tmp_path / "out", "--trust-remote-code"], capsys)
    assert code == 0 and marker.exists(), err


@pytest.mark.parametrize("case", CASES)
def test_demo_reload_runs_only_its_own_code(case, planted):
    """The demo's reload step trusts remote code on purpose (a Hub user's view), limited to the package's own files."""
    from akshara_hf.cli.demo import pipeline_check
    from akshara_hf.errors import AksharaError

    folder, named, marker = planted(case)
    with pytest.raises(AksharaError) as refused:
        pipeline_check(folder)
    message = str(refused.value)
    assert message.startswith(f"{named}: ") and "the demo runs only the code it wrote itself" in message
    assert "\n" not in message and not marker.exists()


def test_demo_reload_works_on_a_folder_of_its_own(converted_folder, tmp_path):
    from akshara_hf.cli.demo import pipeline_check

    folder = shutil.copytree(converted_folder, tmp_path / f"own-{uuid.uuid4().hex[:8]}")
    assert pipeline_check(folder, "hi")["role"] == "assistant"


def test_publish_check_runs_foreign_code_only_with_the_flag(planted, capsys, monkeypatch):
    """publish's load check runs the folder's remote code in a process without this package: an edited model file
    is refused, and runs only with --trust-remote-code."""
    import model_card.publish as publish

    folder, named, marker = planted("edited configuration_akshara.py", card=True)
    code, err = run_cli(["publish", folder, "--repo-id", "org/name", "--dry-run"], capsys)
    assert code == 2 and err.startswith(f"akshara-hf publish: error: {named}: differs from the installed") and \
        err.count("\n") == 1 and not marker.exists(), err
    assert publish.check_loads(folder, trust_remote_code=True)["vocab_size"] == 300
    assert marker.exists()


def test_hub_repo_with_planted_code_is_refused(converted_folder, tmp_path):
    """A Hub id is checked on the files from_pretrained would fetch (here: an offline Hub cache)."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--someorg--evil" / "snapshots" / ("0" * 40)
    shutil.copytree(converted_folder, snapshot)
    (cache / "models--someorg--evil" / "refs").mkdir()
    (cache / "models--someorg--evil" / "refs" / "main").write_text("0" * 40)
    marker = tmp_path / "ran"
    plant_tokenizer_auto_map(snapshot, marker)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "mod")}
    result = subprocess.run([sys.executable, "-m", "akshara_hf.cli", "chat", "someorg/evil", "--prompt", "hi",
                             "--max-new-tokens", "2"], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 2 and not marker.exists(), result.stderr
    assert result.stderr.count("\n") == 1 and "tokenizer_config.json: auto_map" in result.stderr, result.stderr


def test_our_save_writes_what_the_rule_calls_ours(converted_folder, tmp_path):
    """OUR_AUTO_MAP is what an Akshara save writes (compared by name); a saved folder passes, its files included."""
    from akshara_hf import AksharaModel

    config = json.loads((converted_folder / "config.json").read_text())
    assert config["auto_map"].items() <= OUR_AUTO_MAP.items() and config["model_type"] == "akshara"
    check_folder_code(str(converted_folder), own_files=True)
    backbone = AksharaModel.from_pretrained(converted_folder)
    backbone.save_pretrained(tmp_path / "backbone")
    saved = json.loads((tmp_path / "backbone" / "config.json").read_text())["auto_map"]
    assert saved.items() <= OUR_AUTO_MAP.items() and "AutoModel" in saved
