"""Train the default 3-class sentiment head (negative / neutral / positive).

    python training/train_sentiment.py [--data-dir ../shared/data] [--out models/assets/sentiment_head.npz]
                                       [--encoder builtin:all-MiniLM-L6-v2]

(its command line: bot/commands/train_sentiment.py; this module is the data and the training)

Data (see each folder's README.md): the SemEval-2013..2016 Task 4A training pool plus the `train`
split of Twitter US Airline Sentiment. Settings were chosen on TweetEval `val` and the airline `dev`
split (never on a test split); the script reports those val figures and writes them into the head's
`info`. Encoder features are cached under $CSBOT_SENTIMENT_CACHE (default /tmp/csbot-sentiment-cache)
so a second run skips the encoder pass.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.answer import SENTIMENT_LABELS  # noqa: E402
# DEFAULT_ENCODER is for benchmarks/bench_sentiment.py, which reads it as ts.DEFAULT_ENCODER.
from core.settings import DEFAULT_ENCODER, SEED  # noqa: E402, F401

LABELS = list(SENTIMENT_LABELS)

DEFAULT_OUT = REPO / "models" / "assets" / "sentiment_head.npz"
DEFAULT_CACHE = Path(os.environ.get("CSBOT_SENTIMENT_CACHE", "/tmp/csbot-sentiment-cache"))
_MENTION = re.compile(r"(?<!\w)@\w+")


def default_data_dir() -> Path:
    env = os.environ.get("CSBOT_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@dataclass
class Split:
    name: str
    texts: list[str]
    labels: list[str]


def _read_csv(path: Path) -> list[dict]:
    from core.errors import UserError

    if not path.is_file():
        raise UserError(f"data file {path} is missing (pass --data-dir or set CSBOT_DATA_DIR)")
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def normalise_tweet(text: str) -> str:
    """Mentions become `@user`, as in TweetEval and the SemEval pool (the airline data keeps names)."""
    return _MENTION.sub("@user", text).strip()


def load_semeval_train(data_dir: Path) -> Split:
    rows = _read_csv(data_dir / "semeval2017_task4a_train_pool" / "train.csv")
    return Split("semeval_train", [r["text"] for r in rows], [LABELS[int(r["label"])] for r in rows])


def load_tweeteval(data_dir: Path, part: str) -> Split:
    rows = _read_csv(data_dir / "tweeteval_sentiment" / f"{part}.csv")
    return Split(f"tweeteval_{part}", [r["text"] for r in rows], [LABELS[int(r["label"])] for r in rows])


def load_airline(data_dir: Path, part: str) -> Split:
    rows = [r for r in _read_csv(data_dir / "twitter_airline_sentiment" / "all.csv") if r["suggested_split"] == part]
    if not rows:
        raise ValueError(f"airline data has no {part!r} split")
    return Split(f"airline_{part}", [normalise_tweet(r["text"]) for r in rows], [r["airline_sentiment"] for r in rows])


def encode_cached(encoder, split: Split, cache_dir: Path | None = DEFAULT_CACHE, log=print):
    """`Encoded` for a split's texts; cached on disk by (encoder name, texts) hash."""
    from models.encoder import Encoded

    digest = hashlib.sha1(encoder.name.encode())
    for text in split.texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{split.name}-{digest.hexdigest()[:16]}.npz"
        if path.is_file():
            with np.load(path) as data:
                return Encoded(data["embeddings"], data["layers"].astype(np.float32))
    start = time.time()
    parts, chunk = [], 4096
    for i in range(0, len(split.texts), chunk):
        parts.append(encoder.encode(split.texts[i:i + chunk]))
        done = min(i + chunk, len(split.texts))
        log(f"  encoding {split.name}: {done}/{len(split.texts)} ({time.time() - start:.0f}s)")
    encoded = Encoded(np.concatenate([p.embeddings for p in parts]), np.concatenate([p.layers for p in parts]))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, embeddings=encoded.embeddings, layers=encoded.layers.astype(np.float16))
        tmp.replace(path)
        # Hand back what a cache hit would give, so a first and second run train on the same numbers.
        encoded = Encoded(encoded.embeddings, encoded.layers.astype(np.float16).astype(np.float32))
    return encoded


