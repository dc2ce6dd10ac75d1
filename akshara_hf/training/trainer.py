"""Train Akshara models with TRL's `SFTTrainer` the way nanochat's `chat_sft` / `mid_train` do.

TRL supplies the data pipeline (pre-tokenized `input_ids` + `assistant_masks` -> `labels`, pad-to-longest or
padding-free/packed batches) and the fused-LM-head loss; transformers' Trainer the loop, DDP, checkpoints and resume.
What nanochat does differently is plugged in through the Trainer's own hooks: the Muon + AdamW optimizer through
`optimizer_cls_and_kwargs`, its LR schedule as a `LambdaLR` in `create_scheduler`, the Muon momentum warmup as a
callback, its per-micro-batch loss normalisation in `get_batch_samples`, and per-group LR logging in `log`.
"""

import contextlib
import copy
import math
import os
import sys
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_utils import SchedulerType
from transformers.training_args import ParallelMode
from transformers.utils import is_peft_available, logging
from trl import SFTConfig, SFTTrainer

from akshara_hf.errors import AksharaError
from akshara_hf.evaluation.metrics import bits_per_byte, bpb_from_losses
from akshara_hf.training.optim import (
    MuonAdamW,
    mid_lr_multiplier,
    muon_momentum,
    sft_lr_multiplier,
    split_parameters,
)
from akshara_hf.data.packing import BOS_BESTFIT_BUFFER, pack_bos_bestfit, token_byte_lengths
from akshara_hf.training.progress import conversations_per_row, progress_schedule, step_progress
from akshara_hf.training.recipe import parse_config  # noqa: F401  (re-exported: recipes parse into AksharaSFTConfig)

logger = logging.get_logger(__name__)

# nanochat pads SFT batches with <|assistant_end|> (the targets there are ignored).
NANOCHAT_PAD_TOKEN = "<|assistant_end|>"
# Per-schedule defaults of the fields left at None: (init_lr_frac, muon_momentum_warmup_steps, warmdown_ratio).
# "sft" and "mid" are late-2025 nanochat's chat_sft and mid_train; "sft-2026" is nanochat 2026's chat_sft.
SCHEDULE_DEFAULTS = {"sft": (0.02, 0, None), "mid": (1.0, 300, 0.2), "sft-2026": (0.8, 300, 0.5)}
# The stage decides the schedule: its default first, then the others it allows (nanochat's base stage here is packed
# text, trained like mid-training; SFT can follow nanochat 2026's chat_sft instead).
STAGE_SCHEDULES = {"base": ("mid",), "mid": ("mid",), "sft": ("sft", "sft-2026")}
LOSS_NORMALIZATIONS = ("nanochat", "tokens")
# TRL's packing strategies, and nanochat 2026's chat_sft rows (`akshara_hf.data.packing.bos_bestfit_rows`).
PACKING_STRATEGIES = ("bfd", "bfd_split", "wrapped", "bos_bestfit")
# The shortest max_length that holds a conversation: <|bos|>, <|user_start|>, one token, <|user_end|>,
# <|assistant_start|>, one token, <|assistant_end|>.
MIN_MAX_LENGTH = 7


