"""`akshara-hf recipes`: the recipes shipped with the package (listed, or one copied out to edit), and the runner
behind `akshara-hf sft` / `akshara-hf mid-train`.

Those two commands run the repository's own `training/sft.py` / `training/mid_train.py` (shipped in the wheel too,
see `akshara_hf.training.shipped`), as TRL's `trl sft` runs its packaged script: one copy of each script, and the
same run whether started from a clone with `python training/sft.py` or from an installed package.
"""

import argparse
import sys

RECIPE_FLAGS = ("Every other flag is a recipe key and overrides it (--max_steps 10, --output_dir DIR, "
                "--data '{sources: [...]}'); --help-all lists all of them.")


def add_training_command(subparsers, name: str, script: str, stages: str) -> None:
    """`akshara-hf NAME --config RECIPE [recipe flags]`: runs training/SCRIPT on the recipe."""
    p = subparsers.add_parser(
        name, allow_abbrev=False, help=f"train from a recipe (stage {stages}): a file or a packaged recipe's name",
        description=f"Run a recipe with stage {stages} (training/{script}). {RECIPE_FLAGS}",
        epilog=f"Example: akshara-hf {name} --config {'tiny-sft' if name == 'sft' else 'tiny-mid'} --max_steps 10")
    p.add_argument("--config", metavar="RECIPE", default=None,
                   help="a recipe file, or the name of a packaged recipe (`akshara-hf recipes` lists them)")
    p.set_defaults(func=lambda a: run_training_script(script, a.config, a.recipe_flags), recipe_flags=[])


def run_training_script(script: str, config: str | None, flags: list[str]) -> int:
    """Run training/SCRIPT in this process as `python training/SCRIPT --config RECIPE FLAGS` would."""
    import runpy

    from akshara_hf.training.shipped import find_recipe, training_script

    path = training_script(script)
    argv = ["--config", str(find_recipe(config))] if config is not None else []
    saved, sys.argv = sys.argv, [str(path), *argv, *flags]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as done:  # the script's own exit status (its errors are already printed, one line)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def list_recipes() -> int:
    from akshara_hf.training.shipped import describe, recipe_names, recipes_dir

    names = recipe_names()
    width = max(map(len, names))
    print(f"Recipes shipped in {recipes_dir()}:")
    for name in names:
        stage, text = describe(recipes_dir() / f"{name}.yaml")
        print(f"  {name:<{width}}  {stage:<4}  {text[:80] + ('…' if len(text) > 80 else '')}")
    print("Run one: akshara-hf sft --config tiny-sft (stage sft), akshara-hf mid-train --config tiny-mid (mid, base).\n"
          "Copy one to edit: akshara-hf recipes NAME --copy-to FILE.yaml")
    return 0


def show_or_copy(name: str, destination: str | None) -> int:
    from akshara_hf.errors import AksharaError
    from akshara_hf.training.shipped import packaged_recipe, copy_recipe, recipe_names

    if destination is None:
        path = packaged_recipe(name)
        if path is None:
            raise AksharaError(f"{name}: not a packaged recipe (packaged: {', '.join(recipe_names())})")
        print(path)
        return 0
    written, left = copy_recipe(name, destination)
    print(written)
    if left:
        print(f"note: {', '.join(left)} stay relative to {written.parent} (your own data): edit them to point at "
              "your files", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recipes", help="list the packaged recipes, print one's path, or copy one out to edit",
        description="Without NAME: list the recipes shipped with akshara-hf. With NAME: print its file's path, or "
                    "with --copy-to write an editable copy (never over an existing file; its paths to the shipped "
                    "samples become absolute).", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="a packaged recipe (tiny-sft, nanochat-telugu-d20-sft-v1, ...)")
    p.add_argument("--copy-to", metavar="FILE", default=None, help="write a copy of NAME here (must not exist)")
    p.set_defaults(func=recipes_command)


def recipes_command(args) -> int:
    from akshara_hf.errors import AksharaError

    if args.name is None and args.copy_to is not None:
        raise AksharaError("--copy-to: name the recipe to copy (akshara-hf recipes NAME --copy-to FILE)")
    return list_recipes() if args.name is None else show_or_copy(args.name, args.copy_to)
