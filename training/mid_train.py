"""Mid-training (or the demo's base stage) of an Akshara model from a recipe (nanochat's mid_train, on TRL +
Accelerate): conversations rendered and concatenated into rows of max_seq_len, every token a target, validation
bits-per-byte. Runs recipes with `stage: mid` or `stage: base` (sft.py runs `stage: sft`).

    python training/mid_train.py --config training/recipes/tiny-mid.yaml [--max_steps 10 ...]
    accelerate launch --config_file training/accelerate_configs/single_gpu.yaml training/mid_train.py --config RECIPE
    akshara-hf mid-train --config tiny-mid [...]   # the same script, from an installed package (recipe file or name)
"""

import sys

from akshara_hf.training.run import main
from model_card import write_model_card

if __name__ == "__main__":
    sys.exit(main(script="mid_train.py", card_writer=write_model_card))
