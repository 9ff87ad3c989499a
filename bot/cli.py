"""The `csbot` command line: a thin dispatcher; each sub-command lives in bot/commands/<name>.py.

Each command module has `register(subparsers)` that adds its parser and sets `func(args) -> int`.
Heavy libraries (torch, sentence-transformers) are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bot import __version__
from bot.config import ConfigError
from bot.errors import CsbotError

COMMAND_MODULES = [
    "bot.commands.ingest",
    "bot.commands.ask",
    "bot.commands.chat",
    "bot.commands.sentiment",
    "bot.commands.eval",
    "bot.commands.models",
    "bot.commands.demo",
    "bot.commands.feedback",
    "bot.commands.privacy",
    "bot.commands.export",
    "bot.commands.serve",
    "bot.commands.report",
    "bot.commands.retrain",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csbot", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"csbot {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CsbotError, ConfigError) as exc:
        print(f"csbot {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
