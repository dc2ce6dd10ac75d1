"""Model cards and Hub publication for Akshara folders.

`card` turns a saved folder plus its run facts into a Hub model card (README.md with YAML metadata and the
run's story); `publish` checks such a folder loads with remote code alone and uploads it.
"""

from .card import (
    RUN_FACTS_FIELDS,
    SEED_RUNS,
    facts_from_nanochat_meta,
    load_run_facts,
    seed_run_facts,
    validate_run_facts,
    write_model_card,
)

__all__ = [
    "RUN_FACTS_FIELDS",
    "SEED_RUNS",
    "facts_from_nanochat_meta",
    "load_run_facts",
    "seed_run_facts",
    "validate_run_facts",
    "write_model_card",
]
