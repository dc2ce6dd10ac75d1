"""Recipes: one YAML file parsed, with command-line overrides, into typed dataclasses by TRL's `TrlParser`.

What `TrlParser` does not: every failure is one `AksharaError` line (a missing or unreadable `--config`, bad YAML,
unknown keys, a value of the wrong type, an abbreviated or unknown flag) instead of a traceback or argparse's
800-option usage; a field typed as a dataclass with `from_mapping` (the `data:` section, `DataSection`) is built
from its YAML mapping with paths relative to the recipe file, as TRL's `DatasetMixtureConfig` builds its
`datasets:`; `--config` takes a file or a packaged recipe's name (`akshara_hf.training.shipped`), and a recipe's
`./`/`../` model, tokenizer and mixture folders are relative to it too; `--help` leads with the recipe's own options (`--help-all` lists every `TrainingArguments` field).
"""

import argparse
import dataclasses
import os
import sys
import types
import typing
from pathlib import Path

from trl import TrlParser

from akshara_hf.errors import AksharaError


def _from_mapping_type(annotation):
    """The dataclass in `annotation` (e.g. `DataSection | str | None`) that builds itself from a mapping, if any."""
    members = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for member in members:
        if dataclasses.is_dataclass(member) and hasattr(member, "from_mapping"):
            return member
    return None