@dataclass
class AksharaSFTConfig(SFTConfig):
    r"""
    [`~trl.SFTConfig`] with nanochat's optimizer, schedule and batch settings.

    The LRs are nanochat's three base LRs times `init_lr_frac` (the AdamW ones also times `(n_embd / 768) ** -0.5`).
    `learning_rate` is not an input: it is set to the Muon LR (`matrix_lr * init_lr_frac`), which is what the Trainer
    logs as `learning_rate` (group 0); setting it to anything else is an error. `optim`, `adam_beta1/2`,
    `adam_epsilon` and `lr_scheduler_type` are not used (the optimizer is always `MuonAdamW`, the schedule `schedule`).
    `weight_decay` (default 0, as in every Akshara run) applies to the AdamW groups only, as in nanochat.

    Defaults changed from `SFTConfig`: no activation (gradient) checkpointing and `max_grad_norm=0` (nanochat's SFT and
    mid-training neither checkpoint nor clip), `max_length=2048` (nanochat's sequence length) and
    `ddp_find_unused_parameters=False` (the Trainer's default search costs a graph traversal per step for nothing).
    `bf16` stays on, as in every Akshara run (set `bf16=False` or `use_cpu=True` on CPU).

    Parameters:
        matrix_lr, embedding_lr, unembedding_lr: nanochat's base LRs (Muon; AdamW for `wte` and `lm_head`).
        stage: "sft", "mid" or "base". It decides the LR schedule and the defaults below: "sft" runs nanochat's chat_sft,
            "mid" and "base" its mid_train.
        schedule: `None` = the stage's: "sft" (LR multiplier `1 - step/N`) for stage sft, "mid" (1, then linear to 0
            over the last `warmdown_ratio`) for mid and base. Stage sft may choose "sft-2026" instead (nanochat
            2026's chat_sft: by data progress, the fraction of the run's conversations consumed after each step
            (`akshara_hf.training.progress`): linear warmup over `warmup_ratio`, 1, then linear to `final_lr_frac`
            over the last `warmdown_ratio`, 0.5); a schedule of another stage is an error.
        warmup_ratio, final_lr_frac: "sft-2026" only (nanochat's `--warmup-ratio`, `--final-lr-frac`; default 0).
        packing_strategy: TRL's ("bfd", "bfd_split", "wrapped"), or "bos_bestfit": nanochat 2026's chat_sft rows
            (`akshara_hf.data.packing.bos_bestfit_rows`): `max_length + 1` tokens (the last one a target only),
            whole conversations placed best-fit from a buffer of `packing_buffer_size`, the rest `<|bos|>` with no
            target; rows trained in order (`train_sampling_strategy` sequential). Attention and smear run over the
            whole row as in nanochat; `padding_free: true` restarts positions at each conversation instead
            (document-masked attention). Needs `packing: true`.
        assistant_only_loss: `None` = nanochat's: True for stage sft (loss on the assistant's tokens only, from the
            chat template's `{% generation %}` blocks), False for mid and base (every token). Pre-tokenized rows
            carry their own mask: an `assistant_masks` column always applies (TRL's rule), so for them the flag only
            requires that column.
        scalar_lr: nanochat 2026's base LR of its lambdas (AdamW; used by 2026 models only).
        init_lr_frac: fraction of the base LRs to start from; `None` = 0.02 for "sft", 1.0 for "mid", 0.8 for
            "sft-2026".
        warmdown_ratio: fraction of the steps over which "mid" / "sft-2026" decay; `None` = 0.2 / 0.5.
        muon_momentum_warmup_steps: Muon momentum goes 0.85 -> 0.95 over these steps; `None` = 0 for "sft", 300 for
            "mid" and "sft-2026".
        target_examples_per_step: examples (rows) per optimizer step across all processes; sets
            `gradient_accumulation_steps` to `target / (per_device_train_batch_size * world_size)`. `None` leaves
            `gradient_accumulation_steps` as given. Mid-training with nanochat's 524,288 tokens per step at 2,048
            tokens per row is 256.
        loss_normalization: "nanochat" (each micro-batch's mean over its own supervised tokens, averaged over the
            micro-batches and processes) or "tokens" (TRL's: one mean over every supervised token of the step). See
            [`MuonSFTTrainer`].
        warm_start_optimizer: start from the optimizer state of the model's folder (`nanochat_optimizer.tensors`, which
            `convert-nanochat` carries from a nanochat 2026 checkpoint's `optim_*_rank*.pt`), as chat_sft's
            `--load-optimizer`: Muon momentum buffers and second moments, AdamW moments and steps; the LRs and other
            group settings stay this config's. Not on `resume_from_checkpoint` (the checkpoint's state is loaded).
        adapter_lr: AdamW LR of PEFT adapter weights (`peft_config=`, e.g. LoRA), as given: not scaled by
            `init_lr_frac`; the schedule applies. Adapters go to AdamW, not Muon (reason in [`MuonAdamW`]).
    """

    matrix_lr: float = field(default=0.02, metadata={"help": "Muon LR for the block matrices (before init_lr_frac)."})
    embedding_lr: float = field(default=0.2, metadata={"help": "AdamW LR for transformer.wte (before scaling)."})
    unembedding_lr: float = field(default=0.004, metadata={"help": "AdamW LR for lm_head (before scaling)."})
    scalar_lr: float = field(default=0.5, metadata={"help": "AdamW LR of nanochat 2026's lambdas (2026 models)."})
    init_lr_frac: float | None = field(
        default=None, metadata={"help": "Fraction of the base LRs to use; default 0.02 (sft), 1.0 (mid), 0.8 (sft-2026)."}
    )
    stage: str = field(
        default="sft",
        metadata={"help": "base | mid | sft: decides the LR schedule and the defaults.", "choices": list(STAGE_SCHEDULES)},
    )
    schedule: str | None = field(
        default=None,
        metadata={"help": "Default: the stage's ('sft' or 'mid'); stage sft may choose 'sft-2026' (nanochat 2026)."},
    )
    warmdown_ratio: float | None = field(
        default=None, metadata={"help": "Decay fraction of 'mid' / 'sft-2026'; default 0.2 / 0.5."}
    )
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "'sft-2026': LR warmup over this fraction of the data (chat_sft's; default 0)."}
    )
    final_lr_frac: float = field(
        default=0.0, metadata={"help": "'sft-2026': the LR multiplier reached at the end of the run (default 0)."}
    )
    packing_strategy: str = field(
        default="bfd",
        metadata={
            "help": "With packing: TRL's 'bfd', 'bfd_split', 'wrapped', or 'bos_bestfit' (nanochat 2026's chat_sft "
            "rows of max_length + 1 tokens starting with <|bos|>).",
            "choices": list(PACKING_STRATEGIES),
        },
    )
    warm_start_optimizer: bool = field(
        default=False,
        metadata={"help": "Start from the optimizer state convert-nanochat carried into the model's folder (nanochat "
                          "2026's chat_sft --load-optimizer: momentum buffers only, LRs ours)."},
    )
    packing_buffer_size: int = field(
        default=BOS_BESTFIT_BUFFER,
        metadata={"help": "bos_bestfit: conversations held to choose the best fit from (nanochat's 100)."},
    )
    muon_momentum_warmup_steps: int | None = field(
        default=None, metadata={"help": "Muon momentum 0.85 -> 0.95 over these steps; default 0 (sft), 300 (mid)."}
    )
    target_examples_per_step: int | None = field(
        default=32, metadata={"help": "Examples per optimizer step over all processes; sets gradient accumulation."}
    )
    adapter_lr: float = field(
        default=2e-4, metadata={"help": "AdamW LR for PEFT adapter weights (LoRA A/B); not times init_lr_frac."}
    )
    loss_normalization: str = field(
        default="nanochat",
        metadata={
            "help": "'nanochat': mean per micro-batch; 'tokens': mean over the step.",
            "choices": list(LOSS_NORMALIZATIONS),
        },
    )
    # Defaults changed from SFTConfig
    learning_rate: float | None = field(
        default=None, metadata={"help": "Not an input: set to matrix_lr * init_lr_frac (the LR logged for group 0)."}
    )
    # None, not False: transformers 5 treats any set value of this deprecated alias of `activation_checkpointing` as
    # user input and warns; None resolves to False.
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing."}
    )
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm (0: off, as in nanochat)."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every Akshara parameter is used in each forward: skip DDP's extra search."}
    )
    max_length: int | None = field(default=2048, metadata={"help": "Truncate examples / pack rows to this length."})
    assistant_only_loss: bool | None = field(
        default=None, metadata={"help": "Loss on assistant tokens only; default: true for stage sft, false otherwise."}
    )
    eval_bpb: bool = field(
        default=False, metadata={"help": "Also log eval_bpb (nanochat's bits per byte) at each evaluation."}
    )

    def __post_init__(self):
        if self.stage not in STAGE_SCHEDULES:
            raise AksharaError(f"stage must be one of {list(STAGE_SCHEDULES)}, got {self.stage!r}")
        allowed = STAGE_SCHEDULES[self.stage]
        self.schedule = allowed[0] if self.schedule is None else self.schedule
        if self.schedule not in allowed:
            raise AksharaError(
                f"schedule {self.schedule!r} does not belong to stage {self.stage!r} (its schedules: {list(allowed)}); "
                "the stage decides the schedule: leave schedule out"
            )
        if self.loss_normalization not in LOSS_NORMALIZATIONS:
            raise AksharaError(
                f"loss_normalization must be one of {list(LOSS_NORMALIZATIONS)}, got {self.loss_normalization!r}"
            )
        _check_counts(self)
        _refuse_sharded_training(self)
        default_frac, default_warmup, default_warmdown = SCHEDULE_DEFAULTS[self.schedule]
        self.init_lr_frac = default_frac if self.init_lr_frac is None else self.init_lr_frac
        if self.warmdown_ratio is None:
            self.warmdown_ratio = 0.2 if default_warmdown is None else default_warmdown
        if self.muon_momentum_warmup_steps is None:
            self.muon_momentum_warmup_steps = default_warmup
        if self.assistant_only_loss is None:
            self.assistant_only_loss = self.stage == "sft"
        for key in ("matrix_lr", "embedding_lr", "unembedding_lr", "scalar_lr", "init_lr_frac", "adapter_lr"):
            if not getattr(self, key) > 0:
                raise AksharaError(f"{key} must be > 0, got {getattr(self, key)}")
        if not 0 < self.warmdown_ratio <= 1:
            raise AksharaError(f"warmdown_ratio must be in (0, 1], got {self.warmdown_ratio}")
        if self.muon_momentum_warmup_steps < 0:
            raise AksharaError(f"muon_momentum_warmup_steps must be >= 0, got {self.muon_momentum_warmup_steps}")
        _check_progress_schedule(self)
        _check_bos_bestfit(self)
        muon_lr = self.matrix_lr * self.init_lr_frac
        if self.learning_rate is not None and not math.isclose(self.learning_rate, muon_lr):
            raise AksharaError(
                f"learning_rate is not used (got {self.learning_rate}): the LRs are matrix_lr, embedding_lr and "
                "unembedding_lr times init_lr_frac"
            )
        self.learning_rate = muon_lr
        if SchedulerType(self.lr_scheduler_type) != SchedulerType.LINEAR or self.lr_scheduler_kwargs:
            raise AksharaError(
                f"lr_scheduler_type / lr_scheduler_kwargs are not used (got {self.lr_scheduler_type!r}); "
                f"choose schedule: {list(SCHEDULE_DEFAULTS)}"
            )
        if self.warmup_steps:
            raise AksharaError(f"warmup_steps must be 0: nanochat's schedules have none (got {self.warmup_steps})")

        super().__post_init__()
        _check_fsdp(self)  # after TrainingArguments has read fsdp_config (a dict, or the JSON file it names)
        if self.fsdp and self.parallel_mode != ParallelMode.DISTRIBUTED:  # the Trainer's own ValueError, earlier
            raise AksharaError("fsdp shards the model across processes: start several (accelerate launch "
                               "--config_file training/accelerate_configs/fsdp2.yaml ...), or leave fsdp out")

        if self.target_examples_per_step is not None:
            # `world_size` is only known once the devices (and the process group) are set up.
            _ = self.device
            per_step = self.per_device_train_batch_size * self.world_size
            steps, remainder = divmod(self.target_examples_per_step, per_step)
            if remainder or not steps:
                raise AksharaError(
                    f"target_examples_per_step {self.target_examples_per_step} is not a multiple of "
                    f"per_device_train_batch_size {self.per_device_train_batch_size} x world_size {self.world_size}"
                )
            if self.gradient_accumulation_steps not in (1, steps):
                raise AksharaError(
                    f"gradient_accumulation_steps {self.gradient_accumulation_steps} contradicts "
                    f"target_examples_per_step {self.target_examples_per_step} (which needs {steps}); set only one"
                )
            self.gradient_accumulation_steps = steps


