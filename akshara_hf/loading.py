"""Resolve a command's model argument (local folder or Hub id) and load it, failing with one line, never a traceback.

Every command that reads a model (`chat`, `evaluate`, `export-native`, `export-nanochat`, `import-native`) goes through
here, so a missing, mistyped or broken folder gets the same one-line error naming the file and field. A local-looking
argument that does not exist is reported at once: transformers would otherwise read it as a Hub repo id and retry the
Hub for ~30 s before a page of traceback about connectivity. `HF_HUB_OFFLINE` is no answer (it also stops real Hub
ids): the argument is a Hub id only when it is not an existing path, is a valid `ORG/NAME` repo id, and its `ORG` is
not a folder here (`runs/nope` with a `runs/` folder is a typo, not a Hub id).

The trust rule: nothing here runs Python from a model folder or Hub repo unless the caller passes
`trust_remote_code=True` (the commands' `--trust-remote-code`). Akshara folders need no remote code with this package
installed: its classes are registered with the Auto classes, and transformers prefers a registered class that lives
outside transformers over the folder's copy. `check_folder_code` refuses, in one line naming the file, anything that
would make transformers reach for the folder's own code: an `auto_map` (config.json, tokenizer_config.json,
processor/preprocessor configs) naming other classes than the Akshara entries our save writes, or ours under another
`model_type`; a `tokenizer_class` that is not a plain class name; a `custom_generate/generate.py`. The check compares
names only and never imports the folder's files. Loading then passes `trust_remote_code=False`, so transformers
itself refuses whatever the check did not foresee, and never asks "run custom code? [y/N]" on a terminal.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from akshara_hf.bounds import regular_file, regular_tree
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


class _KeyTwice(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    """A JSON object whose keys are all different: `json` keeps the last of a key given twice without a word."""
    data = dict(pairs)
    if len(data) < len(pairs):
        seen = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _KeyTwice(f"key {twice!r} given twice")
    return data


def read_json(path: str | Path):
    """A JSON file's value; AksharaError naming the file when it is missing, not a regular file (a named pipe would
    block the read forever: `model-card --facts FIFO` did) or not JSON."""
    try:
        return json.loads(regular_file(path).read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise AksharaError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise AksharaError(f"{path}: not UTF-8 text (JSON is)") from None
    except (json.JSONDecodeError, _KeyTwice, RecursionError) as error:  # RecursionError: nested too deeply
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


def source_file(source: str, name: str) -> str:
    """How errors name a model's file: the path in a local folder, else the Hub id."""
    return str(Path(source) / name) if Path(source).is_dir() else source


TRUST_FLAG = "--trust-remote-code"  # how commands spell the opt-in; the training scripts pass their recipe key's
# The auto_map entries an Akshara save writes (model/*: `register_for_auto_class`), compared by what they name.
OUR_AUTO_MAP = {"AutoConfig": "configuration_akshara.AksharaConfig", "AutoModel": "modeling_akshara.AksharaModel",
                "AutoModelForCausalLM": "modeling_akshara.AksharaForCausalLM"}
OUR_MODEL_TYPE = "akshara"
# Files whose auto_map (or tokenizer_class) makes transformers import code from the folder.
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
CUSTOM_GENERATE = "custom_generate/generate.py"  # from_pretrained(trust_remote_code=True) replaces generate with it


def add_trust_flag(parser) -> None:
    """The one opt-in, spelled the same by every command that loads a model (argparse, no heavy import)."""
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow Python code shipped in the model folder or Hub repo (auto_map, custom tokenizer "
                             "or generate) to run; off by default: Akshara folders load with this package's classes")


def _model_file(source: str, name: str) -> Path | None:
    """The folder's file, or the Hub repo's (fetched into the Hub cache, as from_pretrained fetches it); None if absent."""
    if Path(source).is_dir():
        path = Path(source) / name
        return path if path.is_file() else None
    if not is_hub_id(source):  # a missing path: the load reports it
        return None
    from transformers.utils.hub import cached_file

    try:
        found = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):  # an unreachable or unknown repo: the load itself reports it
        return None
    return Path(found) if found else None


