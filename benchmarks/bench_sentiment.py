"""Sentiment benchmark: TweetEval test and the airline test split, shipped head vs the floor.

    python benchmarks/bench_sentiment.py [--data-dir ../shared/data] [--head builtin|PATH] [--ablations]

(a) floor: multinomial LR on the frozen final sentence embedding, trained in this run on the same
    data as the shipped head (SemEval pool + airline train);
(b) the shipped head (`models/assets/sentiment_head.npz`, or --head).
`--ablations` also trains, in this run and with the shipped recipe, heads on feature sets that
include layers 5/6 (which the shipped head may not read), to show what the layer constraint costs.
Features come from the cache of training/train_sentiment.py ($CSBOT_SENTIMENT_CACHE, default
/tmp/csbot-sentiment-cache); a cold run encodes ~77k tweets (about 10-20 min on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from training import train_sentiment as ts  # noqa: E402

ABLATION_SPECS = ["layers:0,1,2,3,4,5,6", "layers:6", "layers:4"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ts.default_data_dir())
    parser.add_argument("--head", default="builtin")
    parser.add_argument("--encoder", default=ts.DEFAULT_ENCODER)
    parser.add_argument("--cache-dir", type=Path, default=ts.DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ablations", action="store_true", help="also train heads that read layers 5/6")
    args = parser.parse_args(argv)

    import torch

    from models.sentiment import SentimentModel

    torch.set_num_threads(max(1, args.threads))
    started = time.time()
    cache_dir = args.cache_dir if str(args.cache_dir) else None
    encoder = ts.LazyEncoder(args.encoder)
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    train_splits = ts.training_splits(args.data_dir)
    test_splits = ts.eval_splits(args.data_dir, "test")
    train = ts.concat(ts.load_features(encoder, train_splits, cache_dir, log=log))
    labels = [label for split in train_splits for label in split.labels]
    tests = ts.load_features(encoder, test_splits, cache_dir, log=log)

    rows = []
    log("training the floor")
    rows.append(("(a) floor: LR on final embedding", ts.train_floor_head(train, labels)))
    shipped = SentimentModel.load(args.head).head
    rows.append((f"(b) shipped: {shipped.feature_spec}" + (" MLP" if shipped.hidden_weights is not None else " LR"),
                 shipped))
    if args.ablations:
        weight = ts.example_weights(train_splits)
        for spec in ABLATION_SPECS:
            log(f"training ablation {spec}")
            rows.append((f"    ablation: {spec} MLP", ts.train_head(train, labels, weight, feature_spec=spec,
                                                                    log=lambda m: None)))

    width = max(len(name) for name, _ in rows) + 2
    print(f"{'':<{width}}{'TweetEval test':^22}{'airline test':^22}")
    print(f"{'head':<{width}}{'macro-R':>11}{'acc':>11}{'macro-R':>11}{'acc':>11}")
    for name, head in rows:
        cells = []
        for split, encoded in zip(test_splits, tests):
            m = ts.metrics(head, split, encoded)
            cells += [m["macro_recall"], m["accuracy"]]
        print(f"{name:<{width}}" + "".join(f"{v:>11.4f}" for v in cells))
    print(f"(n: TweetEval test {len(test_splits[0].labels)}, airline test {len(test_splits[1].labels)}; "
          f"{time.time() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
