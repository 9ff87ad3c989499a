"""The intent classifier: a calibrated softmax head over the shared sentence embedding.

Training examples are each article's title and example questions, labelled with the article's
intent (its id when it has none). The confidence used to decline ("out of scope") is the probability of the predicted intent after the
engine blends the head with the nearest-neighbour vote (serving/engine.py). DEFAULT_OOS_THRESHOLD is a
default for small KBs (it declines 84–96 % of the out-of-scope rows of demo/eval.jsonl while
answering ~93 % of the in-scope ones); confidences fall as a KB grows, so tune it per KB with
`csbot eval` on labelled rows with `out_of_scope` examples and set `confidence_threshold`. On
CLINC150 (150 intents) the threshold that reaches 80 % out-of-scope recall on val is 0.67
(benchmarks/bench_accuracy.py, docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

from models.heads import SoftmaxHead, fit_softmax_head

DEFAULT_OOS_THRESHOLD = 0.35
INTENT_C = 10.0


def train_intent_head(embeddings: np.ndarray, labels: list[str], *, seed: int = 13) -> SoftmaxHead:
    """The head over the KB's intents. A KB of one intent gets a constant head (probability 1): it
    tells nothing, so the version's tuned threshold switches it off and retrieval decides."""
    if len(set(labels)) == 1:
        dim = np.asarray(embeddings).shape[1]
        head = SoftmaxHead([labels[0]], np.zeros((dim, 1), np.float32), np.zeros(1, np.float32), "embedding")
        head.info = {"examples": len(labels), "intents": 1, "constant": True}
        return head
    head = fit_softmax_head(embeddings, labels, feature_spec="embedding", c=INTENT_C, seed=seed)
    head.info = {"examples": len(labels), "intents": len(set(labels)), "c": INTENT_C}
    return head