class LazyEncoder:
    """Loads the encoder on first use, so a run whose features are all cached never loads it."""

    def __init__(self, name: str, device: str = "cpu"):
        self.name, self.device, self._encoder = name, device, None

    def encode(self, texts):
        if self._encoder is None:
            from models.encoder import Encoder

            self._encoder = Encoder(self.name, self.device)
        return self._encoder.encode(texts)


# ----- the configuration (chosen on TweetEval val + airline dev; see docs/sentiment.md) ---------------

# Layers 0-4 only: intent fine-tuning may update layers 5 and 6, which would make a head reading them stale.
FEATURE_SPEC = "layers:0,1,2,3,4"
MLP = dict(hidden=192, members=2, epochs=15, lr=1e-3, weight_decay=1e-4, dropout=0.3, input_dropout=0.1,
           batch_size=256, class_weight=None)
# Classes are balanced within each source (SemEval: 16% negative; airline: 63% negative), so neither
# source's class prior leaks into the head; then every source counts in proportion to its size.
AIRLINE_WEIGHT = 1.0  # extra weight of the airline rows relative to the SemEval rows
# The floor every figure is compared with: multinomial LR on the final sentence embedding.
FLOOR = dict(feature_spec="embedding", c=10.0, class_weight="balanced")


def training_splits(data_dir: Path) -> list[Split]:
    return [load_semeval_train(data_dir), load_airline(data_dir, "train")]


def eval_splits(data_dir: Path, part: str) -> list[Split]:
    """`part` "val": TweetEval val + airline dev (used for choosing settings); "test": the test splits."""
    if part == "val":
        return [load_tweeteval(data_dir, "val"), load_airline(data_dir, "dev")]
    return [load_tweeteval(data_dir, "test"), load_airline(data_dir, "test")]


def concat(encoded: list):
    from models.encoder import Encoded

    return Encoded(np.concatenate([e.embeddings for e in encoded]), np.concatenate([e.layers for e in encoded]))


def metrics(head, split: Split, encoded) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    gold = np.array([LABELS.index(label) for label in split.labels])
    predicted = np.array([LABELS.index(head.labels[i]) for i in head.predict_proba(encoded).argmax(axis=1)])
    return {
        "n": len(gold),
        "macro_recall": round(float(recall_score(gold, predicted, average="macro", labels=[0, 1, 2])), 4),
        "accuracy": round(float(accuracy_score(gold, predicted)), 4),
        "macro_f1": round(float(f1_score(gold, predicted, average="macro", labels=[0, 1, 2])), 4),
    }


def train_floor_head(train, labels):
    from models.heads import features_for
    from training.fit_heads import fit_softmax_head

    return fit_softmax_head(features_for(FLOOR["feature_spec"], train), labels, feature_spec=FLOOR["feature_spec"],
                            c=FLOOR["c"], class_weight=FLOOR["class_weight"], calibrate=False, seed=SEED)


def train_head(train, labels, sample_weight, calibration=None, *, feature_spec=FEATURE_SPEC, log=print):
    """The shipped head: a one-hidden-layer MLP over the layer mean pools, temperature-calibrated."""
    from models.heads import features_for
    from training.fit_heads import fit_mlp_head

    def on_epoch(member, epoch, head):
        log(f"  member {member + 1}/{MLP['members']} epoch {epoch + 1}/{MLP['epochs']}")

    cal = None
    if calibration is not None:
        cal = (features_for(feature_spec, calibration[0]), calibration[1])
    return fit_mlp_head(features_for(feature_spec, train), labels, feature_spec=feature_spec,
                        sample_weight=sample_weight, calibration=cal, seed=SEED, on_epoch=on_epoch, **MLP)


