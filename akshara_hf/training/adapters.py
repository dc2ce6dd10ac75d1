"""PEFT adapters (LoRA, DoRA, rsLoRA) in recipes: TRL's `ModelConfig` PEFT keys, turned into a `LoraConfig` by TRL.

TRL's own `ModelConfig` cannot be added to a recipe's dataclasses as is: its `model_name_or_path`, `dtype` and
quantization keys collide with or duplicate the run's. `AksharaPeftArguments` carries just its PEFT keys, same names,
types and meaning, and `peft_config` hands them to TRL's `get_peft_config`, so a recipe says

    use_peft: true
    lora_r: 16
    lora_alpha: 32
    lora_target_modules: all-linear

exactly as a TRL script's command line would. The trainer then puts the adapter weights on AdamW at `adapter_lr`
(`akshara_hf.training.optim.MuonAdamW` says why not Muon) and saves the adapter (`adapter_config.json`,
`adapter_model.safetensors`); `merge_and_unload()` gives back a plain Akshara model.
"""

from dataclasses import dataclass, field

from akshara_hf.errors import AksharaError

# Akshara is not in PEFT's per-architecture table of default LoRA targets: without a choice, PEFT would refuse.
DEFAULT_TARGET_MODULES = "all-linear"


@dataclass
class AksharaPeftArguments:
    """TRL `ModelConfig`'s PEFT keys (defaults as TRL's, except `lora_target_modules`: "all-linear")."""

    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of the whole model."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling alpha / r, or alpha / sqrt(r))."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt: names, or 'all-linear' (default: all-linear)."}
    )
    lora_target_parameters: list[str] | None = field(
        default=None, metadata={"help": "Parameters to adapt directly (PEFT's target_parameters)."}
    )
    lora_modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full beside the adapter (e.g. lm_head)."}
    )
    lora_task_type: str = field(default="CAUSAL_LM", metadata={"help": "PEFT task type."})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised LoRA: scaling alpha / sqrt(r)."})
    use_dora: bool = field(default=False, metadata={"help": "DoRA: weight-decomposed LoRA."})

    def __post_init__(self):
        # As TRL's ModelConfig: a one-element list from the command line or YAML is that one name ("all-linear").
        if isinstance(self.lora_target_modules, list) and len(self.lora_target_modules) == 1:
            self.lora_target_modules = self.lora_target_modules[0]
        if self.lora_target_modules is None:
            self.lora_target_modules = DEFAULT_TARGET_MODULES
        if not (isinstance(self.lora_r, int) and self.lora_r > 0):
            raise AksharaError(f"lora_r must be a positive integer, got {self.lora_r!r}")
        if not self.lora_alpha > 0:
            raise AksharaError(f"lora_alpha must be > 0, got {self.lora_alpha!r}")
        if not 0 <= self.lora_dropout < 1:
            raise AksharaError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")


def peft_config(arguments: AksharaPeftArguments):
    """The `LoraConfig` TRL builds from these keys (TRL's `get_peft_config`), or None without `use_peft`."""
    if not arguments.use_peft:
        return None
    try:
        import peft  # noqa: F401
    except ImportError:
        raise AksharaError("use_peft needs the peft package: pip install 'akshara-hf[peft]'") from None
    from trl import get_peft_config

    try:
        return get_peft_config(arguments)
    except (ValueError, TypeError) as error:
        raise AksharaError(f"bad PEFT settings: {error}") from None


__all__ = ["AksharaPeftArguments", "peft_config"]
