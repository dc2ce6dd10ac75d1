"""`akshara-hf sft --config RECIPE`: training/sft.py (nanochat's chat SFT) on a recipe file or packaged recipe."""

from akshara_hf.cli.recipes import add_training_command


def register(subparsers) -> None:
    add_training_command(subparsers, "sft", "sft.py", "sft")
