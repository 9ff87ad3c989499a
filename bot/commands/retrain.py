"""`csbot retrain`: the nightly retrain (feedback → fine-tuning → gate → promotion), the same code as
`python training/retrain.py`. Exit codes: 0 promoted (or an empty feedback table), 3 nothing to do,
4 rejected by the gate, 5 the champion changed while it trained (not promoted), 1 error, 2 bad usage.
See docs/retrain.md."""

from __future__ import annotations


def register(subparsers) -> None:
    from training.retrain import add_arguments

    p = subparsers.add_parser("retrain", help="fine-tune on feedback, gate against the champion, promote if better")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from training.retrain import run_cli

    return run_cli(args)
