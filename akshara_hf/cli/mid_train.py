"""`akshara-hf mid-train --config RECIPE`: training/mid_train.py (nanochat's mid-training, or the demo's base stage)
on a recipe file or packaged recipe."""

from akshara_hf.cli.recipes import add_training_command


def register(subparsers) -> None:
    add_training_command(subparsers, "mid-train", "mid_train.py", "mid or base")
