"""The recipes and sample data the repository ships beside the code, found in a clone or in an installed wheel.

The repository keeps one copy of each file: `training/` (the scripts `sft.py` and `mid_train.py`, `recipes/*.yaml`,
`accelerate_configs/`) and `data/samples/`. The wheel carries both under `akshara_hf/_shipped/` with the same
relative layout (setup.cfg's `package_dir` maps them there), so a recipe's relative paths (`../../data/samples/...`)
resolve the same way from either place. A recipe is named by its file name without `.yaml` (`tiny-sft`).

Light on purpose (no torch, no transformers): `akshara-hf recipes` and the commands' `--help` import it.
"""

import os
from pathlib import Path

from akshara_hf.errors import AksharaError

_PACKAGE = Path(__file__).resolve().parents[1]
WHEEL_ROOT = _PACKAGE / "_shipped"  # in an installed wheel
CLONE_ROOT = _PACKAGE.parent  # the repository, for a clone or an editable install
SUFFIXES = (".yaml", ".yml")


def root() -> Path:
    """The folder holding `training/` and `data/samples/`: the wheel's copy if this is an installed wheel, else the
    repository this package was imported from."""
    for candidate in (WHEEL_ROOT, CLONE_ROOT):
        if (candidate / "training" / "recipes").is_dir():
            return candidate
    raise AksharaError(f"no recipes found beside the akshara_hf package ({_PACKAGE}): neither {WHEEL_ROOT} nor "
                       f"{CLONE_ROOT / 'training' / 'recipes'} exists (a broken installation?)")


def recipes_dir() -> Path:
    return root() / "training" / "recipes"


def training_script(name: str) -> Path:
    """`sft.py` or `mid_train.py`: the same script a clone runs with `python training/NAME`."""
    return root() / "training" / name


def recipe_names() -> list[str]:
    return sorted(path.stem for path in recipes_dir().iterdir() if path.suffix in SUFFIXES and path.is_file())


def packaged_recipe(name: str) -> Path | None:
    """The packaged recipe a bare name (`tiny-sft` or `tiny-sft.yaml`) means, if any."""
    if not name or os.sep in name or "/" in name or "\0" in name or name in (".", ".."):
        return None
    stem = name[: -len(suffix)] if (suffix := next((s for s in SUFFIXES if name.endswith(s)), "")) else name
    return next((path for path in (recipes_dir() / f"{stem}{s}" for s in SUFFIXES) if _is(path, Path.is_file)), None)


def _is(path: Path, test) -> bool:
    """`path.exists()` / `is_file()`, False for a name no file can have (a NUL byte, too long for the filesystem)."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False


def find_recipe(name: str | os.PathLike) -> Path:
    """A recipe file: `name` itself when that path exists, else the packaged recipe of that name (with or without
    `.yaml`). Anything else is one line naming the packaged recipes."""
    path = Path(name)
    if str(name).strip() and _is(path, Path.exists):  # Path("") is the current folder
        return path
    packaged = packaged_recipe(str(name))
    if packaged is not None:
        return packaged
    raise AksharaError(f"{name}: no such recipe file, and not a packaged recipe (packaged: "
                       f"{', '.join(recipe_names())}; `akshara-hf recipes` lists them)")


def describe(path: Path) -> tuple[str, str]:
    """(stage, first sentence of the recipe's leading comment without its `# NAME:`) for the listing."""
    import yaml

    text = path.read_text(encoding="utf-8")
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    first = " ".join(comment)
    if first.startswith(path.stem):
        first = first[len(path.stem):].lstrip(" :")
    first = first.split(". ")[0].rstrip(".")
    try:
        stage = str((yaml.safe_load(text) or {}).get("stage", "sft"))
    except (yaml.YAMLError, AttributeError):
        stage = "?"
    return stage, first


def copy_recipe(name: str, destination: str | os.PathLike) -> tuple[Path, list[str]]:
    """Write the packaged recipe `name` to `destination` (never over anything that exists) for editing. Relative
    paths in it that lead to shipped files (the tiny recipes' samples and tokenizer) become absolute, so the copy
    reads the same files from wherever it is put; the others (a seed recipe's `../../data/akshara/...`, for the
    user's own data) stay as written and are returned, to be edited."""
    source = packaged_recipe(name)
    if source is None:
        raise AksharaError(f"{name}: not a packaged recipe (packaged: {', '.join(recipe_names())})")
    destination = Path(destination)
    text = source.read_text(encoding="utf-8")
    replaced, left = _absolute_paths(source, text)
    if replaced:
        text = "".join(_replace_values(text, replaced))
        if _absolute_paths(source, text)[0]:  # a value the line pattern missed: never hand out a half-made copy
            raise AksharaError(f"{source}: could not make its relative paths absolute; copy the file by hand")
        text = (f"# Copied from akshara-hf's packaged recipe {source.stem}: relative paths to the shipped samples "
                f"were made absolute.\n{text}")
    if not _is(destination.parent, Path.is_dir):
        raise AksharaError(f"{destination}: folder {destination.parent} does not exist")
    try:
        with open(destination, "x", encoding="utf-8") as handle:  # "x": refuses anything there, a symlink included
            handle.write(text)
    except FileExistsError:
        raise AksharaError(f"{destination}: exists; refusing to overwrite it (choose another name)") from None
    except ValueError as error:  # a NUL byte in the name
        raise AksharaError(f"{destination!r}: not a file name ({error})") from None
    return destination, left


RELATIVE_KEYS = ("model_name_or_path", "tokenizer_name_or_path", "mixture_dir")  # recipe-relative when ./ or ../


def is_recipe_relative(value) -> bool:
    """A recipe's `./x` or `../x` value for a model, tokenizer or mixture folder is relative to the recipe file (like
    every `data:` path); a bare `runs/x` stays relative to the current folder (it could also be a Hub id)."""
    return isinstance(value, str) and value.replace(os.sep, "/").startswith(("./", "../"))


def _absolute_paths(recipe: Path, text: str) -> tuple[dict[str, str], list[str]]:
    """{relative path as written: absolute path} for the recipe's relative paths that exist, and those that do not."""
    import yaml

    from akshara_hf.data.mixture import parse_data_section

    document = yaml.safe_load(text)
    base = recipe.resolve().parent
    written = [document[key] for key in RELATIVE_KEYS if is_recipe_relative(document.get(key))]
    if isinstance(document.get("data"), dict):
        for spec in parse_data_section(document["data"], recipe, base).sources:
            written += [path for path in (spec.path, spec.validation_path)
                        if path and not os.path.isabs(path) and not spec.is_hub]
    replaced, left = {}, []
    for path in dict.fromkeys(written):
        target = os.path.normpath(base / path)
        if os.path.exists(target):
            replaced[path] = target
        else:
            left.append(path)
    return replaced, left


def _replace_values(text: str, replaced: dict[str, str]):
    """The recipe's lines with each relative path value (a whole YAML scalar: after `: `, before `,`, `}` or the
    line's end) replaced by its absolute path; comments and layout stay."""
    import re

    pattern = re.compile(r"(:\s*)(" + "|".join(map(re.escape, sorted(replaced, key=len, reverse=True)))
                         + r")(?=\s*(?:[,}]|#|$))")
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            yield line
            continue
        yield pattern.sub(lambda match: match.group(1) + _quoted(replaced[match.group(2)]), line)


def _quoted(path: str) -> str:
    """A YAML scalar for `path` (quoted: a Windows drive or odd characters must not change its meaning)."""
    import json

    return json.dumps(path)
