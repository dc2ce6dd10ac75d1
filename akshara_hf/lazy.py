"""`lazy_import`: a module imported on first attribute access, so that `akshara-hf --help` loads no torch."""

import importlib.util
import sys


def lazy_import(name: str):
    """`import name`, deferred until an attribute is read: the standard library's `importlib.util.LazyLoader` recipe.
    For modules whose functions need torch while their command registration (`register(subparsers)`) must not."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
