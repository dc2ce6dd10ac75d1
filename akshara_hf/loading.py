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

from akshara_hf.bounds import regular_tree
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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:  # RecursionError: nested too deeply
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
    regular_tree(path, depth=1)  # transformers opens the folder's files blindly: a named pipe would block forever
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

    local = Path(source).is_dir()
    if local:  # bounds before work: sizes, weight dtypes and the generation config, before anything is built
        check_folder_before_loading(Path(source))
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


FLOAT_HEADER_DTYPES = ("F64", "F32", "F16", "BF16")  # safetensors' names of the weight dtypes the model computes in


def check_folder_before_loading(folder: Path) -> None:
    """What `from_pretrained` would otherwise get wrong without a word or only after minutes: a config.json whose
    sizes cannot fit this machine (refused before the config object builds per-layer lists), non-float weights
    (int8 or fp8 tensors are cast to float silently), and a corrupt generation_config.json (replaced by defaults
    with only a log line)."""
    from akshara_hf.bounds import check_model_fits, dtype_bytes

    config_path = folder / "config.json"
    config = read_config_json(config_path)
    check_model_fits(config, str(config_path), bytes_per_parameter=dtype_bytes(config.get("dtype",
                                                                                         config.get("torch_dtype"))))
    _check_weight_dtypes(folder)
    if (folder / "generation_config.json").exists():
        check_generation_config(folder / "generation_config.json")


def _is_number(value, low: float, high: float = float("inf"), integer: bool = False) -> bool:
    kinds = (int,) if integer else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and low <= value <= high


def _is_token_ids(value) -> bool:
    return _is_number(value, 0, integer=True) or (isinstance(value, list) and bool(value)
                                                   and all(_is_number(v, 0, integer=True) for v in value))


# The sampling fields `GenerationConfig` takes as they are (temperature "abc" passes its validate()), checked here.
GENERATION_FIELDS = {
    "do_sample": lambda v: isinstance(v, bool), "temperature": lambda v: _is_number(v, 0),
    "top_k": lambda v: _is_number(v, 0, integer=True), "top_p": lambda v: _is_number(v, 0, 1) and v > 0,
    "max_new_tokens": lambda v: _is_number(v, 1, integer=True), "max_length": lambda v: _is_number(v, 1, integer=True),
    "bos_token_id": _is_token_ids, "eos_token_id": _is_token_ids, "pad_token_id": _is_token_ids,
}


def check_generation_config(path: Path) -> None:
    """A folder's generation_config.json loads as written or not at all: transformers' `from_pretrained` replaces a
    corrupt one by defaults (a log line only), so chat would sample with settings nobody chose."""
    from transformers import GenerationConfig

    data = read_json(path)
    if not isinstance(data, dict):
        raise AksharaError(f"{path}: not a JSON object")
    for key, valid in GENERATION_FIELDS.items():
        if data.get(key) is not None and not valid(data[key]):
            raise AksharaError(f"{path}: {key} {data[key]!r} is not a valid value")
    try:
        GenerationConfig.from_dict(data)
    except Exception as error:  # GenerationConfig raises ValueError/TypeError for values it checks itself
        raise AksharaError(f"{path}: {one_line(error)}") from None


def _check_weight_dtypes(folder: Path) -> None:
    """Every tensor in the folder's safetensors files is floating point (read from the headers, no tensor loaded)."""
    from safetensors import safe_open

    files = [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else []
    index = folder / "model.safetensors.index.json"
    if not files and index.is_file():
        data = read_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise AksharaError(f"{index}: no weight_map object")
        files = [folder / name for name in sorted(set(map(str, weight_map.values())))]
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as weights:
                dtypes = {name: weights.get_slice(name).get_dtype() for name in weights.keys()}
        except Exception:  # a damaged or missing file: from_pretrained reports it, one line (load_model)
            continue
        for name, dtype in dtypes.items():
            if dtype not in FLOAT_HEADER_DTYPES:
                raise AksharaError(f"{path}: {name} is {dtype}, not a floating-point weight "
                                   f"({', '.join(FLOAT_HEADER_DTYPES)}); quantized or integer weights would be cast "
                                   "to float without a word")


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