def example_weights(splits: list[Split], airline_weight: float | None = None) -> np.ndarray:
    """Per-example loss weights: n / (3 * n_class) within each source, times `airline_weight` (default
    AIRLINE_WEIGHT) for airline."""
    airline = AIRLINE_WEIGHT if airline_weight is None else airline_weight
    weights = []
    for split in splits:
        y = np.array([LABELS.index(label) for label in split.labels])
        counts = np.bincount(y, minlength=len(LABELS))
        source = airline if split.name.startswith("airline") else 1.0
        weights.append(source * len(y) / (len(LABELS) * counts[y]))
    return np.concatenate(weights)


def load_features(encoder, splits: list[Split], cache_dir, log=print) -> list:
    out = []
    for split in splits:
        start = time.time()
        out.append(encode_cached(encoder, split, cache_dir, log=log))
        log(f"features {split.name}: {len(split.texts)} texts ({time.time() - start:.1f}s)")
    return out


def load_data(data_dir: Path) -> tuple[list[Split], list[Split]]:
    """The training splits and the val splits (module doc); a `UserError` when a data file is missing."""
    return training_splits(data_dir), eval_splits(data_dir, "val")


def build_head(train_splits: list[Split], val_splits: list[Split], *, encoder_name: str, cache_dir, out: Path,
               log=print):
    """Train the floor and the shipped head on `train_splits` (the head's temperature fitted on
    `val_splits`), record the settings and val figures in the head's `info` and write it to `out`.
    Returns (head, {val split: head metrics}, {val split: floor metrics})."""
    encoder = LazyEncoder(encoder_name)
    train_parts = load_features(encoder, train_splits, cache_dir, log=log)
    val_parts = load_features(encoder, val_splits, cache_dir, log=log)

    train = concat(train_parts)
    labels = [label for split in train_splits for label in split.labels]
    weight = example_weights(train_splits)
    calibration = (concat(val_parts), [label for split in val_splits for label in split.labels])

    log(f"training floor (LR on the final embedding) on {len(labels)} examples")
    floor = train_floor_head(train, labels)
    log(f"training head {FEATURE_SPEC} MLP {MLP}")
    head = train_head(train, labels, weight, calibration, log=log)

    val, floor_val = {}, {}
    for split, encoded in zip(val_splits, val_parts):
        val[split.name] = metrics(head, split, encoded)
        floor_val[split.name] = metrics(floor, split, encoded)
    head.info = {
        "task": "sentiment",
        "encoder": encoder_name,
        "feature_spec": FEATURE_SPEC,
        "layers_read": sorted({int(x) for x in FEATURE_SPEC.split(":", 1)[1].split(",")}),
        "model": {"type": "mlp", **MLP, "example_weights": "classes balanced within each source",
                  "airline_weight": AIRLINE_WEIGHT, "temperature": round(head.temperature, 4),
                  "temperature_fitted_on": [s.name for s in val_splits]},
        "train": {s.name: {"n": len(s.labels), **{k: s.labels.count(k) for k in LABELS}} for s in train_splits},
        "data": {"semeval_train": "semeval2017_task4a_train_pool/train.csv",
                 "airline_train": "twitter_airline_sentiment/all.csv (suggested_split=train, mentions -> @user)",
                 "tweeteval_val": "tweeteval_sentiment/val.csv",
                 "airline_dev": "twitter_airline_sentiment/all.csv (suggested_split=dev)"},
        "val": val,
        "floor_val": {"config": FLOOR, **floor_val},
        "seed": SEED,
        "trained_by": "training/train_sentiment.py",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    head.save(out, half=True)  # SoftmaxHead.save writes a temp file and renames it: atomic
    return head, val, floor_val


if __name__ == "__main__":
    # The command line lives in bot/commands/train_sentiment.py; this file stays where the docs run
    # it. Its one import of the app (exempted in tests/test_architecture.py), made only when run.
    from bot.commands.train_sentiment import script_main

    sys.exit(script_main())
