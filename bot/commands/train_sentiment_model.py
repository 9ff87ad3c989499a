"""Train the dedicated sentiment model: a LoRA adapter on all-MiniLM-L6-v2 plus a 3-way head.

    python training/train_sentiment_model.py [--data-dir ../shared/data] [--out models/assets/sentiment_lora.npz]
        [--base builtin:all-MiniLM-L6-v2] [--threads 2] [--max-steps 2400] [--batch-size 32]
        [--max-length 64] [--eval-every 600] [--seed 13] [--airline-weight 1.0]
        [--probe STEPS] [--val-rows N]

The command line of that script (which stays where the docs call it, as a shim that calls
`script_main`); it is no `csbot` subcommand. The data, the choices and the artefact are
training/train_sentiment_model.py; see docs/sentiment.md. Exit codes: 0 trained (or probed), 2 bad
usage or a data file missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.errors import UserError
from models.sentiment_model import BUILTIN_ARTEFACT, DEFAULT_BASE
from training import train_sentiment as ts
from training import train_sentiment_model as tsm


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ts.default_data_dir())
    parser.add_argument("--out", type=Path, default=BUILTIN_ARTEFACT)
    parser.add_argument("--base", default=DEFAULT_BASE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=600)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--airline-weight", type=float, default=ts.AIRLINE_WEIGHT,
                        help="extra loss weight of the airline rows against the SemEval rows (after per-source balancing)")
    parser.add_argument("--probe", type=int, default=0, help="time this many steps, print, and exit")
    parser.add_argument("--val-rows", type=int, default=0, help="smoke runs only: use the first N rows of each val set")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    rng = tsm.seeded(args.seed)
    started = time.time()
    try:
        train_splits, val_splits = tsm.load_data(args.data_dir, args.val_rows)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best_mean, best_line = tsm.train_model(args, train_splits, val_splits, rng, started)
    if args.probe:
        print(f"probe: {args.probe} steps in {time.time() - started:.0f}s")
        return 0
    print(f"\ndone in {time.time() - started:.0f}s; the artefact written last is the choice (mean val macro-R "
          f"{best_mean:.4f}):\n{best_line}")
    return 0


def script_main(argv: list[str] | None = None) -> int:
    """`python training/train_sentiment_model.py`: `main` as that script has always run it (argparse's
    own exit 2 on bad usage, 0 after --help)."""
    return main(argv)