def _check_counts(config: "AksharaSFTConfig") -> None:
    """Sizes and counts the Trainer would accept and then misuse (a 0-step run, negative accumulation, a NaN loss from
    rows too short to hold a conversation): refused before any work, one line each."""

    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    for key in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        value = getattr(config, key)
        if not whole(value) or value < 1:
            raise AksharaError(f"{key} must be a positive integer, got {value!r}")
    if not whole(config.max_steps) or not (config.max_steps > 0 or config.max_steps == -1):
        raise AksharaError(f"max_steps must be a positive integer or -1 (train num_train_epochs), got {config.max_steps!r}")
    epochs = config.num_train_epochs
    if config.max_steps == -1 and not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
        raise AksharaError(f"num_train_epochs must be > 0 (or set max_steps), got {epochs!r}")
    if config.max_length is not None and (not whole(config.max_length) or config.max_length < MIN_MAX_LENGTH):
        raise AksharaError(
            f"max_length must be an integer >= {MIN_MAX_LENGTH} (the shortest conversation: <|bos|>, a one-token user "
            f"turn and a one-token reply with their markers), got {config.max_length!r}"
        )
    target = config.target_examples_per_step
    if target is not None and (not whole(target) or target < 1):
        raise AksharaError(f"target_examples_per_step must be a positive integer or null, got {target!r}")
    accumulation = config.gradient_accumulation_steps
    if not whole(accumulation) or accumulation < 1:
        raise AksharaError(f"gradient_accumulation_steps must be a positive integer, got {accumulation!r}")
    for key in ("eval_steps", "save_steps", "logging_steps"):  # a count of steps, or a fraction in (0, 1) of the run
        value = getattr(config, key)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise AksharaError(f"{key} must be > 0 (steps, or a fraction of the run below 1), got {value!r}")
    if not whole(config.seed) or not 0 <= config.seed < 2**32:
        raise AksharaError(f"seed must be an integer in [0, 2**32), got {config.seed!r}")
    for key in ("max_grad_norm", "weight_decay", "dataloader_num_workers"):
        value = getattr(config, key)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise AksharaError(f"{key} must be >= 0, got {value!r}")
    if config.save_total_limit is not None and (not whole(config.save_total_limit) or config.save_total_limit < 1):
        raise AksharaError(f"save_total_limit must be a positive integer or null, got {config.save_total_limit!r}")