class RecipeParser(TrlParser):
    """`TrlParser` for recipes; `recipe_fields` are the option names `--help` shows first."""

    def __init__(self, dataclass_types, prog: str | None = None, description: str | None = None,
                 recipe_fields: tuple[str, ...] = ()):
        # allow_abbrev=False: `--max_step 5` must not silently mean `--max_steps 5` (or anything else).
        super().__init__(dataclass_types, prog=prog, description=description, allow_abbrev=False, add_help=False)
        self.recipe: Path | None = None
        self.recipe_fields = recipe_fields
        self._typed = {}
        for dtype in self.dataclass_types:
            hints = typing.get_type_hints(dtype)
            for field in dataclasses.fields(dtype):
                builder = _from_mapping_type(hints.get(field.name))
                if builder is not None:
                    self._typed[field.name] = builder

    def error(self, message):  # argparse's own: usage (every TrainingArguments option) + message, exit 2
        raise AksharaError(message)

    def recipe_actions(self) -> list[argparse.Action]:
        """The options `--help` shows after `--config`: the recipe's own, in the parser's order."""
        return [action for action in self._actions
                if action.dest in self.recipe_fields and action.option_strings[0] == f"--{action.dest}"]

    def option_count(self) -> int:
        return sum(1 for action in self._actions if action.option_strings)

    def format_help(self) -> str:
        """The recipe's options first: `--config`, the run options, Akshara's trainer options (the same text as the
        light `--help` of the training scripts, `akshara_hf.training.help`)."""
        from akshara_hf.training.help import format_recipe_help, option_record

        return format_recipe_help(self.prog, self.description, [option_record(a) for a in self.recipe_actions()],
                                  self.option_count())

    def parse_args_and_config(self, args=None, **kwargs):
        args = list(sys.argv[1:] if args is None else args)
        if "-h" in args or "--help" in args:
            self.print_help()
            raise SystemExit(0)
        if "--help-all" in args:
            print(super().format_help())
            raise SystemExit(0)
        config = {}
        if "--config" in args:
            index = args.index("--config")
            if index + 1 >= len(args) or args[index + 1].startswith("--"):
                raise AksharaError("--config: expected a recipe file")
            name = args[index + 1]
            del args[index:index + 2]
            if "--config" in args:
                raise AksharaError("--config given twice")
            from akshara_hf.data.mixture import read_recipe
            from akshara_hf.training.shipped import RELATIVE_KEYS, find_recipe, is_recipe_relative

            self.recipe = find_recipe(name)  # a file, or a packaged recipe's name (`tiny-sft`)
            config = read_recipe(self.recipe)
            for key in RELATIVE_KEYS:  # `./x`, `../x`: relative to the recipe, as the data: paths are
                if is_recipe_relative(config.get(key)):
                    config[key] = os.path.normpath(self.recipe.resolve().parent / config[key])
            env = config.pop("env", {})
            if not isinstance(env, dict):
                raise AksharaError(f"{self.recipe}: env must be a mapping of environment variables")
            for key, value in env.items():
                os.environ[str(key)] = str(value)
        for name, builder in self._typed.items():
            if config.get(name) is not None and not isinstance(config[name], str):
                config[name] = builder.from_mapping(config[name], self.recipe, self.recipe.resolve().parent)
        unknown = [key for key in config if key not in {action.dest for action in self._actions}]
        if unknown:
            raise AksharaError(f"{self.recipe}: unknown keys {', '.join(map(str, unknown))} (not a recipe, run or "
                               "trainer option: see --help)")
        self.set_defaults_with_config(**config)
        where = f"{self.recipe}: " if self.recipe else ""
        try:
            namespace, unused = self.parse_known_args(args)  # before the dataclasses, whose own checks speak first
            if unused:
                raise AksharaError(f"unrecognized arguments: {' '.join(unused)} (see --help)")
            _check_precision_device(namespace)
            return tuple(self.parse_args_into_dataclasses(args=args, look_for_args_file=False))
        except AksharaError as error:
            raise AksharaError(f"{where}{error}") from None
        except (ValueError, TypeError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise AksharaError(f"{where}{first}") from None


def _check_precision_device(namespace) -> None:
    """A recipe that trains in bf16 on a GPU (the seed runs: `bf16: true`, no `use_cpu`) on a machine without one is
    refused here, saying what to do, before any model or data is loaded (transformers' own check says only "Your setup
    doesn't support bf16/gpu"). Same condition as `TrainingArguments`'."""
    bf16 = getattr(namespace, "bf16", None)
    if bf16 is None:  # SFTConfig's default: bf16 unless fp16 is set
        bf16 = not getattr(namespace, "fp16", False)
    if not (bf16 or getattr(namespace, "bf16_full_eval", False)):
        return
    if getattr(namespace, "use_cpu", False):
        return
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    if is_torch_bf16_gpu_available() or is_torch_xla_available():
        return
    raise AksharaError("this recipe trains in bf16 on a GPU (bf16: true, use_cpu not set), and this machine has no GPU "
                       "that supports bf16: add --bf16 false --use_cpu true to train on the CPU (a d20 model takes "
                       "days there), or run a tiny recipe (akshara-hf recipes lists them)")


def recipe_parser(*extra_dataclasses, prog: str | None = None, description: str | None = None,
                  defaults: dict | None = None, helps: dict | None = None) -> RecipeParser:
    """The parser of `AksharaSFTConfig` and `extra_dataclasses`; `defaults` / `helps` replace options' defaults and
    help texts (a training script's own stage)."""
    from akshara_hf.training.trainer import AksharaSFTConfig

    not_inputs = ("learning_rate", "gradient_checkpointing", "ddp_find_unused_parameters")
    own = [name for name in AksharaSFTConfig.__annotations__ if name not in not_inputs]
    extra = [f.name for dtype in extra_dataclasses for f in dataclasses.fields(dtype)]
    parser = RecipeParser((AksharaSFTConfig, *extra_dataclasses), prog=prog, description=description,
                          recipe_fields=(*extra, *own, "output_dir", "max_steps", "num_train_epochs",
                                         "per_device_train_batch_size", "per_device_eval_batch_size", "eval_steps",
                                         "save_steps", "logging_steps", "seed", "bf16", "use_cpu",
                                         "resume_from_checkpoint"))
    for action in parser._actions:
        if action.dest in (helps or {}):
            action.help = helps[action.dest]
    if defaults:
        parser.set_defaults(**defaults)
    return parser


def parse_config(args: list[str] | None = None, *extra_dataclasses, prog: str | None = None,
                 description: str | None = None) -> tuple:
    """`AksharaSFTConfig` (and `extra_dataclasses`) from `--config recipe.yaml` and flags; returns the instances."""
    return recipe_parser(*extra_dataclasses, prog=prog, description=description).parse_args_and_config(args)
