"""The intent head's fit (training/fit_heads.py) on what a KB without example questions gives it."""

from __future__ import annotations

import warnings

import numpy as np

from training.fit_heads import train_intent_head


def test_a_head_of_mostly_one_row_per_intent_fits_without_library_warnings():
    # A help centre with no example questions: each article's title and, for some, one heading.
    rng = np.random.default_rng(0)
    labels = [f"article-{i}" for i in range(30)] + ["article-0", "article-1", "article-2"]  # past scikit-learn's 20
    embeddings = rng.normal(size=(len(labels), 16)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        head = train_intent_head(embeddings, labels)
    assert [str(w.message) for w in caught] == []
    assert head.labels == sorted(set(labels))
    assert [head.labels[i] for i in head.proba_from_features(embeddings).argmax(1)] == labels