def check_folder_code(source: str, flag: str = TRUST_FLAG, own_files: bool = False, hint: str | None = None) -> None:
    """Refuse (one line naming the file) a model folder or Hub repo that would have transformers run its own Python.

    Names are compared, nothing is imported (see the module docstring). `own_files`: also require the Python files
    the Akshara auto_map names to be byte for byte the installed package's, for the checks that deliberately load a
    folder with its remote code in a process without this package (publish, demo). `hint`: what the error suggests
    (default: the flag)."""
    hint = hint or f"akshara-hf runs no Python from a model folder unless you pass {flag} (read that code first)"

    def refuse(path, what: str) -> AksharaError:
        return AksharaError(f"{path}: {what}; {hint}")

    for name in CODE_CONFIGS:
        path = _model_file(source, name)
        if path is None:
            continue
        data = read_json(path)
        if not isinstance(data, dict):
            raise AksharaError(f"{path}: not a JSON object")
        auto_map = data.get("auto_map")
        if auto_map is not None:
            if name != "config.json" or not isinstance(auto_map, dict):
                raise refuse(path, f"auto_map {json.dumps(auto_map)} names Python code in the model folder")
            foreign = {key: value for key, value in auto_map.items() if OUR_AUTO_MAP.get(key) != value}
            if foreign:
                raise refuse(path, f"auto_map names code other than Akshara's: {json.dumps(foreign)}")
            if auto_map and data.get("model_type") != OUR_MODEL_TYPE:
                raise refuse(path, f"auto_map names Akshara's classes but model_type is {data.get('model_type')!r}, "
                                   "so transformers would import the folder's copies of them")
        tokenizer_class = data.get("tokenizer_class")
        if tokenizer_class is not None and not (isinstance(tokenizer_class, str) and tokenizer_class.isidentifier()):
            raise refuse(path, f"tokenizer_class {tokenizer_class!r} is not a class name but names code (a module)")
    if Path(source).is_dir() and (Path(source) / CUSTOM_GENERATE).exists():
        raise refuse(Path(source) / CUSTOM_GENERATE, "a custom generate function that would replace model.generate")
    if own_files:
        _check_own_files(source, hint)


def _check_own_files(source: str, hint: str) -> None:
    installed = Path(__file__).parent / "model"
    config = Path(source) / "config.json"
    auto_map = read_config_json(config).get("auto_map") or {}
    for module in sorted({reference.split(".")[0] for reference in auto_map.values()}):
        path = Path(source) / f"{module}.py"
        if not path.is_file():
            raise AksharaError(f"{config}: auto_map names {module}.py, which is not in the folder")
        if path.read_bytes() != (installed / path.name).read_bytes():
            raise AksharaError(f"{path}: differs from the installed akshara-hf's {path.name} (edited, or written by "
                               f"another version), and this step would run it; {hint}")


def load_config(source: str, trust_remote_code: bool = False, flag: str = TRUST_FLAG):
    """The folder's config; a bad value (AksharaConfig's validation raises ValueError) becomes one line naming it."""
    import akshara_hf.model.modeling_akshara  # noqa: F401  registers the Auto classes (the package's own code)
    from transformers import AutoConfig

    if not trust_remote_code:
        check_folder_code(source, flag)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AksharaError(f"{source_file(source, 'config.json')}: {one_line(error)}") from None


