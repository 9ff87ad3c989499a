"""Sentiment of a message: negative / neutral / positive, from the shared encoder pass.

The builtin head (`models/assets/sentiment_head.npz`, built by `training/train_sentiment.py`, see
docs/sentiment.md) reads the mean-pooled hidden states of encoder layers 0–4 only, so it stays valid
when intent fine-tuning updates the top layers (5 and 6) of the encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from core.answer import SENTIMENT_LABELS
from core.errors import UserError
from models.encoder import Encoded
from models.heads import SoftmaxHead

BUILTIN_HEAD = Path(__file__).resolve().parent / "assets" / "sentiment_head.npz"


def head_path(spec: str | Path = "builtin") -> Path:
    """The head file a `sentiment_head` setting names: `"builtin"` (the shipped head) or a path;
    a clear error when it is missing."""
    path = BUILTIN_HEAD if str(spec) == "builtin" else Path(spec).expanduser()
    if not path.is_file():
        hint = " (reinstall csbot or run training/train_sentiment.py)" if path == BUILTIN_HEAD else ""
        raise UserError(f"sentiment head {path} is missing (setting sentiment_head={str(spec)!r}){hint}")
    return path


class SentimentModel:
    """The head over the shared encoder pass (models/protocols.py `EncodedLabeler`)."""

    reads_encoder: Literal[True] = True  # reads the shared encoder pass's features (`predict(encoded)`), not texts

    def __init__(self, head: SoftmaxHead, source: str = "<memory>"):
        if sorted(head.labels) != sorted(SENTIMENT_LABELS):
            raise UserError(
                f"sentiment head {source} has labels {head.labels}; expected {list(SENTIMENT_LABELS)}"
            )
        self.head = head
        self.source = source

    @classmethod
    def load(cls, spec: str | Path = "builtin") -> "SentimentModel":
        """`"builtin"` (the shipped head) or a path to a head file written by SoftmaxHead.save."""
        path = head_path(spec)
        try:
            head = SoftmaxHead.load(path)
        except UserError as exc:  # "model head PATH is unreadable: ..." -> name what it is for
            raise UserError(str(exc).replace("model head", "sentiment head", 1)) from exc
        return cls(head, str(path))

    def predict(self, encoded: Encoded) -> list[tuple[str, dict[str, float]]]:
        """One (label, {label: probability}) per encoded text, in input order."""
        if len(encoded.embeddings) == 0:
            return []
        proba = self.head.predict_proba(encoded)
        labels = self.head.labels
        best = np.argmax(proba, axis=1)
        return [
            (labels[int(b)], {label: float(p) for label, p in zip(labels, row)})
            for b, row in zip(best, proba)
        ]
