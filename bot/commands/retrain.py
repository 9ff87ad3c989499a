"""The nightly retrain: feedback → datasets → encoder fine-tuning (+ sentiment head) → new version
→ gate against the champion on a frozen held-out set → promote (the running bot hot-reloads) or reject.

    python training/retrain.py [--device auto|cpu|cuda] [--method full|lora] [--dry-run] [--since WHEN]
                               [--force] [--json] [--quiet]
    csbot retrain              (the same code and options)

This module is both: `csbot retrain` registers it, and training/retrain.py (the file cron runs) only
puts the repository on the path and calls `script_main`. The run itself is training/pipeline.py.

Only CSBOT_HOME (or a csbot.toml) needs to be set. Exit codes:

    0  promoted: a new champion is served
    0  nothing to do because the feedback table is empty (a fresh install; a message says so)
    3  nothing to do (message says why: no new feedback, no model yet, another retrain holds the lock)
    4  rejected by the gate: the champion keeps serving (the report says which rule failed)
    5  not promoted: another writer (ingest, forget, `csbot models`) changed the champion while the
       run trained; the feedback is not consumed, so the next run trains on the new champion
    6  nothing learned yet: feedback came, but too few new items (fewer than min_new_examples; the
       message says how many more labelled votes are needed) or too little held-out data to judge a
       candidate; the feedback is not consumed and waits for the next run
    1  error (the champion keeps serving; the log and the training-runs table say what happened)
    2  bad usage or configuration

A dry run (`--dry-run`) reads the feedback, builds the datasets and makes every check the real run
makes before training; it trains nothing and writes nothing but its log. It exits 0 with what a run
would train on, or with the real run's code (3, 6) and its message when a run would not train. Every other run is recorded in the store's
training-runs table and, when it got as far as training, in `CSBOT_HOME/reports/` (JSON and
Markdown; `retrain-latest.json` is always the newest). The log goes to stderr and to
`CSBOT_HOME/logs/retrain-<time>.log`. See docs/retrain.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from core.errors import CsbotError, UserError
from core.settings import ConfigError, Settings
from training.run_state import EXIT_USAGE


def register(subparsers) -> None:
    p = subparsers.add_parser("retrain", help="fine-tune on feedback, gate against the champion, promote if better")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="training and scoring device (default: the device setting)")
    parser.add_argument("--dry-run", action="store_true", help="build the datasets and report them; train and write nothing")
    parser.add_argument("--since", metavar="WHEN", help="read feedback newer than WHEN (date, ISO time or age like 7d) "
                        "instead of since the last run")
    parser.add_argument("--force", action="store_true", help="train even with less new data than min_new_examples")
    parser.add_argument("--method", choices=["full", "lora"], help="top-layer fine-tuning: full weights or LoRA (default: config)")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="log warnings only on stderr (the log file keeps everything)")


def run(args) -> int:
    """The shared body of `python training/retrain.py` and `csbot retrain`."""
    from training.pipeline import log, retrain

    try:
        settings = Settings.load(device=args.device, retrain_device=args.device, retrain_method=args.method)
        config = settings.retrain
        if args.since is not None:
            from core.clock import parse_since

            parse_since(args.since)  # a bad --since is bad usage, not a failed run
    except (ConfigError, CsbotError) as exc:
        print(f"retrain: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from core.output import Progress, out

    # Our progress line on a terminal (not with --quiet, not when stderr is a file or pipe); the
    # stage log lines print above it.
    with Progress("retraining", quiet=args.quiet) as progress:
        log.addFilter(progress.filter)
        try:
            outcome = retrain(settings, config, since=args.since, force=args.force, dry_run=args.dry_run,
                              quiet=args.quiet)
        finally:
            log.removeFilter(progress.filter)

    if args.json:
        out(json.dumps(outcome.to_json(), default=str))
    else:
        out(outcome.message)
    return outcome.exit_code


def main(argv: list[str] | None = None) -> int:
    """`python training/retrain.py`: the same options and body as `csbot retrain`."""
    parser = argparse.ArgumentParser(prog="retrain", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    from core import output
    from core.runtime import quiet_libraries

    # As under `csbot retrain`: stdout carries only the result (one JSON object with --json);
    # whatever the libraries print while training goes to stderr.
    quiet_libraries()
    output.set_stdout(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return run(args)
    finally:
        output.set_stdout(None)


def script_main(argv: list[str] | None = None) -> int:
    """`main` with the script's last resorts: Ctrl-C is 130, a user error one line and exit 2."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        return 130
    except UserError as exc:
        print(f"retrain: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
