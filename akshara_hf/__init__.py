"""Akshara-HF: nanochat-family chat models on the Hugging Face stack.

Lazy (PEP 562): `import akshara_hf` and `akshara-hf --help` load neither torch nor transformers. The model classes
load on first use (`from akshara_hf import AksharaForCausalLM`); importing `configuration_akshara` /
`modeling_akshara` registers them with the Auto classes (see the end of those modules).
"""

__version__ = "0.1.0"
__all__ = ["AksharaConfig", "AksharaModel", "AksharaForCausalLM", "AksharaPreTrainedModel"]

_HOMES = {"AksharaConfig": "configuration_akshara", "AksharaModel": "modeling_akshara",
          "AksharaForCausalLM": "modeling_akshara", "AksharaPreTrainedModel": "modeling_akshara"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_HOMES])
