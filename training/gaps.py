"""Content gaps: what customers asked that the help centre did not answer, grouped so that a team can
see what to write next.

A question is *unmet* when its answer was handed off, voted 👎 more than 👍, or corrected by an agent
to another article. Hand-offs nobody voted on that are closer to everyday chatter (the generic
off-topic questions a version tunes its decline bound on, models/assets/offtopic_questions.txt) than
to any article they were compared with are left out: "what's the weather" is not a gap.

The unmet questions are embedded with the serving encoder and grouped by scikit-learn's
agglomerative clustering (average linkage on cosine distance, stopped at `GapParams.distance`): a
week of hand-offs is tens to a few thousand questions, where a distance bound is steadier than a
density estimate and needs no minimum cluster size to be tuned. Key phrases are class-based TF-IDF
(each gap's questions as one document, BERTopic's c-TF-IDF weighting) over scikit-learn's
CountVectorizer.

Each gap says which article is nearest and whether it is `article_misses` (agents corrected its
questions to that article: the article exists but does not say it in the customers' words) or
`no_article` (nobody could point to one). Its suggested title is its most central question. The
trend is the number of the previous period's unmet questions that fall within the gap. Gaps are
ordered by their open questions (those no agent corrected to an article), then by size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

NO_ARTICLE, ARTICLE_MISSES = "no_article", "article_misses"
HANDOFF, DOWNVOTED, CORRECTED = "handoff", "downvoted", "corrected"


@dataclass(frozen=True)
class GapParams:
    """The knobs of gap detection (`csbot gaps` flags)."""

    distance: float = 0.5  # average-linkage cosine distance at which groups stop merging
    min_size: int = 2  # a single unanswered question is not yet a gap
    examples: int = 3  # example questions shown per gap, most central first
    keywords: int = 5
    # A correction must name one article for at least this share of a gap's questions for the gap
    # to count as "the article misses this".
    corrected_share: float = 0.34


@dataclass
class Gap:
    """One group of unmet questions; `to_json` is the stable `csbot gaps --json` shape (keys only added)."""

    size: int
    answer_ids: list[str]
    examples: list[str]
    nearest_doc_id: str | None
    nearest_score: float
    kind: str
    title: str
    keywords: list[str]
    reasons: dict[str, int]
    previous: int = 0
    nearest_title: str | None = None
    centroid: np.ndarray | None = field(default=None, repr=False)

    @property
    def change(self) -> int:
        return self.size - self.previous

    @property
    def open(self) -> int:
        """Questions no agent pointed to an article for: a correction is already a training example
        for the next retrain, so what it asked closes without a new article."""
        return self.size - self.reasons.get(CORRECTED, 0)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("centroid")
        data["nearest_score"] = round(self.nearest_score, 4)
        data["change"] = self.change
        data["open"] = self.open
        return data


def why_unmet(row: dict) -> str | None:
    """Why an answer row (store `answer_outcomes`) went unmet, or None when it was met. A correction
    (an agent's 👎 naming the article that answers, the answered one included: then its words did
    not) is `corrected`; clarifying picks are not corrections (the store leaves them out)."""
    if row.get("correct_doc_id"):
        return CORRECTED
    if row.get("downs", 0) > row.get("ups", 0):
        return DOWNVOTED
    if row.get("handoff"):
        return HANDOFF
    return None


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _top_source(row: dict) -> tuple[str | None, float]:
    sources = row.get("sources") or []
    if not sources:
        return None, 0.0
    best = max(sources, key=lambda s: s.get("score") or 0.0)
    return best.get("doc_id"), float(best.get("score") or 0.0)


def unmet_questions(rows: Sequence[dict], embed: Callable[[list[str]], np.ndarray],
                    chatter: np.ndarray | None) -> tuple[list[dict], np.ndarray, int]:
    """The unmet rows with a `reason`, their normalised embeddings, and how many were left out as chatter."""
    picked = [dict(row, reason=why_unmet(row)) for row in rows if row.get("question")]
    picked = [row for row in picked if row["reason"]]
    if not picked:
        return [], np.zeros((0, 0), np.float32), 0
    vectors = _normalise(embed([row["question"] for row in picked]))
    if chatter is None or not len(chatter):
        return picked, vectors, 0
    nearest_chatter = (vectors @ chatter.T).max(axis=1)
    keep = [i for i, row in enumerate(picked)
            if row["reason"] != HANDOFF or nearest_chatter[i] < _top_source(row)[1]]
    return [picked[i] for i in keep], vectors[keep], len(picked) - len(keep)


def cluster(vectors: np.ndarray, distance: float) -> np.ndarray:
    """A label per vector; one group per vector when there are fewer than two."""
    if len(vectors) < 2:
        return np.zeros(len(vectors), dtype=int)
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                    distance_threshold=distance)
    return model.fit_predict(vectors)


def key_phrases(groups: list[list[str]], top: int) -> list[list[str]]:
    """c-TF-IDF: each group's questions as one document, terms weighted by how much more often the
    group uses them than the groups on average."""
    from sklearn.feature_extraction.text import CountVectorizer

    documents = [" ".join(g) for g in groups]
    try:
        vectorizer = CountVectorizer(stop_words="english", ngram_range=(1, 2), token_pattern=r"(?u)\b\w[\w'-]+\b")
        counts = vectorizer.fit_transform(documents).toarray().astype(np.float64)
    except ValueError:  # only stop words
        return [[] for _ in groups]
    terms = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    average_words = counts.sum() / max(len(groups), 1)
    idf = np.log(1.0 + average_words / np.maximum(counts.sum(axis=0), 1.0))
    weights = tf * idf
    phrases = []
    for row in weights:
        order = [i for i in np.argsort(-row) if row[i] > 0]
        chosen: list[str] = []
        for i in order:
            term = str(terms[i])
            # a unigram already inside a chosen bigram (or the reverse) says nothing new
            if any(term in c.split() or c in term.split() for c in chosen):
                continue
            chosen.append(term)
            if len(chosen) == top:
                break
        phrases.append(chosen)
    return phrases


def suggested_title(question: str) -> str:
    text = " ".join(question.split()).rstrip("?!. ")
    text = text[:1].upper() + text[1:]
    return text if len(text) <= 90 else text[:87].rstrip() + "…"


def _nearest_article(members: list[dict], params: GapParams) -> tuple[str | None, float, str]:
    corrections = Counter(row["correct_doc_id"] for row in members if row.get("correct_doc_id"))
    if corrections:
        doc, n = corrections.most_common(1)[0]
        if n >= max(1, params.corrected_share * len(members)):
            scores = [s.get("score") or 0.0 for row in members for s in row.get("sources") or [] if s.get("doc_id") == doc]
            return doc, float(np.mean(scores)) if scores else 0.0, ARTICLE_MISSES
    weight: Counter = Counter()
    best: dict[str, float] = {}
    for row in members:
        doc, score = _top_source(row)
        if doc:
            weight[doc] += score
            best[doc] = max(best.get(doc, 0.0), score)
    if not weight:
        return None, 0.0, NO_ARTICLE
    doc = weight.most_common(1)[0][0]
    return doc, best[doc], NO_ARTICLE


def find_gaps(rows: Sequence[dict], embed: Callable[[list[str]], np.ndarray], *,
              previous_rows: Sequence[dict] = (), chatter_questions: Sequence[str] = (),
              params: GapParams = GapParams()) -> tuple[list[Gap], dict]:
    """The gaps in `rows` (store `answer_outcomes` of the period), largest first, and a summary
    {questions, unmet, chatter, in_gaps}. `previous_rows`: the period before, for each gap's trend."""
    chatter = _normalise(embed(list(chatter_questions))) if chatter_questions else None
    unmet, vectors, n_chatter = unmet_questions(rows, embed, chatter)
    labels = cluster(vectors, params.distance)
    groups = [np.flatnonzero(labels == label) for label in sorted(set(labels.tolist()))]
    groups = [g for g in groups if len(g) >= params.min_size]
    gaps = []
    for members_idx in groups:
        members = [unmet[i] for i in members_idx]
        centroid = _normalise(vectors[members_idx].mean(axis=0, keepdims=True))[0]
        order = np.argsort(-(vectors[members_idx] @ centroid))
        central = [members[i] for i in order]
        doc, score, kind = _nearest_article(members, params)
        gaps.append(Gap(size=len(members), answer_ids=[row["answer_id"] for row in central],
                        examples=[row["question"] for row in central[:params.examples]],
                        nearest_doc_id=doc, nearest_score=score, kind=kind,
                        title=suggested_title(central[0]["question"]), keywords=[],
                        reasons=dict(Counter(row["reason"] for row in members)), centroid=centroid))
    rest = [unmet[i]["question"] for i in range(len(unmet)) if not any(i in g for g in groups)]
    phrases = key_phrases([[m for m in _questions(gap, unmet)] for gap in gaps] + ([rest] if rest else []),
                          params.keywords)
    for gap, words in zip(gaps, phrases):
        gap.keywords = words
    _count_previous(gaps, previous_rows, embed, chatter, params)
    # Largest first by what is still open, so a topic with no article outranks a group that agents'
    # corrections (and so the next retrain) already cover.
    gaps.sort(key=lambda g: (-g.open, -g.size, -g.change, g.title))
    summary = {"questions": len(rows), "unmet": len(unmet) + n_chatter, "chatter": n_chatter,
               "in_gaps": sum(g.size for g in gaps)}
    return gaps, summary


def _questions(gap: Gap, unmet: list[dict]) -> list[str]:
    ids = set(gap.answer_ids)
    return [row["question"] for row in unmet if row["answer_id"] in ids]


def _count_previous(gaps: list[Gap], previous_rows: Sequence[dict], embed, chatter, params: GapParams) -> None:
    if not gaps or not previous_rows:
        return
    _, vectors, _ = unmet_questions(previous_rows, embed, chatter)
    if not len(vectors):
        return
    centroids = np.stack([gap.centroid for gap in gaps])
    sims = vectors @ centroids.T
    nearest = sims.argmax(axis=1)
    for i, gap_index in enumerate(nearest):
        if sims[i, gap_index] >= 1.0 - params.distance:
            gaps[gap_index].previous += 1