def _check_progress_schedule(config: "AksharaSFTConfig") -> None:
    for key in ("warmup_ratio", "final_lr_frac"):
        value = getattr(config, key)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1):
            raise AksharaError(f"{key} must be in [0, 1], got {value!r}")
        if value and config.schedule != "sft-2026":
            raise AksharaError(f"{key} belongs to schedule sft-2026 (by data progress); schedule {config.schedule!r} "
                               "has no such setting")
    if config.warmup_ratio + config.warmdown_ratio > 1:
        raise AksharaError(f"warmup_ratio {config.warmup_ratio} + warmdown_ratio {config.warmdown_ratio} exceed the "
                           "whole run")


def _check_bos_bestfit(config: "AksharaSFTConfig") -> None:
    """nanochat 2026's packed SFT rows: what they need, refused before any data is read."""
    if config.packing_strategy not in PACKING_STRATEGIES:
        raise AksharaError(f"packing_strategy must be one of {list(PACKING_STRATEGIES)}, got {config.packing_strategy!r}")
    size = config.packing_buffer_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise AksharaError(f"packing_buffer_size must be a positive integer, got {size!r}")
    if config.packing_strategy != "bos_bestfit":
        return
    if not config.packing:
        raise AksharaError("packing_strategy bos_bestfit packs only with packing: true (set both)")
    if config.stage != "sft":
        raise AksharaError(f"packing_strategy bos_bestfit packs conversations for stage sft; stage {config.stage!r} "
                           "packs its own token stream (max_seq_len)")
    if config.max_length is None:
        raise AksharaError("packing_strategy bos_bestfit needs max_length (rows are max_length + 1 tokens)")
    # nanochat's loader yields the rows in the order it packs them, and progress by data needs that order.
    if config.train_sampling_strategy == "random":  # the Trainer's default
        config.train_sampling_strategy = "sequential"
    elif config.train_sampling_strategy != "sequential":
        raise AksharaError(f"packing_strategy bos_bestfit trains its rows in order; train_sampling_strategy "
                           f"{config.train_sampling_strategy!r} would reorder them (leave it out, or sequential)")


def _asked(variable: str) -> bool:
    return os.environ.get(variable, "false").lower() in ("1", "true", "yes")


def _refuse_sharded_training(config: "AksharaSFTConfig") -> None:
    """DeepSpeed, asked for in the config or by `accelerate launch --use_deepspeed` (its environment variable), is
    refused before Accelerate sets it up: ZeRO hands the optimizer flattened pieces of each matrix (and DeepSpeed is not
    a dependency of this project). FSDP is checked by `_check_fsdp`."""
    if config.deepspeed or _asked("ACCELERATE_USE_DEEPSPEED"):
        raise AksharaError(
            "DeepSpeed is not supported with Muon: ZeRO flattens and splits each matrix, and Muon must orthogonalise "
            "whole matrices. Use DDP or FSDP2 (accelerate's multi_gpu.yaml or fsdp2.yaml; training/accelerate_configs/)"
        )


