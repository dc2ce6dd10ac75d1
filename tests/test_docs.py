"""docs/ is where the project keeps the facts it relies on: the code's copies must agree with it, its links must
resolve, and nothing in the repository may point outside it (to a reference folder a clone does not have)."""

import re
import subprocess
from pathlib import Path

from akshara_hf.data.prompts import PARAPHRASE_PROMPTS, SUMMARY_PROMPTS
from model_card import SEED_RUNS

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
RUNS = (DOCS / "akshara-runs.md").read_text(encoding="utf-8")


def _numbered_list_after(heading: str) -> list[str]:
    after = RUNS.split(heading, 1)[1]
    items = []
    for line in after.splitlines()[1:]:
        match = re.match(r"^\d+\. (.*)$", line)
        if match:
            items.append(match.group(1))
        elif items and line.strip():
            break
    return items


def test_prompts_in_code_are_the_documented_ones_byte_for_byte():
    assert tuple(_numbered_list_after("Summary prompts")) == SUMMARY_PROMPTS
    assert tuple(_numbered_list_after("Paraphrase prompts")) == PARAPHRASE_PROMPTS


def _runs_table() -> dict[str, list[str]]:
    rows = {}
    for line in RUNS.split("## The runs", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| nanochat-telugu-d20"):
            rows[cells[0].split(" ")[0]] = cells
    return rows


def _number(text: str) -> float:
    return float(text.replace(",", "").split()[-1])


def test_seed_run_facts_match_the_documented_table():
    table = _runs_table()
    assert sorted(table) == sorted(SEED_RUNS)
    for run, cells in table.items():
        facts = SEED_RUNS[run]
        stage, _parent, _data, batch, steps, seconds, train, val, lrm = cells[1:]
        assert facts["stage"] == stage, run
        assert facts["device_batch_size"] == int(batch), run
        assert facts["num_steps"] == int(_number(steps)), run
        assert facts["train_time_seconds"] == _number(seconds), run
        assert facts["final_train_loss"] == _number(train), run
        key = "final_val_bpb" if val.startswith("bpb") else "final_val_loss"
        assert facts[key] == _number(val), run
        assert facts["final_lrm"] == _number(lrm), run


def test_docs_links_resolve():
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert (ROOT / target).is_file(), target


def test_nothing_in_the_repository_points_at_a_shared_reference_folder():
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".cfg", ".toml", ".yaml", ".yml", ".sh", ".txt", ".jinja") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if re.search(r"(?<![\w.])shared/(spec|seeds)\b", line):
                offenders.append(f"{name}:{number}")
    assert offenders == []
