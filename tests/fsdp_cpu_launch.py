"""Run a training script (`training/mid_train.py`, `training/sft.py`) with Accelerate setting up FSDP on CPU processes:
`accelerate launch --config_file training/accelerate_configs/fsdp2.yaml --num_processes 2 --mixed_precision no
tests/fsdp_cpu_launch.py training/mid_train.py --config ...` (see `dist_train_script.fsdp_on_cpu`; for tests)."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dist_train_script import fsdp_on_cpu  # noqa: E402

if __name__ == "__main__":
    fsdp_on_cpu()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