_FSDP2_HINT = "training/accelerate_configs/fsdp2.yaml, or fsdp_config {version: 2, state_dict_type: FULL_STATE_DICT}"


def _fsdp_settings(config: "AksharaSFTConfig") -> tuple[str, str] | None:
    """(version, state dict type) of the FSDP the config (`fsdp`, `fsdp_config`) or `accelerate launch`
    (`ACCELERATE_USE_FSDP`, `FSDP_VERSION`, `FSDP_STATE_DICT_TYPE`) asks for, with the defaults Accelerate and the
    Trainer fill in (the config's plugin wins over the environment, as in the Trainer); None without FSDP."""
    from torch.distributed.fsdp import StateDictType

    if config.fsdp:
        version = str(config.fsdp_config.get("version", 2))
        kind = str(config.fsdp_config.get("state_dict_type", "FULL_STATE_DICT"))
    elif _asked("ACCELERATE_USE_FSDP"):
        version = os.environ.get("FSDP_VERSION", "1")
        kind = os.environ.get("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT" if version == "1" else "SHARDED_STATE_DICT")
    else:
        return None
    if kind.isdigit() and int(kind) in {member.value for member in StateDictType}:
        kind = StateDictType(int(kind)).name  # Accelerate also takes the enum's number
    return version, kind.upper()


def _check_fsdp_settings(version: str, kind: str) -> None:
    if version != "2":
        raise AksharaError(
            f"FSDP version {version} is not supported with Muon: FSDP1 flattens the weights into 1-D pieces, and Muon "
            f"must orthogonalise whole matrices. Use FSDP2 ({_FSDP2_HINT})"
        )
    if kind != "FULL_STATE_DICT":
        raise AksharaError(
            f"FSDP state_dict_type {kind} is not supported: with it Trainer.save_model writes no weights, so the run "
            f"would end without a model folder. Use FULL_STATE_DICT ({_FSDP2_HINT})"
        )


def _check_fsdp(config: "AksharaSFTConfig") -> None:
    """FSDP2 trains with Muon (`MuonAdamW` gathers whole matrices to their owners); FSDP1 (flat 1-D shards) and
    state dict types whose final save writes no weights are refused before any work."""
    settings = _fsdp_settings(config)
    if settings is not None:
        _check_fsdp_settings(*settings)


def _pretokenized_mask_rule(args: AksharaSFTConfig, dataset) -> AksharaSFTConfig:
    """`assistant_only_loss` on pre-tokenized rows: TRL refuses the flag for them ("not conversational") but always
    applies their `assistant_masks` column, so the flag is satisfied by that column and passed to TRL switched off
    (on a copy: the caller's config keeps it for conversational data)."""
    columns = getattr(dataset, "column_names", None)
    if not args.assistant_only_loss or not columns or "input_ids" not in columns or "messages" in columns:
        return args
    if "assistant_masks" not in columns:
        raise AksharaError(
            "assistant_only_loss (the sft stage's default) needs conversations (`messages`) or pre-tokenized rows "
            "with an `assistant_masks` column; these rows have neither: add the mask or set assistant_only_loss false"
        )
    args = copy.copy(args)
    args.assistant_only_loss = False
    return args


def check_akshara_model(model: nn.Module) -> None:
    """The trainer's optimizer split and loss assume an Akshara model; fail before any data is prepared."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type != "akshara":
        raise AksharaError(
            f"MuonSFTTrainer trains Akshara models (config.model_type 'akshara'); got {type(model).__name__} "
            f"(model_type {model_type!r})"
        )
    split_parameters(model)


@contextlib.contextmanager
def _own_class(model: nn.Module):
    """The model's own class while it is saved. FSDP2's `fully_shard` gives the model a generated subclass
    (`FSDPAksharaForCausalLM`, defined in torch's FSDP package), and `save_pretrained` copies the source of the model
    class's module as remote code: the folder would get torch's `_fsdp_*.py` and an `auto_map` naming
    `_fsdp_init.FSDPAksharaForCausalLM` instead of `modeling_akshara.py` (measured, torch 2.13, transformers 5.23)."""
    from torch.distributed.fsdp import FSDPModule

    generated = type(model)
    if not isinstance(model, FSDPModule):
        yield
        return
    model.__class__ = next(base for base in generated.__mro__ if not issubclass(base, FSDPModule))
    try:
        yield
    finally:
        model.__class__ = generated


class MuonMomentumCallback(TrainerCallback):
    """Sets the Muon groups' momentum before each optimizer step (nanochat's `get_muon_momentum(step)`)."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        momentum = muon_momentum(state.global_step, self.warmup_steps)
        for group in optimizer.param_groups:
            if group.get("name") == "muon":
                group["momentum"] = momentum


