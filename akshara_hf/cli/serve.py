"""`akshara-hf serve FOLDER`: the Akshara model itself behind transformers' OpenAI-compatible server.

This is `transformers serve` (its FastAPI app, chat template, `generate`, streaming), started in-process with one
shim. transformers 5.23's `ModelManager._load_model` ends with `getattr(transformers, config.architectures[0])`,
the only place in its serving stack that cannot resolve a remote-code class: for a folder whose architecture is
`AksharaForCausalLM` it raises AttributeError, with or without `--trust-remote-code`. The shim exposes that name on
the `transformers` module as `AutoModelForCausalLM`, so the server's `<name>.from_pretrained(folder, **kwargs)`
loads the folder exactly as `pipeline("text-generation")` does: the same class, bf16-rounded rotary tables,
chat template and `generation_config` (stop at `<|assistant_end|>`). Everything else is transformers' code.
`akshara-hf export-native` remains for users who want transformers' own NanoChat class.
"""

import json
from pathlib import Path

from akshara_hf.errors import AksharaError


def expose_architecture(folder: str, trust_remote_code: bool = False) -> str:
    """Make `getattr(transformers, <folder's architecture>)` answer `AutoModelForCausalLM`; return the name.

    Names transformers already exports are left alone (the server handles those itself)."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    from akshara_hf.model import modeling_akshara  # noqa: F401  registers the installed Akshara classes with the Auto classes

    if Path(folder).exists():  # a local folder: check it here, with the file named in the error
        config_file = Path(folder) / "config.json"
        if not config_file.is_file():
            raise AksharaError(f"{config_file}: missing (serve needs a saved model folder or a Hub repo id)")
        try:
            architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
            raise AksharaError(f"{config_file}: not a JSON object ({error})") from None
    else:  # a Hub repo id
        from akshara_hf.loading import resolve_model

        resolve_model(folder)  # a local-looking path that does not exist fails here, without ~30 s of Hub retries
        config_file = folder
        try:
            architectures = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code).architectures
        except (OSError, ValueError) as error:
            raise AksharaError(f"{folder}: not a local folder, and no loadable Hub model ({error})") from None
    if not (isinstance(architectures, list) and architectures and isinstance(architectures[0], str)):
        raise AksharaError(f"{config_file}: field 'architectures' must be a non-empty list of class names")
    name = architectures[0]
    if hasattr(transformers, name):
        return name
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        raise AksharaError(f"{config_file}: cannot load the config ({error})") from None
    remote = name in (getattr(config, "auto_map", None) or {}).get("AutoModelForCausalLM", "")
    if type(config) not in AutoModelForCausalLM._model_mapping and not (remote and trust_remote_code):
        raise AksharaError(f"{config_file}: architecture {name!r} is not a causal LM this installation can load "
                           "(pass --trust-remote-code to use the folder's own modeling code)")
    setattr(transformers, name, AutoModelForCausalLM)
    return name


def serve(folder: str, host: str = "127.0.0.1", port: int = 8000, device: str = "auto", dtype: str = "auto",
          trust_remote_code: bool = False, compile: bool = False, log_level: str = "warning",
          non_blocking: bool = False):
    """Start `transformers serve` pinned to FOLDER. Blocks unless `non_blocking` (then returns the `Serve`)."""
    from transformers.cli.serve import Serve

    expose_architecture(folder, trust_remote_code)
    return Serve(force_model=str(folder), host=host, port=port, device=device, dtype=dtype,
                 trust_remote_code=trust_remote_code, compile=compile, log_level=log_level, non_blocking=non_blocking)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model folder with transformers' OpenAI-compatible server (/v1/chat/completions)")
    p.add_argument("folder", help="model folder or Hub repo id")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help="e.g. cpu, cuda:0 (default: auto)")
    p.add_argument("--dtype", default="auto", help="default: the folder's dtype")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the folder's own modeling files (only used for classes this package does not register)")
    p.add_argument("--compile", action="store_true", help="static cache + torch.compile (transformers' flag)")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=_main)


def _main(args) -> int:
    serve(args.folder, args.host, args.port, args.device, args.dtype, args.trust_remote_code, args.compile,
          args.log_level)
    return 0
