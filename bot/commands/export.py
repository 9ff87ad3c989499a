"""`csbot export`: write stored answers, votes and monitored messages as JSON Lines.

    csbot export [--since DATE] [--kind answers|feedback|messages ...] [--output FILE]

Each line is one record with a "type" key: "answer", "feedback" or "monitored_message".
DATE is an ISO date or time (naive means UTC: 2025-01-31, 2025-01-31T09:30:00Z) or an age
such as 7d. Records are selected by their `time` (for votes: the last change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from core.output import stdout

KIND_NAMES = {"answers": "answers", "feedback": "feedback", "messages": "monitored_messages"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write stored answers, votes and monitored messages as JSON Lines",
        description="Write stored answers, votes and monitored messages as JSON Lines, one record "
        'per line with a "type" key. Naive dates and times are UTC.',
    )
    parser.add_argument("--since", metavar="DATE", help="only records after this date/time, or age like 7d")
    parser.add_argument(
        "--kind", action="append", choices=sorted(KIND_NAMES), help="what to export (repeatable; default all)"
    )
    parser.add_argument("--output", "-o", type=Path, metavar="FILE", help="write here instead of stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from store import Store, parse_since

    since = parse_since(args.since)  # validate before opening anything
    kinds = [KIND_NAMES[k] for k in (args.kind or KIND_NAMES)]
    store = Store.from_settings(Settings.load())
    try:
        records = store.export(since, kinds=kinds)
        if args.output is None:
            n = _write(records, stdout())
        else:
            n = _write_file(records, args.output)
    finally:
        store.close()
    print(f"exported {n} records" + (f" to {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def _write(records, fh) -> int:
    n = 0
    for record in records:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        n += 1
    fh.flush()
    return n


def _write_file(records, path: Path) -> int:
    """Write to a temporary file next to `path`, then rename: a crash never leaves half a file."""
    from core.errors import UserError

    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            n = _write(records, fh)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
