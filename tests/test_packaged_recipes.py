"""Recipes from an installed package: the wheel carries training/ and data/samples/ (one copy in the repository),
`akshara-hf recipes` lists and copies them, `akshara-hf sft` / `mid-train` run them by name, and their relative
paths resolve where the wheel is installed. The last test builds the wheel, installs it into a bare folder and runs
a tiny recipe from a folder outside the repository with only that install on PYTHONPATH."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from akshara_hf.cli import main as cli_main
from akshara_hf.data.mixture import DataSection, read_recipe
from akshara_hf.errors import AksharaError
from akshara_hf.training import shipped

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "training" / "recipes"
NAMES = sorted(path.stem for path in RECIPES.glob("*.yaml"))
TINY = ["--max_steps", "1", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
        "--target_examples_per_step", "2", "--max_seq_len", "64", "--eval_tokens", "128", "--max_length", "128",
        "--disable_tqdm", "true", "--save_strategy", "no"]


def sources_of(recipe: Path) -> DataSection:
    return DataSection.from_mapping(read_recipe(recipe)["data"], recipe, recipe.resolve().parent)


# --- lookup -------------------------------------------------------------------------------------------------------


def test_a_clone_finds_its_own_recipes():
    assert shipped.root() == REPO and shipped.recipe_names() == NAMES
    assert shipped.training_script("sft.py") == REPO / "training" / "sft.py"


def test_find_recipe_file_first_then_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped.find_recipe("tiny-sft") == RECIPES / "tiny-sft.yaml"
    assert shipped.find_recipe("tiny-sft.yaml") == RECIPES / "tiny-sft.yaml"
    (tmp_path / "tiny-sft.yaml").write_text("stage: sft\n")
    assert shipped.find_recipe("tiny-sft.yaml") == Path("tiny-sft.yaml")  # a file here wins over the packaged one
    for bad in ("nope", "nope.yaml", "training/recipes/tiny-sft.yaml", "../tiny-sft", "", "tiny-sft.json", ".",
                "tiny\0sft", "tiny-sft\0.yaml", "x" * 5000, " ", "tiny-sft/"):
        if bad == ".":
            assert shipped.find_recipe(bad) == Path(".")  # exists: read_recipe says "is a folder"
            continue
        with pytest.raises(AksharaError) as error:
            shipped.find_recipe(bad)
        message = str(error.value)
        assert "\n" not in message and "not a packaged recipe" in message and "tiny-sft, tiny-sft-2026" in message


def test_recipe_relative_model_and_tokenizer_paths(tmp_path, monkeypatch):
    """`./x` / `../x` in a recipe are relative to the recipe; `runs/x` (maybe a Hub id) and flags to the cwd."""
    from akshara_hf.training.recipe import parse_config
    from akshara_hf.training.run import AksharaRunArguments

    folder = tmp_path / "recipes"
    folder.mkdir()
    recipe = folder / "r.yaml"
    recipe.write_text("stage: sft\nmodel_name_or_path: runs/parent\ntokenizer_name_or_path: ../tok\n"
                      "mixture_dir: ./mix\nuse_cpu: true\n")
    monkeypatch.chdir(REPO)
    _, run = parse_config(["--config", str(recipe)], AksharaRunArguments)
    assert (run.model_name_or_path, run.tokenizer_name_or_path, run.mixture_dir) == (
        "runs/parent", str(tmp_path / "tok"), str(folder / "mix"))
    _, run = parse_config(["--config", str(recipe), "--tokenizer_name_or_path", "../flag"], AksharaRunArguments)
    assert run.tokenizer_name_or_path == "../flag"
    _, run = parse_config(["--config", "tiny-base"], AksharaRunArguments)  # by name, from anywhere
    assert run.tokenizer_name_or_path == str(REPO / "data" / "samples" / "tokenizer")


# --- copy ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_copy_reads_the_same_files_from_anywhere(tmp_path, name):
    copy, left = shipped.copy_recipe(name, tmp_path / "mine.yaml")
    original, copied = read_recipe(RECIPES / f"{name}.yaml"), read_recipe(copy)
    assert {k: v for k, v in copied.items() if k not in ("data", "tokenizer_name_or_path")} == {
        k: v for k, v in original.items() if k not in ("data", "tokenizer_name_or_path")}
    before, after = sources_of(RECIPES / f"{name}.yaml"), sources_of(copy)
    for a, b in zip(before.sources, after.sources, strict=True):
        if os.path.exists(a.location):  # a shipped sample: the same file
            assert (b.location, b.validation_location, b.path) == (a.location, a.validation_location, a.location)
        elif a.is_hub:  # a Hub dataset: untouched
            assert (b.path, b.location) == (a.path, a.location)
        else:  # the user's own data (a seed recipe): left as written, and reported
            assert b.path == a.path and a.path in left
    assert (copied.get("tokenizer_name_or_path") is None) == (original.get("tokenizer_name_or_path") is None)
    if name.startswith("tiny-"):
        assert left == [] and copy.read_text().startswith("# Copied from akshara-hf's packaged recipe")
    else:
        assert left and "../../data/akshara/" in left[0]


def test_copy_never_overwrites(tmp_path, capsys):
    target = tmp_path / "mine.yaml"
    target.write_text("mine\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(tmp_path / "missing.yaml")  # a dangling link: writing through it would create the target
    for destination, fragment in ((target, "exists; refusing to overwrite"), (link, "exists; refusing to overwrite"),
                                  (tmp_path / "no" / "x.yaml", "does not exist"),
                                  (f"{tmp_path}/a\0b.yaml", "not a file name"), (tmp_path, "exists; refusing"),
                                  (tmp_path / ("x" * 300), "File name too long")):
        code = cli_main(["recipes", "tiny-sft", "--copy-to", str(destination)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
    assert target.read_text() == "mine\n" and not (tmp_path / "missing.yaml").exists()


def test_recipes_command(capsys, tmp_path):
    assert cli_main(["recipes"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == NAMES and "tiny-base                                       base" in out
    assert cli_main(["recipes", "tiny-mid"]) == 0 and capsys.readouterr().out.strip() == str(RECIPES / "tiny-mid.yaml")
    for argv in (["recipes", "nope"], ["recipes", "--copy-to", str(tmp_path / "x.yaml")],
                 ["recipes", "../training/recipes/tiny-sft"]):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("akshara-hf recipes: error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.yaml").exists()


def test_training_commands_refuse_bad_names_and_other_commands_unknown_flags(capsys):
    assert cli_main(["sft", "--config", "nope", "--max_steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("akshara-hf sft: error: nope: no such recipe file, and not a packaged recipe (packaged: ")
    assert "tiny-sft" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as done:  # only sft / mid-train pass unknown flags on (to the recipe)
        cli_main(["recipes", "--max_steps", "1"])
    assert done.value.code == 2 and "unrecognized arguments: --max_steps" in capsys.readouterr().err
    assert cli_main(["sft", "--conf", "tiny-sft"]) == 2  # no abbreviation, of --config either
    err = capsys.readouterr().err
    assert err.strip() == "sft.py: error: unrecognized arguments: --conf tiny-sft (see --help)"


def test_a_stage_mismatch_is_the_scripts_one_line(capsys):
    assert cli_main(["mid-train", "--config", "tiny-sft"]) == 2
    err = capsys.readouterr().err
    assert "mid_train.py: error: stage 'sft': mid_train.py runs stage mid or base" in err
    assert len(err.strip().splitlines()) == 1


# --- the wheel ----------------------------------------------------------------------------------------------------


def _build_and_install(tmp: Path) -> tuple[Path, Path]:
    """The wheel, built from a copy of the repository's layout (no build/ or egg-info left in the tree), and a bare
    folder it is installed into."""
    source = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "runs", "*.egg-info", "build", "dist")
    for name in ("akshara_hf", "model_card", "training", "data/samples"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    # As `python -m build` does: the sdist first (it must carry the mapped folders), then the wheel from it.
    sdist_code = f"from setuptools import build_meta; build_meta.build_sdist({str(tmp / 'sdist')!r})"
    subprocess.run([sys.executable, "-c", sdist_code], cwd=source, check=True, capture_output=True, timeout=300)
    sdist = next((tmp / "sdist").glob("akshara_hf-*.tar.gz"))
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(sdist)],
                   check=True, capture_output=True, timeout=300, env=env)
    wheel = next((tmp / "dist").glob("akshara_hf-*.whl"))
    # --target: a folder of its own (pip never touches the environment's installation with it)
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)],
                   check=True, capture_output=True, timeout=300, env=env)
    return wheel, tmp / "site"


@pytest.mark.slow  # ~30 s quiet: builds and installs the wheel
def test_the_installed_wheel_runs_packaged_recipes(tmp_path):
    wheel, site = _build_and_install(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_files = {f"akshara_hf/_shipped/{path.relative_to(REPO).as_posix()}"
                     for folder in ("training/recipes", "training/accelerate_configs", "data/samples")
                     for path in (REPO / folder).rglob("*")
                     if path.is_file() and "broken" not in path.parts and "__pycache__" not in path.parts}
    shipped_files |= {"akshara_hf/_shipped/training/sft.py", "akshara_hf/_shipped/training/mid_train.py"}
    assert shipped_files <= names, sorted(shipped_files - names)
    assert not any("/broken/" in name for name in names)
    packages = {path.parent.relative_to(REPO).as_posix() for package in ("akshara_hf", "model_card")
                for path in (REPO / package).rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in packages} <= names  # setup.cfg lists every package

    work = tmp_path / "elsewhere"  # outside the repository; the only akshara_hf on the path is the installed one
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}

    def cli(*argv, code=0):
        result = subprocess.run([sys.executable, "-m", "akshara_hf.cli", *argv], cwd=work, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == code, f"{argv}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    where = subprocess.run([sys.executable, "-c", "import akshara_hf, model_card\nfrom akshara_hf.training import "
                            "shipped\nprint(akshara_hf.__file__, model_card.__file__, shipped.recipes_dir())"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.split() == [str(site / "akshara_hf" / "__init__.py"), str(site / "model_card" / "__init__.py"),
                                    str(site / "akshara_hf" / "_shipped" / "training" / "recipes")], where.stderr

    listing = cli("recipes").stdout
    script = subprocess.run([str(site / "bin" / "akshara-hf"), "recipes"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=60)  # the console script pip wrote from the wheel's entry points
    assert script.returncode == 0 and script.stdout == listing, script.stderr[-2000:]
    assert [line.split()[0] for line in listing.splitlines() if line.startswith("  ")] == NAMES
    bad = cli("sft", "--config", "tiny-sfd", code=2).stderr.strip().splitlines()
    assert len(bad) == 1 and "not a packaged recipe (packaged: nanochat-telugu-d20-mid-smoltalk-100k" in bad[0]

    # A copy made to edit, and every tiny recipe by name: each path resolves inside the installed package (the data:
    # section as the runner parses it; the run below goes through the whole parser, tiny-base's recipe-relative
    # tokenizer included).
    assert cli("recipes", "tiny-sft", "--copy-to", "my-sft.yaml").stdout.strip() == "my-sft.yaml"
    assert "exists; refusing" in cli("recipes", "tiny-sft", "--copy-to", "my-sft.yaml", code=2).stderr
    check = ("import json, os, sys\nfrom akshara_hf.data.mixture import DataSection, read_recipe\n"
             "from akshara_hf.training.shipped import find_recipe\nout = {}\n"
             f"for name in {[n for n in NAMES if n.startswith('tiny-')] + ['my-sft.yaml']!r}:\n"
             "    recipe = find_recipe(name)\n"
             "    data = DataSection.from_mapping(read_recipe(recipe)['data'], recipe, recipe.resolve().parent)\n"
             "    paths = [p for s in data.sources for p in (s.location, s.validation_location) if p]\n"
             "    out[name] = [(p, os.path.exists(p)) for p in paths]\n"
             "print(json.dumps(out), sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    parsed = subprocess.run([sys.executable, "-c", check], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    resolved, heavy = parsed.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    resolved = json.loads(resolved)
    samples = str(site / "akshara_hf" / "_shipped" / "data" / "samples")
    for name, paths in resolved.items():
        assert paths and all(exists and path.startswith(samples) for path, exists in paths), (name, paths)
    assert resolved["my-sft.yaml"] == resolved["tiny-sft"] and heavy == "[]"  # and no torch to read recipes

    # A real run by name (the base stage: a new tiny model, no parent needed), then the SFT script's own check.
    base = cli("mid-train", "--config", "tiny-base", *TINY, "--output_dir", "runs/base")
    assert base.stdout.strip().splitlines()[-1] == "runs/base"
    facts = json.loads((work / "runs" / "base" / "run_facts.json").read_text())
    assert (facts["stage"], facts["num_steps"]) == ("base", 1) and len(facts["data_sources"]) == 7
    for name in ("model.safetensors", "tokenizer.json", "README.md"):  # README.md: training/*.py's card writer ran
        assert (work / "runs" / "base" / name).is_file()
    wrong = cli("sft", "--config", "tiny-base", code=2).stderr.strip().splitlines()
    assert wrong == ["sft.py: error: stage 'base': sft.py runs stage sft; run this recipe with training/mid_train.py "
                     "(akshara-hf mid-train)"]
