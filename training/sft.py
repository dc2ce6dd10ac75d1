"""Supervised fine-tuning of an Akshara model from a recipe (nanochat's chat_sft, on TRL + Accelerate). Runs recipes
with `stage: sft` (others are refused: mid_train.py runs them).

    python training/sft.py --config training/recipes/tiny-sft.yaml [--max_steps 10 ...]
    accelerate launch --config_file training/accelerate_configs/single_gpu.yaml training/sft.py --config RECIPE
    akshara-hf sft --config tiny-sft [...]   # the same script, from an installed package (recipe file or name)
"""

import sys

from akshara_hf.training.run import main
from model_card import write_model_card

if __name__ == "__main__":
    sys.exit(main(script="sft.py", card_writer=write_model_card))
