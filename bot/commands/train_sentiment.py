"""Train the default 3-class sentiment head (negative / neutral / positive).

    python training/train_sentiment.py [--data-dir ../shared/data] [--out models/assets/sentiment_head.npz]
                                       [--encoder builtin:all-MiniLM-L6-v2] [--cache-dir DIR] [--threads 2]

The command line of that script (which stays where the docs and deployments call it, as a shim that
calls `script_main`); it is no `csbot` subcommand. The data, the training and the head's `info` are
training/train_sentiment.py; see docs/sentiment.md. Exit codes: 0 the head was written, 2 bad usage or
a data file missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.errors import UserError
from core.settings import DEFAULT_ENCODER
from training import train_sentiment as ts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ts.default_data_dir())
    parser.add_argument("--out", type=Path, default=ts.DEFAULT_OUT)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--cache-dir", type=Path, default=ts.DEFAULT_CACHE, help="feature cache ('' to disable)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    # type=Path turns '' into Path('.'), so the raw text decides whether the cache is off
    cache_dir = args.cache_dir if str(args.cache_dir) not in ("", ".") else None
    started = time.time()
    try:
        train_splits, val_splits = ts.load_data(args.data_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    head, val, floor_val = ts.build_head(train_splits, val_splits, encoder_name=args.encoder, cache_dir=cache_dir,
                                         out=args.out)

    print(f"\n{'validation':<16}{'head MR':>9}{'head acc':>10}{'floor MR':>10}{'floor acc':>11}")
    for name in val:
        h, f = val[name], floor_val[name]
        print(f"{name:<16}{h['macro_recall']:>9.4f}{h['accuracy']:>10.4f}{f['macro_recall']:>10.4f}{f['accuracy']:>11.4f}")
    size = args.out.stat().st_size
    print(f"\nwrote {args.out} ({size / 1024:.0f} KiB, temperature {head.temperature:.3f}) "
          f"in {time.time() - started:.0f}s")
    return 0


def script_main(argv: list[str] | None = None) -> int:
    """`python training/train_sentiment.py`: `main` as that script has always run it (argparse's own
    exit 2 on bad usage, 0 after --help)."""
    return main(argv)
