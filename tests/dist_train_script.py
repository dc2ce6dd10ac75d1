"""Tiny MuonSFTTrainer run, for the 1- vs 2-process comparison in test_trainer.py (also holds the tiny builders).

Run as `accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no
tests/dist_train_script.py --out RESULT.json --output-dir DIR` (gloo on CPU), or with plain `python` for 1 process.
Rank 0 writes the world size seen by the Trainer and by torch.distributed, and the logged losses and LRs.
With `--fsdp-on-cpu` (and `accelerate launch --config_file training/accelerate_configs/fsdp2.yaml`), Accelerate sets
up FSDP2 on the CPU processes (`fsdp_on_cpu`).
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


def tiny_model(seed: int = 0, generation: str = "late-2025") -> AksharaForCausalLM:
    """The tiny Akshara model, every matrix re-drawn from a seeded normal (nanochat starts the head and the output
    projections at zero, which would leave the blocks without gradient). `generation="2026"`: nanochat 2026's
    architecture (4 layers, windows S S S L, value embeddings, lambdas, smear, backout) and so its optimizer."""
    torch.manual_seed(seed)
    if generation == "2026":
        config = AksharaConfig.from_nanochat({"sequence_len": 128, "vocab_size": VOCAB_SIZE, "n_layer": 4, "n_head": 4,
                                              "n_kv_head": 2, "n_embd": 64, "window_pattern": "SSSL"})  # fmt: skip
    else:
        config = AksharaConfig(
            vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128,
        )  # fmt: skip
    model = AksharaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:  # 2026's lambdas and gates: around a half, none inert
                param.normal_(0.5, 0.1)
            else:
                param.normal_(0.0, 1.0 if "wte" in name or "value_embeds" in name else param.shape[1] ** -0.5)
    return model


def fsdp_on_cpu() -> None:
    """Let Accelerate set up FSDP on CPU processes (gloo), for tests. Accelerate 1.16 takes the FSDP plugin only for
    accelerator devices (`AcceleratorState` checks for MULTI_GPU, MULTI_XPU, ...) and on CPU quietly sets up DDP
    instead. Here its backend choice reports MULTI_CPU as MULTI_GPU to that check, with the gloo process group
    started first and the device pinned to the CPU (`ACCELERATE_TORCH_DEVICE`, which Accelerate reads); everything
    else (`fully_shard` of the blocks, the optimizer's switch to the sharded parameters, the checkpoints) is
    Accelerate's and the Trainer's own FSDP2 code, as on GPUs."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    os.environ["ACCELERATE_TORCH_DEVICE"] = "cpu"
    dist.init_process_group("gloo")
    choose = PartialState._prepare_backend

    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        backend, kind = choose(self, cpu, sagemaker_dp, backend)
        return backend, DistributedType.MULTI_GPU if kind == DistributedType.MULTI_CPU else kind

    PartialState._prepare_backend = prepare_backend


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


def run(output_dir, steps: int, loss_normalization: str, per_device: int = 4, target: int = 8,
        generation: str = "late-2025", save_steps: int | None = None, resume_from: str | None = None,
        params_out: str | None = None) -> dict:
    """Train the tiny model `steps` steps; return the world sizes, the per-step logged loss and LRs, and how many Muon
    matrices each rank holds state for. `params_out`: rank 0 writes the final weights there (safetensors)."""
    saving = {"save_strategy": "steps", "save_steps": save_steps} if save_steps else {}
    args = tiny_config(
        output_dir, max_steps=steps, per_device_train_batch_size=per_device, target_examples_per_step=target,
        loss_normalization=loss_normalization, **saving,
    )  # fmt: skip
    model = tiny_model(generation=generation)
    trainer = MuonSFTTrainer(model, args, train_dataset=conversations(steps * target), processing_class=tiny_tokenizer())
    trainer.train(resume_from_checkpoint=resume_from)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry and "lrm" in entry]
    optimizer = trainer.optimizer.optimizer  # inside Accelerate's wrapper
    matrices = [p for group in optimizer.muon.param_groups for p in group["params"]]
    world = dist.get_world_size() if dist.is_initialized() else 1
    holders = torch.zeros(world, len(matrices), dtype=torch.int32)
    holders[dist.get_rank() if dist.is_initialized() else 0] = torch.tensor([int(p in optimizer.muon.state) for p in matrices])
    if dist.is_initialized():
        dist.all_reduce(holders)
    if params_out:  # FSDP2's DTensors gathered whole (a collective: every rank)
        from safetensors.torch import save_file
        from torch.distributed.tensor import DTensor

        weights = {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().contiguous()
                   for name, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()}  # fmt: skip
        if not dist.is_initialized() or dist.get_rank() == 0:
            save_file(weights, params_out)
    return {
        "world_size": args.world_size,
        "dist_world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "losses": [entry["loss"] for entry in logs],
        "lrs": [entry["lr/muon"] for entry in logs],
        "muon_states_by_rank": holders.tolist(),
        "muon_class": type(optimizer.muon).__name__,
        "fsdp": trainer.is_fsdp_enabled,
        "sharded": sorted({type(p).__name__ for p in optimizer.muon.param_groups[0]["params"]}),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--loss-normalization", default="nanochat")
    parser.add_argument("--generation", default="late-2025", choices=["late-2025", "2026"])
    parser.add_argument("--save-steps", type=int)
    parser.add_argument("--resume-from")
    parser.add_argument("--params-out")
    parser.add_argument("--fsdp-on-cpu", action="store_true", help="let Accelerate set up FSDP on CPU (tests)")
    options = parser.parse_args()
    if options.fsdp_on_cpu:
        fsdp_on_cpu()
    result = run(options.output_dir, options.steps, options.loss_normalization, generation=options.generation,
                 save_steps=options.save_steps, resume_from=options.resume_from, params_out=options.params_out)
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
