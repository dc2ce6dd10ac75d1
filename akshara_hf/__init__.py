"""Akshara-HF: nanochat-family chat models on the Hugging Face stack.

Lazy (PEP 562): `import akshara_hf` and `akshara-hf --help` load neither torch nor transformers. The model classes
load on first use (`from akshara_hf import AksharaForCausalLM`); importing `model.configuration_akshara` /
`model.modeling_akshara` registers them with the Auto classes (see the end of those modules).

Subpackages, one job each:

* `model/` — `configuration_akshara.py` and `modeling_akshara.py`: the files that ship to the Hub as remote code
  (they import only torch and transformers);
* `tokenization/` — the fast tokenizer (from nanochat's tiktoken pickle, or trained), the chat template and
  nanochat's conversation layout;
* `conversion/` — nanochat checkpoints (both generations) in and out; transformers' native `nanochat` type out and in;
* `data/` — the source converters, the recipe mixture, mid-training packing;
* `training/` — recipe parsing, the Muon + AdamW optimizer and schedules, the TRL trainer, the runner, run facts;
* `evaluation/` — ROUGE/chrF/bits-per-byte and `akshara-hf evaluate`;
* `cli/` — the `akshara-hf` command line (commands that only drive others live here: chat, serve, demo);
* `errors`, `folders`, `loading`, `lazy` — shared helpers (one-line errors, safe output folders, model loading).
"""

__version__ = "0.1.0"
__all__ = ["AksharaConfig", "AksharaModel", "AksharaForCausalLM", "AksharaPreTrainedModel"]

_HOMES = {"AksharaConfig": "model.configuration_akshara", "AksharaModel": "model.modeling_akshara",
          "AksharaForCausalLM": "model.modeling_akshara", "AksharaPreTrainedModel": "model.modeling_akshara"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_HOMES])
