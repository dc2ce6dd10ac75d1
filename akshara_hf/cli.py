"""`akshara-hf` command line. Each command module exposes `register(subparsers)`, which adds its subcommand with
`set_defaults(func=...)`; heavy imports stay inside the handlers so `--help` is fast."""

import argparse
import importlib
import sys

from .errors import AksharaError, one_line

COMMAND_MODULES = (
    "akshara_hf.convert",
    "akshara_hf.data.mixture",
    "akshara_hf.tokenizer",
    "akshara_hf.evaluation",
    "akshara_hf.chat_cli",
    "akshara_hf.serve_cli",
    "akshara_hf.demo",
    "model_card.publish",
)


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="akshara-hf", description="Train, publish and serve nanochat-family chat models on the Hugging Face stack."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None, modules: tuple[str, ...] = COMMAND_MODULES) -> int:
    """Run a command; bad input is one line on stderr and exit status 2. `modules` narrows the commands loaded."""
    args = build_parser(modules).parse_args(argv)
    try:
        return args.func(args) or 0
    except (AksharaError, OSError) as error:  # bad input, or a file the command could not read or write
        print(f"akshara-hf {args.command}: error: {one_line(error, limit=2000)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
