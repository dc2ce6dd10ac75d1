"""Run the code blocks of a markdown file as written: every ```bash and ```python block, in order, in one bash session
(tests/test_readme.py runs README.md and a rendered model card with it). The rules, repeated in README.md ("Tests"):

- A fence is ```bash (or sh, shell), ```python, or ```text (output: shown, not run); any other or no language is an
  error, and so is a fence left open or indented.
- A block whose first line is `# GPU only` runs only where torch sees a CUDA device; one whose first line is
  `# vLLM environment` only where vLLM's CPU build is installed (`Session.vllm_site`: the environment
  `scripts/test_vllm.sh` builds, which needs the network); elsewhere each is reported as not run (`Session.not_run`).
- Placeholders are written `<NAME>` and replaced from `PLACEHOLDERS`; any other `<NAME>` is an error.
- Port 8000 (`--port 8000`, `:8000`) becomes a free port: on a shared machine 8000 may be taken.
- A line that starts a server (`akshara-hf serve`, `transformers serve`, vLLM's) runs in the background; the block goes on
  once the server answers `/health`, and the server is stopped at the block's end.
- `bash scripts/test.sh` gets `--collect-only -q`: the suite that runs this test does not run itself again.
- `python -m venv DIR` is followed by two lines that make DIR see the test's own installed packages (a .pth file;
  in a vLLM block, the vLLM environment's, and there `pip install` runs with PIP_NO_DEPS=1: that environment lacks
  the torchvision/torchaudio/torchcodec vLLM depends on, which the block removes anyway)
  and build with its setuptools (DIR's bundled one removed): with `PIP_NO_INDEX` and build isolation off, every
  `pip install` then finds its requirements installed and never needs the network.

Everything else runs verbatim: bash blocks as the session's own lines (a `cd` or an activated environment carries
on to the next block, as in a terminal), python blocks as `python - < block.py` (like a pasted script: the current
folder comes first on `sys.path`). The session stops at the first failing command and names its block.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

# Placeholder -> what the test writes instead. README.md shows this table ("Tests"); tests/test_readme.py checks they
# agree.
PLACEHOLDERS = {
    "HF_USER": "akshara-readme-test",  # a Hub user or organisation name (model-card / publish --dry-run only)
}
# Placeholders whose value the test makes (a path): name -> what README.md's table says it is.
MADE_BY_THE_TEST = {
    "NANOCHAT_BASE": "a tiny nanochat 2026 base dir the test makes",
}
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "text": None}
NEEDS = {"GPU": re.compile(r"#\s*GPU only\b"), "vLLM": re.compile(r"#\s*vLLM environment\b")}
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")
FENCE = re.compile(r"^(\s*)(`{3,})(.*)$")
SERVER = re.compile(r"^\s*(\w+=\S+\s+)*(akshara-hf\s+serve|transformers\s+serve|vllm\s+serve|"
                    r"python3?\s+-m\s+vllm\.entrypoints\.openai\.api_server)\b")
TEST_COMMAND = re.compile(r"^(\s*)bash scripts/test\.sh\b(.*)$")
VENV = re.compile(r"\bpython3? -m venv ([^\s;&|]+)")


class BlockError(ValueError):
    """A markdown file the runner refuses (named file and line)."""


@dataclass
class Block:
    where: str  # "README.md:74": the file and the line of the opening fence
    language: str  # "bash" or "python"
    code: str
    needs: str | None  # "GPU", "vLLM" (the first line's marker) or None

    @property
    def gpu_only(self) -> bool:
        return self.needs == "GPU"


def blocks(text: str, name: str) -> list[Block]:
    """The runnable blocks of a markdown text, in order (```text blocks are left out)."""
    found, lines, number = [], text.splitlines(), 0
    while number < len(lines):
        match = FENCE.match(lines[number])
        number += 1
        if not match:
            continue
        indent, ticks, info = match.groups()
        where = f"{name}:{number}"
        if indent:
            raise BlockError(f"{where}: an indented fence (write code blocks at the start of the line)")
        language = info.strip().split(" ")[0] if info.strip() else ""
        if language not in LANGUAGES:
            raise BlockError(f"{where}: a code block needs a language: bash, python or text (output), not {language!r}")
        body = []
        while number < len(lines) and lines[number].rstrip() != ticks:
            body.append(lines[number])
            number += 1
        if number == len(lines):
            raise BlockError(f"{where}: the code block is never closed")
        number += 1
        if LANGUAGES[language] is None:
            continue
        code = "\n".join(body) + "\n"
        needs = next((name for name, marker in NEEDS.items() if body and marker.match(body[0].strip())), None)
        found.append(Block(where, LANGUAGES[language], code, needs))
    return found


def substitute(code: str, where: str, port: int, made: dict | None = None) -> str:
    """The documented replacements: placeholders from PLACEHOLDERS (and `made`, the values of MADE_BY_THE_TEST),
    port 8000 by `port`."""
    table = {**PLACEHOLDERS, **(made or {})}
    unknown = sorted({name for name in PLACEHOLDER.findall(code) if name not in table})
    if unknown:
        raise BlockError(f"{where}: placeholder(s) {', '.join(f'<{n}>' for n in unknown)} not in the table of "
                         "tests/readme_blocks.py PLACEHOLDERS (and README.md's)")
    code = PLACEHOLDER.sub(lambda m: table[m.group(1)], code)
    return re.sub(r"(--port[ =]|:)8000\b", lambda m: f"{m.group(1)}{port}", code)


def _logical_lines(code: str) -> list[str]:
    """Lines with backslash continuations joined (a server command may span several)."""
    joined, current = [], ""
    for line in code.splitlines():
        current += line
        if line.endswith("\\"):
            current += "\n"
            continue
        joined.append(current)
        current = ""
    if current:
        joined.append(current)
    return joined


def _without_comment(line: str) -> str:
    return "" if line.lstrip().startswith("#") else line.split(" #")[0].rstrip()


def bash_lines(code: str, outer_site: list[str], vllm: bool = False) -> str:
    """A bash block as the session runs it: servers in the background, the test command collecting only, a new
    virtual environment pointed at the test's packages, and a failure inside an `a && b` line stopping the session
    (bash's `set -e` ignores it). A block with a here-document is run unchanged from that line on."""
    out, servers, verbatim = [], False, False
    for line in _logical_lines(code):
        command = _without_comment(line)
        verbatim = verbatim or "<<" in command
        if verbatim:
            out.append(line)
        elif SERVER.match(command) and not command.endswith("&"):
            port = re.search(r"--port[ =](\d+)", command)
            out += [f"{command} &", f"_readme_wait_for_server $! {port.group(1) if port else 8000}"]
            servers = True
        elif vllm and re.match(r"^\s*pip install\b", command):  # see the module docstring
            out.append(f"PIP_NO_DEPS=1 {line}")
        elif TEST_COMMAND.match(command):
            out.append(f"{command} --collect-only -q")
        elif "&&" in command and not command.endswith(("&&", "|", "\\")):
            out.append(f"{command} || _readme_failed_list")
        else:
            out.append(line)
        venv = VENV.search(command)
        if venv and not verbatim:  # right after the line that makes it (and may activate it)
            out.append(_point_venv_at(venv.group(1), outer_site))
    if servers:
        out.append("_readme_stop_servers")
    return "\n".join(out) + "\n"


def _point_venv_at(folder: str, outer_site: list[str]) -> str:
    python = f"{folder}/bin/python"
    site = f'$({python} -c "import sysconfig; print(sysconfig.get_paths()[\'purelib\'])")'
    paths = "\\n".join(outer_site)
    return (f"{python} -m pip uninstall --yes --quiet setuptools 2>/dev/null || true; "
            f"printf '{paths}\\n' > \"{site}/zz-readme-test-packages.pth\"")


PROLOGUE = r"""
set -eo pipefail
_readme_block=start
trap 'echo "readme-test: FAILED in $_readme_block (exit status $?)" >&2' ERR
_readme_failed_list() { echo "readme-test: FAILED in $_readme_block (a command of an && list)" >&2; exit 1; }
_readme_servers=()
_readme_wait_for_server() {  # pid port: until the server answers /health, or dies, or 10 minutes pass
  local pid=$1 port=$2 tries=0
  _readme_servers+=("$pid")
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "readme-test: the server of $_readme_block exited" >&2; return 1; fi
    tries=$((tries + 1)); if [ $tries -gt 600 ]; then echo "readme-test: no answer on port $port" >&2; return 1; fi
    sleep 1
  done
}
_readme_stop_servers() {
  for pid in "${_readme_servers[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  _readme_servers=()
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outer_site_packages() -> list[str]:
    """The folders this Python installs packages into (what a test's new virtual environment is pointed at)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


@dataclass
class Session:
    """A script of blocks, and after `run`: its exit status, its log, and the GPU-only blocks left out."""

    scratch: Path
    blocks: list[Block]
    gpu: bool
    prologue: str = ""
    vllm_venv: str | None = None  # a virtual environment with vLLM's CPU build (scripts/test_vllm.sh's), if any
    vllm_site: list[str] | None = None  # its site-packages
    made: dict = field(default_factory=dict)  # MADE_BY_THE_TEST name -> value
    not_run: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    returncode: int | None = None
    log: str = ""

    def script(self) -> str:
        self.scratch.mkdir(parents=True, exist_ok=True)
        parts, outer = [PROLOGUE, self.prologue], outer_site_packages()
        missing = {"GPU": None if self.gpu else "GPU only, not run: this machine has no GPU",
                   "vLLM": None if self.vllm_site else "vLLM environment, not run: vLLM's CPU build is not installed "
                                                       "here (bash scripts/test_vllm.sh builds it)"}
        for index, block in enumerate(self.blocks):
            header = f"{block.where} ({block.language}{', ' + block.needs if block.needs else ''})"
            if block.needs and missing[block.needs]:
                self.not_run.append(f"{block.where}: {missing[block.needs]}")
                parts.append(f"echo; echo {shlex.quote('=== ' + header + ': not run')}")
                continue
            self.ran.append(block.where)
            code = substitute(block.code, block.where, free_port(), self.made)
            # a header on a line of its own, even after output without a final newline (curl's)
            parts.append(f"_readme_block={shlex.quote(block.where)}; echo; echo {shlex.quote('=== ' + header)}")
            if block.language == "python":
                path = self.scratch / f"block-{index:02d}.py"
                path.write_text(code, encoding="utf-8")
                parts.append(f"python - < {shlex.quote(str(path))}")
            elif block.needs == "vLLM" and not VENV.search(code):  # a block that expects vLLM installed: in its
                venv = shlex.quote(f"{self.vllm_venv}/bin/activate")  # environment, then back to the session's
                parts.append(f"(\n. {venv}\n{bash_lines(code, outer)})")
            else:
                vllm = block.needs == "vLLM"
                parts.append(bash_lines(code, self.vllm_site if vllm else outer, vllm))
        parts.append("echo; echo '=== all blocks ran'")
        return "\n".join(parts) + "\n"

    def run(self, cwd: Path, env: dict, timeout: float) -> "Session":
        script = self.scratch / "session.sh"
        script.write_text(self.script(), encoding="utf-8")
        log = self.scratch / "session.log"
        with open(log, "w", encoding="utf-8") as out:
            process = subprocess.Popen(["bash", str(script)], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self.returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.returncode = -1
                out.write(f"\nreadme-test: the session ran past {timeout:.0f} s\n")
            finally:  # its own process group: servers and stragglers of a failed block go with it
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                process.wait()
        self.log = log.read_text(encoding="utf-8", errors="replace")
        return self

    def failure(self) -> str:
        """The end of the log, for an assertion message."""
        return f"session exit status {self.returncode}; log {self.scratch / 'session.log'}:\n{self.log[-6000:]}"


def session_environment(home: Path, **extra: str) -> dict:
    """A newcomer's shell, offline: this Python first on PATH, no PYTHONPATH, a HOME of its own, pip that never asks
    an index and never installs outside a virtual environment, Hugging Face offline."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH" and not key.startswith("PIP_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(home),
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",  # pip's spelling of "off" for this flag
        PIP_REQUIRE_VIRTUALENV="1",  # a block that failed to activate its environment cannot install here
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(home / "hf"),
        TQDM_DISABLE="1",
        **extra,
    )
    return env
