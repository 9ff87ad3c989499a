"""The `csbot` command line. Each sub-command lives in bot/commands/<name>.py: `register(subparsers)`
adds its parser and sets `func(args) -> int`. Heavy libraries (torch, sentence-transformers) are
imported inside the commands that need them.

While a command runs, `sys.stdout` points at stderr, so whatever a library prints goes to the log;
commands write their own results with `core.output.out` (the real stdout). Errors the user can act on
(bad input, a missing or read-only home, a full disk, a closed pipe, an unreachable service) are one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sqlite3
import sys

from bot import __version__
from core import output
from core.errors import CsbotError
from core.settings import ConfigError

DESCRIPTION = ("csbot answers customer-service questions from your knowledge base, offline, and runs "
               "as a Slack bot. Start with `csbot ingest PATH` (Markdown, text, CSV or JSONL articles), "
               "then `csbot ask \"QUESTION\"` or `csbot chat`; `csbot demo` shows it on a sample shop.")
EPILOG = ("All state (database, model versions) lives in $CSBOT_HOME, by default "
          "${XDG_DATA_HOME:-~/.local/share}/csbot. `csbot COMMAND --help` describes each command. "
          "Exit status: 0 success, 2 bad input or an error described on stderr.")

COMMAND_MODULES = [
    "bot.commands.demo",
    "bot.commands.ingest",
    "bot.commands.ask",
    "bot.commands.chat",
    "bot.commands.sentiment",
    "bot.commands.intents",
    "bot.commands.eval",
    "bot.commands.models",
    "bot.commands.feedback",
    "bot.commands.privacy",
    "bot.commands.export",
    "bot.commands.db",
    "bot.commands.serve",
    "bot.commands.report",
    "bot.commands.gaps",
    "bot.commands.retrain",
]

_STRERROR = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.ENOENT: "no such file or folder",
             errno.ENOTDIR: "a path component is not a folder"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csbot", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"csbot {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: what failed, where, and what to check."""
    what = _STRERROR.get(exc.errno) or (exc.strerror or str(exc)).lower()
    where = f": {exc.filename}" if exc.filename else ""
    line = f"{what}{where}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        line += " (disk full: free some space, or `csbot models prune`)"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        line += " (csbot needs to write under CSBOT_HOME; point it at a writable folder)"
    return line


def describe_sqlite_error(exc: sqlite3.Error) -> str | None:
    """One line for an SQLite error that did not come through the store (which names its file itself:
    store/schema.py `describe_error`), e.g. from an index under CSBOT_HOME."""
    from store.schema import FULL_BELOW_BYTES, free_bytes

    message = str(exc)
    home = os.environ.get("CSBOT_HOME") or "the csbot home"
    if "readonly" in message or "read-only" in message:
        return f"the database under {home} is read-only ({message}); csbot needs to write under CSBOT_HOME"
    if "unable to open" in message:
        return f"cannot open the database under {home} ({message}): is the folder missing or read-only?"
    if "disk is full" in message or "disk I/O" in message:
        free = free_bytes(os.path.join(home, "csbot.sqlite3")) if os.environ.get("CSBOT_HOME") else None
        if "disk is full" in message or (free is not None and free < FULL_BELOW_BYTES):
            return f"disk full: cannot write under {home} ({message}); free some space, or `csbot models prune`"
        return f"disk I/O error under {home} ({message}); check the disk (e.g. `dmesg`)"
    if "malformed" in message or "not a database" in message:
        return (f"a database under {home} is damaged ({message}); restore it from a backup, and check it with "
                "`sqlite3 FILE \"PRAGMA integrity_check\"`")
    return None


def _silence_stdout() -> None:
    """After a broken pipe: point stdout's descriptor at /dev/null so the final flush stays quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.runtime import quiet_libraries

    quiet_libraries()
    real_stdout = sys.stdout
    output.set_stdout(real_stdout)

    def fail(message: str) -> int:
        print(f"csbot {args.command}: error: {message}", file=sys.stderr, flush=True)
        return 2

    try:
        with contextlib.redirect_stdout(sys.stderr):
            code = int(args.func(args) or 0)
        real_stdout.flush()
        return code
    except (CsbotError, ConfigError) as exc:
        return fail(str(exc))
    except BrokenPipeError:
        _silence_stdout()
        return fail("the output was closed before csbot finished writing (broken pipe)")
    except sqlite3.Error as exc:
        line = describe_sqlite_error(exc)
        if line is None:
            raise
        return fail(line)
    except OSError as exc:
        if exc.errno not in _STRERROR:
            raise
        return fail(describe_os_error(exc))
    except KeyboardInterrupt:
        return 130
    finally:
        output.set_stdout(None)


if __name__ == "__main__":
    sys.exit(main())