@contextmanager
def _quiet_transformers():
    """No progress bars and no multi-line load report ("LOAD REPORT", a table on stderr) while loading: they would
    bury the command's own output, or come before the one-line error that says the same."""
    from transformers.utils import logging

    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def load_model(source: str, trust_remote_code: bool = False, flag: str = TRUST_FLAG, **kwargs):
    """`AutoModelForCausalLM.from_pretrained` with the config checked first and every load failure as one line."""
    from transformers import AutoModelForCausalLM

    if Path(source).is_dir():  # bounds before work: sizes, weight dtypes, generation config
        check_folder_before_loading(Path(source))
    config = load_config(source, trust_remote_code, flag)
    kwargs.setdefault("ignore_mismatched_sizes", True)  # so a wrong shape reaches the refusal below, by name
    try:
        with _quiet_transformers():
            model, info = AutoModelForCausalLM.from_pretrained(source, config=config, output_loading_info=True,
                                                               trust_remote_code=trust_remote_code, **kwargs)
    except Exception as error:  # safetensors, torch and transformers raise many types for a broken or foreign file
        raise AksharaError(f"{source}: the weights do not load ({type(error).__name__}: {one_line(error)})") from None
    # transformers only warns when weights and config disagree, leaving those parameters random: refuse instead
    problems = {"missing": info.get("missing_keys"), "unexpected": info.get("unexpected_keys"),
                "of another shape": [key for key, *_ in info.get("mismatched_keys") or []]}
    problems = {kind: sorted(keys) for kind, keys in problems.items() if keys}
    if problems:
        listed = "; ".join(f"{kind}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
                           for kind, keys in problems.items())
        raise AksharaError(f"{source}: the weights do not fit config.json ({config.model_type}): {listed}")
    _check_finite(model, source)
    return model


def _check_finite(model, source: str) -> None:
    """Every weight is a finite number: with a NaN or infinite weight, training went on with NaN losses (logged as
    0.0 by the Trainer's NaN filter) and wrote a NaN model, serving answered each request with a 500, evaluation
    reported NaN."""
    import torch

    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise AksharaError(f"{source}: {name} holds NaN or infinite values (a diverged or damaged model)")


FLOAT_HEADER_DTYPES = ("F64", "F32", "F16", "BF16")  # safetensors' names of the weight dtypes the model computes in


def check_folder_before_loading(folder: Path) -> None:
    """What `from_pretrained` would otherwise get wrong without a word or only after minutes: a config.json whose
    sizes cannot fit this machine (refused before the config object builds per-layer lists), non-float weights
    (int8 or fp8 tensors are cast to float silently), and a corrupt generation_config.json (replaced by defaults
    with only a log line)."""
    from akshara_hf.bounds import check_model_fits, dtype_bytes

    config_path = folder / "config.json"
    config = read_config_json(config_path)
    for key in ("dtype", "torch_dtype"):  # `"dtype": "float7"` was an AttributeError from inside from_pretrained
        value = config.get(key)
        if value is not None and str(value).removeprefix("torch.") not in ("auto", "float32", "bfloat16", "float16",
                                                                            "float64"):
            raise AksharaError(f"{config_path}: {key} {value!r} is not a floating-point torch dtype (float32, "
                               "bfloat16, float16)")
    check_model_fits(config, str(config_path), bytes_per_parameter=dtype_bytes(config.get("dtype",
                                                                                         config.get("torch_dtype"))))
    _check_weight_dtypes(folder)
    vocab_size = config.get("vocab_size") if _is_number(config.get("vocab_size"), 1, integer=True) else None
    _check_token_ids(config_path, config, vocab_size)
    if (folder / "generation_config.json").exists():
        check_generation_config(folder / "generation_config.json", vocab_size)


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


def _check_token_ids(path: Path, data: dict, vocab_size: int | None) -> None:
    """bos/eos/pad ids (an id or a list of ids) are tokens of the model; transformers only warns about config.json's
    (`eos_token_id: 1000000` chatted on, exit status 0, every reply running to its limit)."""
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = data.get(key)
        ids = value if isinstance(value, list) else [value]
        if value is not None and (not _is_token_ids(value) or
                                  vocab_size is not None and any(index >= vocab_size for index in ids)):
            raise AksharaError(f"{path}: {key} {value!r} is not a token of this model (vocab_size {vocab_size})")


