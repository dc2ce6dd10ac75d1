"""`akshara-hf` command line. Each command module exposes `register(subparsers)`, which adds its subcommand with
`set_defaults(func=...)`; heavy imports stay inside the handlers so `--help` is fast.

Commands of other installed packages join through the `akshara_hf.commands` entry-point group (setup.cfg):
`model_card`'s `publish` and `model-card` do, so this package never imports `model_card` (which imports it)."""

import argparse
import importlib
import os
import sys

from akshara_hf.errors import AksharaError, one_line
from akshara_hf.progress import quiet_library_bars_off_terminal
from akshara_hf.threads import configure_threads

COMMAND_MODULES = (
    "akshara_hf.conversion.convert",
    "akshara_hf.data.mixture",
    "akshara_hf.tokenization.tokenizer",
    "akshara_hf.evaluation.evaluate",
    "akshara_hf.cli.chat",
    "akshara_hf.cli.serve",
    "akshara_hf.cli.demo",
    "akshara_hf.cli.recipes",
    "akshara_hf.cli.sft",
    "akshara_hf.cli.mid_train",
)
PLUGIN_GROUP = "akshara_hf.commands"


def command_modules() -> tuple[str, ...]:
    """This package's command modules, then those installed packages declare in the `akshara_hf.commands` group."""
    from importlib.metadata import entry_points

    plugins = [entry.value for entry in entry_points(group=PLUGIN_GROUP)]
    return COMMAND_MODULES + tuple(dict.fromkeys(name for name in plugins if name not in COMMAND_MODULES))


class _OneLineParser(argparse.ArgumentParser):
    """argparse's errors without the usage block above them: one line, exit status 2, as every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(modules: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="akshara-hf", description="Train, publish and serve nanochat-family chat models on the Hugging Face stack."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules() if modules is None else modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None, modules: tuple[str, ...] | None = None) -> int:
    """Run a command; bad input is one line on stderr and exit status 2, Ctrl-C one line and status 130 (the shell's
    128 + SIGINT), wherever it lands. `modules` narrows the commands loaded."""
    try:
        return _main(argv, modules)
    except KeyboardInterrupt:
        words = [arg for arg in (sys.argv[1:] if argv is None else argv) if not arg.startswith("-")]
        print(f"akshara-hf{f' {words[0]}' if words else ''}: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None, modules: tuple[str, ...] | None) -> int:
    parser = build_parser(modules)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not hasattr(args, "recipe_flags"):  # only the training commands pass flags on (to the recipe)
        parser.exit(2, f"akshara-hf {args.command}: error: unrecognized arguments: {' '.join(unknown)} (see "
                       f"akshara-hf {args.command} --help)\n")
    if hasattr(args, "recipe_flags"):
        args.recipe_flags = unknown
    configure_threads()  # before torch is imported: OpenMP's idle threads sleep instead of spinning
    quiet_library_bars_off_terminal()
    try:
        return args.func(args) or 0
    except BrokenPipeError:  # `akshara-hf recipes | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail too
        return 0
    except (AksharaError, OSError) as error:  # bad input, or a file the command could not read or write
        print(f"akshara-hf {args.command}: error: {one_line(error, limit=2000)}", file=sys.stderr)
        return 2
    except Exception as error:  # a full disk under a library that does not say OSError (safetensors, torch.save)
        from akshara_hf.folders import is_disk_full

        if not is_disk_full(error, "."):
            raise
        print(f"akshara-hf {args.command}: error: no space left on device ({one_line(error)})", file=sys.stderr)
        return 2

