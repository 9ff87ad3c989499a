"""The intent classifier: a calibrated softmax head over the shared sentence embedding.

Training examples are each article's title and example questions, labelled with the article's
intent (its id when it has none). The confidence used to decline ("out of scope") is the probability of the predicted intent after the
engine blends the head with the nearest-neighbour vote (serving/engine.py). DEFAULT_OOS_THRESHOLD is a
default for small KBs (it declines 84–96 % of the out-of-scope rows of demo/eval.jsonl while
answering ~93 % of the in-scope ones); confidences fall as a KB grows, so tune it per KB with
`csbot eval` on labelled rows with `out_of_scope` examples and set `confidence_threshold`. On
CLINC150 (150 intents) the threshold that reaches 80 % out-of-scope recall on val is 0.67
(benchmarks/bench_accuracy.py, docs/benchmarks.md). The head is fitted by training/fit_heads.py
(`train_intent_head`) and served by models/heads.py.
"""

from __future__ import annotations

DEFAULT_OOS_THRESHOLD = 0.35
