"""The engine's output: what every front end (CLI, Slack, store) receives for one message."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SENTIMENT_LABELS = ("negative", "neutral", "positive")  # the one definition of the sentiment vocabulary
OUT_OF_SCOPE = "out_of_scope"  # the intent of a question the KB does not answer (a hand-off)
OOS_ALIASES = frozenset({"oos", "out_of_scope", "out-of-scope"})  # how evaluation files may spell it


@dataclass(frozen=True)
class Source:
    """One knowledge-base article that supports an answer."""

    doc_id: str
    title: str
    url: str | None
    score: float


@dataclass(frozen=True)
class Answer:
    """The engine's reply to one message.

    `intent` is `out_of_scope` and `handoff` is true when the engine is not sure enough to answer;
    `text` then says so. `sentiment_scores` maps each of SENTIMENT_LABELS to a probability.
    """

    answer_id: str
    question: str
    text: str
    intent: str
    confidence: float
    sentiment: str
    sentiment_scores: dict[str, float]
    sources: list[Source] = field(default_factory=list)
    handoff: bool = False
    model_version: str = ""
    doc_id: str | None = None
    used_context: bool = False
    # The article section quoted ({id, heading, path}); None when the whole article is the answer.
    section: dict | None = None
    # A clarifying question's options ([{doc_id, title, section, intent, score, heading}], best
    # first): the best two or three articles were too close to tell apart. `doc_id` is then the
    # best guess and `text` its answer; front ends ask "Did you mean…" first.
    clarify: list[dict] = field(default_factory=list)
    # "select": the text is the article section as the KB has it; "compose": a language model wrote
    # it from the sources (cited as [1], [2] -> sources[0], sources[1]), checked by the guard.
    mode: str = "select"
    # The composition's report when composing was tried (serving/compose.py Composition.to_dict():
    # outcome composed | abstained | fallback, reason, guard, timings); None in select mode.
    composition: dict | None = None
    # Other products the question names that the help centre never mentions (retrieval/scope.py): the
    # engine then declines ("out_of_scope", a hand-off) instead of answering from the nearest article.
    other_products: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The stable `--json` shape (see README, "JSON outputs"): keys are only ever added."""
        data = asdict(self)
        data["answer"] = data.pop("text")
        data["confidence"] = round(self.confidence, 4)
        data["sentiment_scores"] = {k: round(v, 4) for k, v in self.sentiment_scores.items()}
        data["sources"] = [
            {"doc_id": s.doc_id, "title": s.title, "url": s.url, "score": round(s.score, 4)}
            for s in self.sources
        ]
        return data