def check_generation_config(path: Path, vocab_size: int | None = None) -> None:
    """A folder's generation_config.json loads as written or not at all: transformers' `from_pretrained` replaces a
    corrupt one by defaults (a log line only), so chat would sample with settings nobody chose. Its token ids lie in
    the model's `vocab_size` when given (an eos id past it never comes: replies ran to their length limit)."""
    from transformers import GenerationConfig

    data = read_json(path)
    if not isinstance(data, dict):
        raise AksharaError(f"{path}: not a JSON object")
    for key, valid in GENERATION_FIELDS.items():
        if data.get(key) is not None and not valid(data[key]):
            raise AksharaError(f"{path}: {key} {data[key]!r} is not a valid value")
    _check_token_ids(path, data, vocab_size)
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
        for name in set(weight_map.values()):  # transformers joins each to the folder: `../x` reads outside it
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise AksharaError(f"{index}: weight_map names {name!r}, not a file of the folder")
        files = [folder / name for name in sorted(set(weight_map.values()))]
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


def check_tokenizer_patterns(source: str) -> None:
    """Every regular expression in the tokenizer.json (split pre-tokenizers, replace normalizers and decoders) is
    nanochat's split pattern (`tokenization.tokenizer.check_split_pattern`, the rule for tokenizer.pkl too): the
    tokenizers library runs them on every text, and a crafted one (`(a|a)*b`) made chat end in a Rust panic (a
    BaseException no handler catches) on a prompt of 40 x "a", or backtracks for hours first."""
    from akshara_hf.tokenization.tokenizer import check_split_pattern

    path = _model_file(source, "tokenizer.json")
    if path is None:
        return
    try:
        data = read_json(path)
    except AksharaError:  # not JSON: the tokenizer's own load reports it
        return
    if not isinstance(data, dict):
        return
    # A pattern is serialized as {"Regex": "..."} (or {"String": "..."}, matched literally); the vocabulary and
    # merges ("model", "added_tokens") hold none.
    pending = [value for key, value in data.items() if key not in ("model", "added_tokens")]
    while pending:  # iterative: nesting depth is the file's choice
        value = pending.pop()
        if isinstance(value, dict):
            if set(value) == {"Regex"}:
                pattern = value["Regex"]
                if not isinstance(pattern, str):
                    raise AksharaError(f"{path}: a Regex that is not a string ({pattern!r})")
                check_split_pattern(pattern, f"{path}: regex")
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def load_tokenizer(source: str, trust_remote_code: bool = False, config=None, flag: str = TRUST_FLAG):
    """`AutoTokenizer.from_pretrained` under the trust rule, its regular expressions checked first
    (`check_tokenizer_patterns`). `config`: the model's, already loaded (else AutoTokenizer loads config.json again
    itself)."""
    from transformers import AutoTokenizer

    if not trust_remote_code:
        check_folder_code(source, flag)
        import akshara_hf.model.modeling_akshara  # noqa: F401  the registered config: no "run custom code?" prompt
    check_tokenizer_patterns(source)
    kwargs = {} if config is None else {"config": config}
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as error:  # tokenizers raises its own exception types for a broken tokenizer.json
        raise AksharaError(f"{source}: the tokenizer does not load ({type(error).__name__}: {one_line(error)})") from None
    vocab_size = getattr(config, "vocab_size", None)
    if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:  # another model's tokenizer: ids past the embedding
        raise AksharaError(f"{source}: the tokenizer has {len(tokenizer):,} ids, config.json's vocab_size is "
                           f"{vocab_size:,} (a tokenizer of another model?)")
    return tokenizer


def load_model_and_tokenizer(argument: str | Path, trust_remote_code: bool = False, flag: str = TRUST_FLAG, **kwargs):
    """Resolve `argument`, then load both; everything that can go wrong is an AksharaError."""
    source = resolve_model(argument)
    model = load_model(source, trust_remote_code, flag, **kwargs)
    return model, load_tokenizer(source, trust_remote_code, config=model.config, flag=flag)
