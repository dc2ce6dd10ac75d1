"""Tiny MuonSFTTrainer run, for the 1- vs 2-process comparison in test_trainer.py (also holds the tiny builders).

Run as `accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no
tests/dist_train_script.py --out RESULT.json --output-dir DIR` (gloo on CPU), or with plain `python` for 1 process.
Rank 0 writes the world size seen by the Trainer and by torch.distributed, and the logged losses and LRs.
"""

import argparse
import json
import os
import random
import sys

import torch
import torch.distributed as dist
from datasets import Dataset
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from akshara_hf import AksharaConfig, AksharaForCausalLM
from akshara_hf.training.trainer import AksharaSFTConfig, MuonSFTTrainer

VOCAB_SIZE = 512
SPECIALS = [
    "<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>",
]  # fmt: skip
SPECIAL_IDS = {token: VOCAB_SIZE - len(SPECIALS) + i for i, token in enumerate(SPECIALS)}
BOS, USER_START, USER_END = SPECIAL_IDS["<|bos|>"], SPECIAL_IDS["<|user_start|>"], SPECIAL_IDS["<|user_end|>"]
ASSISTANT_START, ASSISTANT_END = SPECIAL_IDS["<|assistant_start|>"], SPECIAL_IDS["<|assistant_end|>"]


def tiny_model(seed: int = 0) -> AksharaForCausalLM:
    """The tiny Akshara model, every matrix re-drawn from a seeded normal (nanochat starts the head and the output
    projections at zero, which would leave the blocks without gradient)."""
    torch.manual_seed(seed)
    config = AksharaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128,
    )  # fmt: skip
    model = AksharaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0.0, 1.0 if "wte" in name else param.shape[1] ** -0.5)
    return model


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `t0 ... t502` and nanochat's 9 special tokens (no pad token set)."""
    vocab = {f"t{i}": i for i in range(VOCAB_SIZE - len(SPECIALS))} | SPECIAL_IDS
    backend = Tokenizer(WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|bos|>", additional_special_tokens=SPECIALS)


def conversation(rng: random.Random, turns: int, max_words: int = 12) -> dict:
    """One conversation in nanochat's layout and train mask (assistant text and <|assistant_end|> supervised)."""
    ids, mask = [BOS], [0]
    for _ in range(turns):
        user = [rng.randrange(VOCAB_SIZE - len(SPECIALS)) for _ in range(rng.randint(1, max_words))]
        reply = [rng.randrange(VOCAB_SIZE - len(SPECIALS)) for _ in range(rng.randint(1, max_words))]
        ids += [USER_START, *user, USER_END, ASSISTANT_START, *reply, ASSISTANT_END]
        mask += [0] * (len(user) + 3) + [1] * (len(reply) + 1)
    return {"input_ids": ids, "assistant_masks": mask}


def conversations(n: int, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    return Dataset.from_list([conversation(rng, turns=rng.randint(1, 2)) for _ in range(n)])


def tiny_config(output_dir, **overrides) -> AksharaSFTConfig:
    """CPU, fp32, no reporting, rows in dataset order, one log per step."""
    settings = dict(
        output_dir=str(output_dir), use_cpu=True, bf16=False, report_to=[], dataloader_num_workers=0,
        per_device_train_batch_size=4, target_examples_per_step=8, logging_steps=1, save_strategy="no",
        train_sampling_strategy="sequential", seed=0, disable_tqdm=True, dataset_num_proc=None,
    )  # fmt: skip
    return AksharaSFTConfig(**{**settings, **overrides})


def run(output_dir, steps: int, loss_normalization: str, per_device: int = 4, target: int = 8) -> dict:
    """Train the tiny model `steps` steps; return the world sizes and the per-step logged loss and LRs."""
    args = tiny_config(
        output_dir, max_steps=steps, per_device_train_batch_size=per_device, target_examples_per_step=target,
        loss_normalization=loss_normalization,
    )  # fmt: skip
    trainer = MuonSFTTrainer(
        tiny_model(), args, train_dataset=conversations(steps * target), processing_class=tiny_tokenizer()
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry and "lrm" in entry]
    return {
        "world_size": args.world_size,
        "dist_world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "losses": [entry["loss"] for entry in logs],
        "lrs": [entry["lr/muon"] for entry in logs],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--loss-normalization", default="nanochat")
    options = parser.parse_args()
    result = run(options.output_dir, options.steps, options.loss_normalization)
    if not dist.is_initialized() or dist.get_rank() == 0:
        with open(options.out, "w") as file:
            json.dump(result, file)
    if dist.is_initialized():
        # Skip the interpreter's teardown of the gloo process group: with torch 2.13 a finished 2-process CPU run
        # aborted there once in ~30 runs (SIGABRT, "terminate called without an active exception"), and destroying
        # the group first (Accelerate's end_training, with or without a barrier) hung in 3 of 12. What this script
        # checks is written above; the teardown is torch's.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
