"""Resolve a command's model argument (local folder or Hub id) and load it, failing with one line, never a traceback.

Every command that reads a model (`chat`, `evaluate`, `export-native`, `export-nanochat`, `import-native`) goes through
here, so a missing, mistyped or broken folder gets the same one-line error naming the file and field. A local-looking
argument that does not exist is reported at once: transformers would otherwise read it as a Hub repo id and retry the
Hub for ~30 s before a page of traceback about connectivity. `HF_HUB_OFFLINE` is no answer (it also stops real Hub
ids): the argument is a Hub id only when it is not an existing path, is a valid `ORG/NAME` repo id, and its `ORG` is
not a folder here (`runs/nope` with a `runs/` folder is a typo, not a Hub id).
"""

from __future__ import annotations

import json
from pathlib import Path

from akshara_hf.errors import AksharaError, one_line

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def is_hub_id(argument: str) -> bool:
    """`ORG/NAME` that is a valid Hub repo id and does not look like a local path (see the module docstring)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if argument.startswith((".", "~", "/")) or "\\" in argument or argument.count("/") != 1:
        return False
    try:
        validate_repo_id(argument)
    except HFValidationError:
        return False
    return not Path(argument.split("/")[0]).exists()


def read_json(path: str | Path):
    """A JSON file's value; AksharaError naming the file when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AksharaError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AksharaError(f"{path}: not valid JSON ({one_line(error)})") from None


def read_config_json(config: Path) -> dict:
    """A folder's config.json as a dict; AksharaError naming the file when it is missing or not a JSON object."""
    if not config.is_file():
        raise AksharaError(f"{config}: missing (not a model folder)")
    data = read_json(config)
    if not isinstance(data, dict):
        raise AksharaError(f"{config}: not a JSON object")
    return data


def resolve_model(argument: str | Path, tokenizer: bool = True) -> str:
    """A checked local model folder, or a Hub repo id; AksharaError (one line) for anything else."""
    argument = str(argument)
    path = Path(argument).expanduser()
    if not path.exists():
        if is_hub_id(argument):
            return argument
        head, slashes = argument.split("/")[0], argument.count("/")
        hint = ""
        if slashes == 0:
            hint = " (a Hub model is given as ORG/NAME)"
        elif slashes == 1 and not argument.startswith((".", "~", "/")) and Path(head).is_dir():
            hint = f" ({head}/ exists here, so this is not read as a Hub repo id)"
        raise AksharaError(f"{argument}: no such folder{hint}")
    if not path.is_dir():
        raise AksharaError(f"{argument}: is a file, not a model folder")
    read_config_json(path / "config.json")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise AksharaError(f"{path}: no weights ({WEIGHT_FILES[0]} missing)")
    if tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise AksharaError(f"{path}: no tokenizer ({TOKENIZER_FILES[0]} missing)")
    return str(path)


def _where(source: str, name: str) -> str:
    return str(Path(source) / name) if Path(source).is_dir() else source


def load_config(source: str, trust_remote_code: bool = True):
    """The folder's config; a bad value (AksharaConfig's validation raises ValueError) becomes one line naming it."""
    import akshara_hf.model.modeling_akshara  # noqa: F401  registers the Auto classes (the package's own code)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AksharaError(f"{_where(source, 'config.json')}: {one_line(error)}") from None


def load_model(source: str, trust_remote_code: bool = True, **kwargs):
    """`AutoModelForCausalLM.from_pretrained` with the config checked first and every load failure as one line."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    config = load_config(source, trust_remote_code)
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # "Loading weights" bars on stderr would bury the command's own output or error
    try:
        model, info = AutoModelForCausalLM.from_pretrained(source, config=config, trust_remote_code=trust_remote_code,
                                                           output_loading_info=True, **kwargs)
    except Exception as error:  # safetensors, torch and transformers raise many types for a broken or foreign file
        raise AksharaError(f"{source}: the weights do not load ({type(error).__name__}: {one_line(error)})") from None
    finally:
        if bars:
            logging.enable_progress_bar()
    # transformers only warns when weights and config disagree, leaving those parameters random: refuse instead
    problems = {"missing": info.get("missing_keys"), "unexpected": info.get("unexpected_keys"),
                "of another shape": [key for key, *_ in info.get("mismatched_keys") or []]}
    problems = {kind: sorted(keys) for kind, keys in problems.items() if keys}
    if problems:
        listed = "; ".join(f"{kind}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
                           for kind, keys in problems.items())
        raise AksharaError(f"{source}: the weights do not fit config.json ({config.model_type}): {listed}")
    return model


def load_tokenizer(source: str, trust_remote_code: bool = True):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as error:  # tokenizers raises its own exception types for a broken tokenizer.json
        raise AksharaError(f"{source}: the tokenizer does not load ({type(error).__name__}: {one_line(error)})") from None


def load_model_and_tokenizer(argument: str | Path, trust_remote_code: bool = True, **kwargs):
    """Resolve `argument`, then load both; everything that can go wrong is an AksharaError."""
    source = resolve_model(argument)
    return load_model(source, trust_remote_code, **kwargs), load_tokenizer(source, trust_remote_code)