class MuonSFTTrainer(SFTTrainer):
    """`SFTTrainer` with nanochat's optimizer (`MuonAdamW`), LR schedule, Muon momentum warmup and loss normalisation.

    Data: pre-tokenized rows with `input_ids` and `assistant_masks` (1 = supervised); TRL turns them into `labels`
    (-100 where the mask is 0), pads each batch to its longest row (labels -100 on pads, pad id = the tokenizer's
    `pad_token`; set to nanochat's `<|assistant_end|>` when the tokenizer has no pad token) or, with `padding_free` /
    `packing`, concatenates rows with reset `position_ids` and `cu_seq_lens_*` (attention kept within each row).

    Loss normalisation (`args.loss_normalization`), for a step of micro-batches b (over accumulation and processes)
    with per-token losses l and supervised-token counts n_b:
      - "nanochat" (default, reproduces the Akshara runs): mean over b of (sum of l in b) / n_b. Every micro-batch
        weighs the same however many supervised tokens it has.
      - "tokens" (TRL's default): (sum of all l) / (sum of n_b). Every supervised token weighs the same; the result
        does not depend on how the step is split into micro-batches or processes.
    The two agree only when every micro-batch has the same number of supervised tokens.

    LR logging: besides `learning_rate` (the Muon group), each log has `lrm` (the multiplier used by the step just
    taken), `lr/<group>` for every optimizer group and `muon_momentum`.

    Model card: given `card_writer(folder, facts=..., overwrite=..., config=...)` (the training scripts pass
    `model_card.write_model_card`) and `card_facts(trainer)` (the run's facts so far: a `RunFacts` or its dict), every
    card the Trainer writes is that card, rendered from the facts at the current step: the one TRL writes into
    `output_dir` at each checkpoint (`create_model_card`, which `push_to_hub` also calls, so the Hub gets it) and one in
    each folder the Trainer saves (`checkpoint-N`, the final `save_model`; with the facts as `run_facts.json` when
    `card_facts` gives a `RunFacts`). While training, the facts say so (`in_progress`, the steps so far of those
    planned). The Trainer's folders are its own: their README.md is replaced
    (as TRL does). Without a card writer, or for a PEFT adapter (which keeps PEFT's README), TRL's card as ever.
    """

    def __init__(self, model, args: AksharaSFTConfig, card_writer=None, card_facts=None, **kwargs):
        if not isinstance(args, AksharaSFTConfig):
            raise AksharaError(f"MuonSFTTrainer needs an AksharaSFTConfig, got {type(args).__name__}")
        if card_writer is not None and card_facts is None:
            raise AksharaError("card_writer needs card_facts: a function of the trainer giving the run's facts so far "
                               "(akshara_hf.training.training_log.run_facts bound to the run)")
        self.card_writer, self.card_facts = card_writer, card_facts
        self._warm_start_pending = False  # FSDP2: warm-started after Accelerate shards the model (create_scheduler)
        if isinstance(model, nn.Module):
            check_akshara_model(model)
        tokenizer = kwargs.get("processing_class")
        if (
            isinstance(tokenizer, PreTrainedTokenizerBase)
            and tokenizer.pad_token is None
            and NANOCHAT_PAD_TOKEN in tokenizer.get_vocab()
        ):
            tokenizer.pad_token = NANOCHAT_PAD_TOKEN
        if kwargs.get("optimizers", (None, None))[0] is None and kwargs.get("optimizer_cls_and_kwargs") is None:
            # The Trainer treats a first element that is not an Optimizer class as a factory: `factory()(model, **kw)`.
            kwargs["optimizer_cls_and_kwargs"] = (
                lambda: MuonAdamW.from_model,
                {
                    "matrix_lr": args.matrix_lr,
                    "embedding_lr": args.embedding_lr,
                    "unembedding_lr": args.unembedding_lr,
                    "init_lr_frac": args.init_lr_frac,
                    "weight_decay": args.weight_decay,
                    "scalar_lr": args.scalar_lr,
                    "adapter_lr": args.adapter_lr,
                },
            )
        peft_config = kwargs.get("peft_config")
        if peft_config is not None and getattr(peft_config, "task_type", "") is None:
            # Without a task type PEFT saves the adapter with an `auto_mapping` to this package's module, which
            # AutoPeftModelForCausalLM refuses to import (and which does not exist where only the Hub files are).
            kwargs["peft_config"] = copy.copy(peft_config)
            kwargs["peft_config"].task_type = "CAUSAL_LM"
        args = _pretokenized_mask_rule(args, kwargs.get("train_dataset"))
        callbacks = [*(kwargs.pop("callbacks", None) or []), MuonMomentumCallback(args.muon_momentum_warmup_steps)]
        super().__init__(model, args, callbacks=callbacks, **kwargs)
        check_akshara_model(self.model)  # a model given by name is loaded by SFTTrainer
        if self.is_deepspeed_enabled:  # set up some other way than the config saw
            raise AksharaError("DeepSpeed is not supported with Muon (ZeRO splits the matrices): use DDP or FSDP2")
        if self.is_fsdp_enabled:
            plugin = self.accelerator.state.fsdp_plugin
            kind = plugin.state_dict_type
            _check_fsdp_settings(str(plugin.fsdp_version), getattr(kind, "name", str(kind)))
        elif _fsdp_settings(self.args) is not None and self.args.world_size > 1:
            logger.warning(
                "FSDP was asked for, but Accelerate set up DDP (it sets up FSDP on GPUs only): every process holds "
                "whole weights, and Muon's matrices are split between the processes as under DDP"
            )
        self._progress: list[float] | None = None  # "sft-2026": data progress after each step (create_scheduler)
        self._token_bytes = torch.as_tensor(token_byte_lengths(self.processing_class)) if args.eval_bpb else None
        self._bpb_sums = torch.zeros(2, dtype=torch.float64)  # nats, bytes over the current evaluation

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        # Every rank comes here; only the saving one writes optimizer.pt. Under DDP each rank holds the Muon state of
        # its own matrices, so all of them first gather the whole state (a collective), then drop the copy.
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # inside Accelerate's wrapper
        if not isinstance(optimizer, MuonAdamW):
            return super()._save_optimizer_and_scheduler(output_dir)
        optimizer.consolidate_state_dict()
        try:
            if self.is_fsdp_enabled:
                self._save_fsdp_checkpoint(optimizer, output_dir)
            else:
                super()._save_optimizer_and_scheduler(output_dir)
        finally:
            optimizer.release_consolidated_state()

    def _save_fsdp_checkpoint(self, optimizer: MuonAdamW, output_dir: str) -> None:
        """Under FSDP the Trainer saves the model for resuming with Accelerate's `save_fsdp_model` (kept) and the
        optimizer with `save_fsdp_optimizer`, i.e. torch.distributed.checkpoint's `get_optimizer_state_dict`, which
        takes one torch optimizer's flat state (`MuonAdamW`'s nests two) and treats tensors that are not DTensors as
        the same on every rank (the Muon state lives on each matrix's owner only). So the optimizer goes to
        `optimizer.pt` as on one process: consolidated, whole tensors, loadable on any number of processes."""
        from accelerate.utils import save_fsdp_model
        from transformers.distributed.fsdp import get_fsdp_ckpt_kwargs
        from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

        save_fsdp_model(self.accelerator.state.fsdp_plugin, self.accelerator, self.model, output_dir,
                        **get_fsdp_ckpt_kwargs())  # fmt: skip
        if self.args.should_save:
            torch.save(optimizer.state_dict(), os.path.join(output_dir, OPTIMIZER_NAME))
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # Under FSDP the Trainer would read the optimizer with Accelerate's `load_fsdp_optimizer`; ours is in
        # optimizer.pt (see `_save_fsdp_checkpoint`), read as on one process: every rank loads the whole state and
        # keeps its share (`MuonAdamW.load_state_dict`).
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        if checkpoint is None or not self.is_fsdp_enabled or not isinstance(optimizer, MuonAdamW):
            return super()._load_optimizer_and_scheduler(checkpoint)
        from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

        paths = [os.path.join(checkpoint, name) for name in (OPTIMIZER_NAME, SCHEDULER_NAME)]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise AksharaError(f"{checkpoint}: no {os.path.basename(missing[0])} to resume the optimizer from (a "
                               "checkpoint this trainer wrote has optimizer.pt and scheduler.pt)")
        self.optimizer.load_state_dict(torch.load(paths[0], map_location="cpu", weights_only=True))
        self.lr_scheduler.load_state_dict(torch.load(paths[1], weights_only=True))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys: list[str] | None = None):
        # Bits per byte needs the per-token losses, which TRL's fused LM head computes but `compute_loss` does not
        # return (asking it for outputs costs a second, full-logits forward). So with `eval_bpb` the eval step runs the
        # fused head itself, once, and accumulates nanochat's two sums, gathered over processes.
        if self._token_bytes is None:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs, use_cache=False, fused_lm_head=True)
        labels = inputs["labels"][:, 1:]
        nats, num_bytes = bpb_from_losses(-outputs.log_probs.float().cpu(), labels.cpu(), self._token_bytes)
        sums = torch.tensor([[nats, num_bytes]], dtype=torch.float64, device=outputs.loss.device)
        self._bpb_sums += self.accelerator.gather_for_metrics(sums).sum(0).cpu()
        return outputs.loss.detach(), None, None

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None):
        # TRL calls this before each checkpoint for `output_dir` (what `push_to_hub` uploads; `push_to_hub` calls it
        # too): with a card writer the card there is ours, of the run so far, even before the weights are saved.
        if not self._writes_own_card():
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if self.is_world_process_zero():
            self._write_card(self.args.output_dir)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        with _own_class(self.accelerator.unwrap_model(self.model)):
            super()._save(output_dir, state_dict)
        # Every folder the Trainer saves (checkpoint-N, the final save_model) carries the card of its own step.
        if self.args.should_save and self._writes_own_card():
            self._write_card(self.args.output_dir if output_dir is None else output_dir, keep_facts=True)

    def _writes_own_card(self) -> bool:
        if self.card_writer is None:
            return False
        if is_peft_available():
            from peft import PeftModel

            return not isinstance(self.accelerator.unwrap_model(self.model), PeftModel)
        return True

    def _write_card(self, folder: str, keep_facts: bool = False) -> None:
        facts = self.card_facts(self)
        if keep_facts and hasattr(facts, "write"):
            # A saved folder keeps the facts its card was rendered from (`RunFacts.write`: run_facts.json), so
            # `akshara-hf model-card FOLDER --repo-id ...` can render it again, e.g. to publish a checkpoint.
            facts.write(folder)
        facts = facts.to_dict() if hasattr(facts, "to_dict") else dict(facts)
        os.makedirs(folder, exist_ok=True)
        config = self.accelerator.unwrap_model(self.model).config.to_dict()  # the folder may not hold config.json yet
        self.card_writer(folder, facts=facts, overwrite=False, config=config)  # its own card and curve only

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        # A fresh run (not a resumed one: the Trainer loads the checkpoint's state afterwards) warm-starts here; under
        # FSDP2 once Accelerate has sharded the model (`create_scheduler`): its switch to the sharded parameters leaves
        # behind any state keyed by the old ones.
        if fresh and self.args.warm_start_optimizer and self.state.global_step == 0:
            if self.is_fsdp_enabled:
                self._warm_start_pending = True
            else:
                self._warm_start(self.optimizer)
        return optimizer

    def _warm_start(self, optimizer) -> None:
        from akshara_hf.training.warm_start import warm_start_optimizer

        folder = getattr(self.accelerator.unwrap_model(self.model), "name_or_path", None)
        if not folder or not os.path.isdir(folder):
            raise AksharaError(f"warm_start_optimizer: the model was not loaded from a local folder ({folder!r}); "
                               "give model_name_or_path a folder convert-nanochat wrote (or a nanochat checkpoint)")
        count = warm_start_optimizer(getattr(optimizer, "optimizer", optimizer), folder)
        if self.is_world_process_zero():
            print(f"warm-started the optimizer state of {count} tensors from {folder} (learning rates: this "
                  "run's)", file=sys.stderr)

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        # bos_bestfit: TRL tokenizes (or takes the pre-tokenized rows), builds the labels and cuts each conversation to
        # max_length, unpacked; the rows are then packed here, nanochat's way, instead of by TRL's `pack_dataset`.
        if not (packing and args.packing_strategy == "bos_bestfit"):
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        from datasets import Dataset
        from trl.trainer.utils import global_then_local_main_first

        from akshara_hf.tokenization.chat import special_token_ids

        if not isinstance(dataset, Dataset):
            raise AksharaError(f"packing_strategy bos_bestfit packs a datasets.Dataset; the {dataset_name} data is "
                               f"a {type(dataset).__name__}")
        bos = special_token_ids(getattr(processing_class, "tokenizer", processing_class))["<|bos|>"]
        rows = super()._prepare_dataset(dataset, processing_class, args, False, formatting_func, dataset_name)
        with global_then_local_main_first():
            return pack_bos_bestfit(rows, args.max_length + 1, bos, args.packing_buffer_size)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # Written by hand: no `lr_scheduler_type` equals nanochat's multipliers at every step ("linear" computes
        # (N - s) / N, which differs from 1 - s / N in the last bit; "warmup_stable_decay" starts its decay from 1.0 at
        # an integer step, while nanochat's mid schedule is already below 1 at the first step past 80% progress).
        if self._warm_start_pending:  # FSDP2: the optimizer now holds the sharded parameters
            self._warm_start_pending = False
            self._warm_start(self.optimizer)
        if self.lr_scheduler is None:
            if self.args.schedule == "sft":
                multiplier = partial(sft_lr_multiplier, num_steps=num_training_steps)
            elif self.args.schedule == "sft-2026":
                self._progress = self._step_progress(num_training_steps)
                multiplier = progress_schedule(
                    self._progress, self.args.warmup_ratio, self.args.warmdown_ratio, self.args.final_lr_frac
                )
            else:
                multiplier = partial(
                    mid_lr_multiplier, num_steps=num_training_steps, warmdown_ratio=self.args.warmdown_ratio
                )
            self.lr_scheduler = LambdaLR(self.optimizer if optimizer is None else optimizer, multiplier)
            self._created_lr_scheduler = True  # as Trainer.create_scheduler: rebuilt for the next train() call
        return self.lr_scheduler

    def _step_progress(self, num_training_steps: int) -> list[float]:
        """Data progress after each step ("sft-2026"): from the rows' conversation counts when the rows are known and
        taken in order, else by steps (a dataset without a length: the Trainer runs `max_steps`)."""
        dataset = self.train_dataset
        try:
            rows = len(dataset)
        except TypeError:
            return [(step + 1) / num_training_steps for step in range(num_training_steps)]
        if not rows:
            raise AksharaError("the training data has no rows")
        counts = conversations_per_row(dataset, in_order=self.args.train_sampling_strategy == "sequential")
        return step_progress(
            counts, num_training_steps, self.args.per_device_train_batch_size, self.args.gradient_accumulation_steps,
            self.args.world_size, self.args.dataloader_drop_last,
        )  # fmt: skip

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.args.loss_normalization == "nanochat":
            # Without a token count TRL divides each micro-batch's loss sum by its own supervised tokens, and the
            # Trainer divides by the number of micro-batches (DDP then averages over processes): nanochat's
            # `loss / grad_accum_steps` on a per-micro-batch mean.
            num_items_in_batch = None
        return batch_samples, num_items_in_batch

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "eval_loss" in logs and self._bpb_sums[1] > 0:
            logs["eval_bpb"] = bits_per_byte(float(self._bpb_sums[0]), int(self._bpb_sums[1]))
            self._bpb_sums.zero_()
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        if "learning_rate" in logs and groups and groups[0].get("initial_lr"):
            lrm = logs["learning_rate"] / groups[0]["initial_lr"]
            logs["lrm"] = lrm
            progress = getattr(self, "_progress", None)
            if progress and self.state.global_step > 0:  # of the step just taken
                logs["progress"] = progress[min(self.state.global_step, len(progress)) - 1]
            for index, group in enumerate(groups):
                logs[f"lr/{group.get('name', index)}"] = group["initial_lr"] * lrm
                if group.get("name") == "muon":
                    logs["muon_momentum"] = group["momentum"]
        super().log(logs, start_time)


__all__ = [
    "AksharaSFTConfig", "MuonSFTTrainer", "MuonMomentumCallback", "parse_config", "check_akshara_model", "MIN_MAX_LENGTH",
]
