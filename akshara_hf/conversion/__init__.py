"""nanochat checkpoints (late 2025 and 2026) in and out; transformers' native `nanochat` type out and in."""
