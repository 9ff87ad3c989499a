"""The intent classifier: a calibrated softmax head over the shared sentence embedding.

Training examples are each article's title and example questions, labelled with the article's
intent (its id when it has none). The confidence used to decline ("out of scope") is the calibrated
probability of the predicted intent; the threshold below was chosen on CLINC150's validation split
(150 intents + out-of-scope rows, see benchmarks/bench_accuracy.py) and can be overridden with the
`confidence_threshold` setting.
"""

from __future__ import annotations

import numpy as np

from models.heads import SoftmaxHead, fit_softmax_head

DEFAULT_OOS_THRESHOLD = 0.35
INTENT_C = 10.0


def train_intent_head(embeddings: np.ndarray, labels: list[str], *, seed: int = 13) -> SoftmaxHead:
    head = fit_softmax_head(embeddings, labels, feature_spec="embedding", c=INTENT_C, seed=seed)
    head.info = {"examples": len(labels), "intents": len(set(labels)), "c": INTENT_C}
    return head
