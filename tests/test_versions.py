"""The versions the package claims to work with are the ones tested: setup.cfg's lower bounds equal the pins that
scripts/test_vllm.sh installs and tests (scripts/lowest-versions.txt), and the remote code runs at the installed ones."""

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lower_bounds() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    bounds = {}
    for line in config["options"]["install_requires"].splitlines():
        match = re.fullmatch(r"\s*(transformers|trl)>=([\d.]+),<(\d+)\s*", line)
        if match:
            bounds[match[1]] = match[2]
            assert int(match[3]) == int(match[2].split(".")[0]) + 1, f"{line}: up to the next major"
    return bounds


def test_setup_cfg_lower_bounds_are_the_tested_lowest_versions():
    pins = dict(line.split("==") for line in (ROOT / "scripts" / "lowest-versions.txt").read_text().splitlines()
                if line and not line.startswith("#"))  # fmt: skip
    assert lower_bounds() == pins == {"transformers": pins["transformers"], "trl": pins["trl"]}
    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    from akshara_hf.cli.serve import SERVING_API_BELOW

    for name in ("test", "serve"):  # capped where transformers' serving code changed (`serve` checks it too)
        expected = f"transformers[serving]>={pins['transformers']},<{SERVING_API_BELOW}"
        assert expected in extras["options.extras_require"][name]


def test_ci_runs_the_lowest_version_environment_after_the_main_suite():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("scripts/test.sh") < ci.index("scripts/test_vllm.sh")
    script = (ROOT / "scripts" / "test_vllm.sh").read_text()
    assert "-c scripts/lowest-versions.txt" in script and "tests/test_vllm.py" in script


def test_the_main_suite_runs_the_newest_tested_versions_inside_the_range():
    from packaging.version import Version

    pins = dict(line.split("==") for line in (ROOT / "scripts" / "newest-tested-versions.txt").read_text().splitlines()
                if line and not line.startswith("#"))  # fmt: skip
    low = lower_bounds()
    assert set(pins) == set(low)
    for name, version in pins.items():
        assert Version(low[name]) <= Version(version) < Version(f"{Version(low[name]).major + 1}")
    from akshara_hf.cli.serve import SERVING_API_BELOW

    assert Version(pins["transformers"]) < Version(SERVING_API_BELOW)  # the suite tests the server it ships
    assert "-c scripts/newest-tested-versions.txt" in (ROOT / "scripts" / "test.sh").read_text()
