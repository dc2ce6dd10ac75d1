"""Model cards and Hub publication for Akshara folders (this package imports `akshara_hf`, never the reverse).

One job per module: `facts` (the run-facts schema and its checks), `nanochat_meta` (facts of converted nanochat
checkpoints), `seed_runs` (the eight published runs' reported figures), `architecture` (sizes and parameter counts
from config.json), `sources` (what each mixture source is), `plot` (loss_curve.png), `card` (rendering README.md
through `template.md`), `publish` (check a folder loads with its remote code alone, then upload its files).
"""

from .architecture import architecture_from_config
from .card import eval_results_from_file, render_model_card, write_model_card
from .facts import RUN_FACTS_FIELDS, load_run_facts, validate_run_facts
from .nanochat_meta import facts_from_nanochat_meta
from .seed_runs import SEED_RUNS, seed_run_facts

__all__ = [
    "RUN_FACTS_FIELDS",
    "SEED_RUNS",
    "architecture_from_config",
    "eval_results_from_file",
    "facts_from_nanochat_meta",
    "load_run_facts",
    "render_model_card",
    "seed_run_facts",
    "validate_run_facts",
    "write_model_card",
]
