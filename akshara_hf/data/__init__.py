"""Akshara training data: one converter per source kind (`sources`; nanochat's conversation rule is
`akshara_hf.tokenization.chat.conversation_problem`), the seed write-ups' prompts (`prompts`) and recipe-driven mixtures (`mixture`).

Names are resolved lazily so that `akshara-hf --help` does not import `datasets`.
"""

import importlib

_EXPORTS = {
    "build_mixture": "mixture", "load_data_section": "mixture", "DataSection": "mixture", "SourceSpec": "mixture",
    "convert_source": "sources", "Converted": "sources", "KINDS": "sources", "FEATURES": "sources",
    "SUMMARY_PROMPTS": "prompts", "PARAPHRASE_PROMPTS": "prompts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
