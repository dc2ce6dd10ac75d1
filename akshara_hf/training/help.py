"""`python training/sft.py --help` in a fraction of a second: the recipe options without torch, TRL or transformers.

The options are fields of TRL's `SFTConfig` (through `AksharaSFTConfig`) and of `AksharaRunArguments`, so listing them
from the dataclasses means importing TRL, transformers and torch (tens of seconds on a busy machine). The help is
therefore built from a light description of those options, `recipe_options.json`, written from the real parser by
`python -m akshara_hf.training.help --write` (tests/test_help.py checks it is the real parser's, option by option,
and that both give the same text). `--help-all` (every `TrainingArguments` field) still builds the real parser.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OPTIONS_FILE = Path(__file__).with_name("recipe_options.json")
SCRIPT_STAGES = {"sft.py": ("sft",), "mid_train.py": ("mid", "base")}
ALL_STAGES = ("base", "mid", "sft")
CONFIG_HELP = ("the recipe YAML, or a packaged recipe's name (tiny-sft; `akshara-hf recipes` lists them); every key "
               "in it can be overridden by the flag of the same name")


def stages_of(script: str | None) -> tuple[str, ...]:
    return SCRIPT_STAGES.get(script, ALL_STAGES)


def description(script: str | None) -> str:
    stages = stages_of(script)
    other = [name for name in SCRIPT_STAGES if name != script]
    runs = f" ({other[0]} runs stage {' or '.join(SCRIPT_STAGES[other[0]])})" if script in SCRIPT_STAGES else ""
    return (f"Train an Akshara model from a recipe: this script runs stage {' or '.join(stages)}{runs}. "
            f"Example: --config training/recipes/{'tiny-sft' if 'sft' in stages else 'tiny-mid'}.yaml --max_steps 20")


def stage_help(script: str | None) -> str:
    """The `--stage` option's help for this script (its default is the script's first stage)."""
    stages = stages_of(script)
    return (f"base | mid | sft: decides the LR schedule and the defaults; {script or 'this script'} runs "
            f"{' or '.join(stages)}.")


def option_record(action: argparse.Action) -> dict:
    """What `--help` prints of one option, as plain JSON values (defaults as argparse prints them)."""
    return {
        "flags": list(action.option_strings),
        "dest": action.dest,
        "help": action.help,
        "default": None if action.default is None else str(action.default),
        "metavar": action.metavar if isinstance(action.metavar, (str, type(None))) else list(action.metavar),
        "choices": None if action.choices is None else [str(choice) for choice in action.choices],
        "nargs": action.nargs,
        "const": None if action.const is None else str(action.const),
        "takes_value": action.nargs != 0,
    }


def format_recipe_help(prog: str, text: str, options: list[dict], total: int) -> str:
    """The help text: `--config`, then the recipe options (records from `option_record`), then the pointer to
    `--help-all`. The real parser (`RecipeParser.format_help`) and the light path both print this."""
    short = argparse.ArgumentParser(prog=prog, description=text, add_help=False,
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    short.add_argument("--config", metavar="RECIPE", help=CONFIG_HELP)
    group = short.add_argument_group("recipe options")
    for option in options:
        kwargs = {"dest": option["dest"], "help": option["help"], "default": option["default"]}
        if option["takes_value"]:
            kwargs.update(metavar=tuple(option["metavar"]) if isinstance(option["metavar"], list) else option["metavar"],
                          choices=option["choices"], nargs=option["nargs"])
            if option["nargs"] == "?":
                kwargs["const"] = option["const"]
            group.add_argument(*option["flags"], **kwargs)
        else:
            group.add_argument(*option["flags"], action="store_true", **kwargs)
    return (short.format_help() + f"\nAny other field of TRL's SFTConfig / transformers' TrainingArguments is a "
            f"recipe key and a flag too ({total} options in all): --help-all lists them.\n")


def light_help(script: str) -> str | None:
    """The help of `script` from recipe_options.json; None when the file has no entry for it."""
    try:
        described = json.loads(OPTIONS_FILE.read_text(encoding="utf-8"))[script]
    except (OSError, ValueError, KeyError):
        return None
    return format_recipe_help(script, description(script), described["options"], described["total"])


def print_help_if_asked(argv: list[str], script: str) -> bool:
    """`-h` / `--help` among `argv`: print the light help and return True (the caller exits 0)."""
    if "-h" not in argv and "--help" not in argv:
        return False
    text = light_help(script)
    if text is None:
        return False  # the real parser prints it
    print(text, end="")
    return True


def write_options_file() -> dict:
    """recipe_options.json from the real parsers of both scripts (imports TRL, transformers, torch)."""
    from akshara_hf.training.run import recipe_parser

    described = {}
    for script in SCRIPT_STAGES:
        parser = recipe_parser(script)
        described[script] = {"options": [option_record(action) for action in parser.recipe_actions()],
                             "total": parser.option_count()}
    OPTIONS_FILE.write_text(json.dumps(described, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return described


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m akshara_hf.training.help --write")
    write_options_file()
    print(OPTIONS_FILE)
