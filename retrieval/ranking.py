"""From search hits and intent probabilities to one decision: which article and section answer a
message, how confident that is, whether to ask which article was meant, or to hand off.

Evidence per message (all of it exists for a KB of plain articles with no example questions):
- dense hits (FAISS cosines over titles, headings, section chunks, example and learned questions),
- lexical hits (FTS5/BM25 over the same entries),
- the intent head's probabilities, blended with a nearest-neighbour vote over retrieved questions.

Ranking: an article's score is its best dense cosine plus `lexical_weight` × its BM25 score
relative to the query's best BM25 hit, so an exact term (an error code, "IMAP") lifts the article
that has it among articles the encoder finds about as close. (Reciprocal rank fusion with
k = 5–60 was measured first and cost 1–8 points of top-1 accuracy on StackFAQ's tuning queries,
because it ignores how far apart the cosines are; docs/benchmarks.md.) The section quoted is the
article's best section by reciprocal rank fusion of its entries in both hit lists.

Confidence: each signal is mapped to [0, 1] around its own per-version threshold — the retrieval
cosine of the article through a logistic curve that is 0.5 at `cos_threshold`, the intent
probability piecewise-linearly with 0.5 at `head_threshold`. The thresholds are tuned for each
model version when it is built (`tune`), on generic off-topic questions (models/assets/
offtopic_questions.txt): each is the value that `decline_quantile` of them stay below. So 0.5 is
the version's answer/hand-off boundary whatever the KB looks like. When the intent and retrieval
agree on the article, the confidence is the larger of the two; when they disagree, a confident
intent (at or above its threshold) picks the article, else the more confident signal wins.

Clarifying question: when the best two articles (of different intents) are both answerable and
their cosines are within `clarify_margin`, the bot asks which one was meant instead of guessing —
unless the intent head is sure of the chosen article.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from core.settings import ServingSettings

# kinds of index entries (see retrieval/index.py)
TITLE, HEADING, QUESTION, CHUNK, LEARNED = "title", "heading", "question", "chunk", "learned"
EXAMPLE_KINDS = (TITLE, HEADING, QUESTION, LEARNED)  # entries that vote for an intent as examples

HEAD_LEAD = 2.0  # with `head_leads`, the head's intent wins a disagreement at this probability ratio
HEAD_OFF = 1.01  # a head threshold no probability reaches: retrieval alone decides
NEIGHBOUR_WEIGHT = 0.3  # share of the nearest-neighbour vote in the intent probabilities
NEIGHBOUR_TEMPERATURE = 0.05
# A heading this much closer to the question than any of the article's text picks its section; else
# the best chunk's section does (text answers better than headings: on the section-level sets 79-81 %
# of sections right given the article, headings alone 62 %; a lead of 0.05-0.2 costs at most one question).
HEADING_LEAD = 0.1
# A learned question (one agents confirmed or corrected) gives a new question its section only when the two
# are near paraphrases. Question-to-question cosines run higher than question-to-text ones, so comparing
# them with the article's text let any voted question of the article pick the section of a question about
# another part of it ("why did you cancel my order" took the section of a voted "cancel my order"); on the
# delivery help centre's held-out votes that cost 2 of 19 sections, at 0.85-0.95 none.
LEARNED_PIN = 0.9
SEARCH_K = 24  # hits per message from each index (FAISS and lexical), at build-time tuning and serving alike


@dataclass
class DecisionParams:
    """The knobs of a decision; the thresholds are tuned per model version (stored in its meta)."""

    cos_threshold: float = 0.6
    head_threshold: float = 0.35
    cos_slope: float = 12.0
    clarify_margin: float = ServingSettings.clarify_margin  # the `clarify_margin` setting's default
    lexical_weight: float = 0.05
    rrf_k: float = 10.0  # for choosing the section within the chosen article
    relevance_floor: float = 0.35  # a source shown with a hand-off scores at least this cosine
    max_sources: int = ServingSettings.max_sources  # the `max_sources` setting's default
    max_clarify: int = 3
    head_leads: bool = False  # most intents have example questions of their own (set when tuned)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None, **overrides) -> "DecisionParams":
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        known.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**known)


@dataclass
class Decision:
    intent: str | None
    doc_id: str | None
    section: str | None  # section id of the quoted section
    confidence: float
    handoff: bool
    sources: list[tuple[str, float]]  # (doc_id, cosine), best first
    clarify: list[tuple[str, float, str | None]] = field(default_factory=list)  # (doc_id, cosine, section)
    signals: dict = field(default_factory=dict)  # the raw evidence, for tuning and debugging
    chunk_of: dict = field(default_factory=dict)  # doc_id -> text of its best chunk entry


def blend_with_neighbours(head_probs: np.ndarray, label_index: dict[str, int],
                          nearest_example: dict[str, float]) -> np.ndarray:
    """Mix the head's probabilities with a nearest-neighbour vote over the retrieved example questions.

    The vote is a softmax (temperature NEIGHBOUR_TEMPERATURE) over each intent's most similar example
    among the retrieved hits. On BANKING77 the blend adds about one point over the head alone.
    """
    known = [(label_index[label], sim) for label, sim in nearest_example.items() if label in label_index]
    if not known:
        return head_probs
    idx = np.array([i for i, _ in known])
    sims = np.array([s for _, s in known], dtype=np.float64)
    vote = np.exp((sims - sims.max()) / NEIGHBOUR_TEMPERATURE)
    blended = head_probs * (1.0 - NEIGHBOUR_WEIGHT)
    blended[idx] += NEIGHBOUR_WEIGHT * vote / vote.sum()
    return blended


def cos_confidence(cosine: float, params: DecisionParams) -> float:
    return float(1.0 / (1.0 + np.exp(-params.cos_slope * (cosine - params.cos_threshold))))


def head_confidence(p: float, params: DecisionParams) -> float:
    t = max(params.head_threshold, 1e-6)
    if p < t or t >= 1.0:
        return float(0.5 * min(p / t, 0.99))
    return float(0.5 + 0.5 * (p - t) / (1.0 - t))


def decide(entries, label_of: dict[str, str], labels: list[str], label_index: dict[str, int],
           head_probs: np.ndarray, dense_scores: np.ndarray, dense_positions: np.ndarray,
           lexical_hits: list[tuple[int, float]], params: DecisionParams, threshold: float = 0.5,
           docs_by_label: dict[str, list[str]] | None = None) -> Decision:
    """One message's decision (see the module doc). `label_of` maps doc_id → intent;
    `docs_by_label` its inverse (the intent's article when none of its entries was retrieved)."""
    doc_cos: dict[str, float] = {}
    nearest_example: dict[str, float] = {}
    section_score: dict[str, dict[str, float]] = {}  # doc -> section -> fused entry score
    chunk_of: dict[str, str] = {}
    learned_cos: dict[str, float] = {}  # best learned question per article: only the answer's source score
    label_cos: dict[str, float] = {}  # best heading per article
    best_chunk_section: dict[str, str] = {}  # the section of each article's best chunk
    best_chunk_cos: dict[str, float] = {}
    learned_section: dict[str, tuple[float, str]] = {}  # each article's closest learned question's section
    best_heading: dict[str, tuple[float, str]] = {}  # each article's closest heading and its section
    rank = 0
    for r, (score, pos) in enumerate(zip(dense_scores, dense_positions)):
        if pos < 0:
            continue
        entry = entries[pos]
        score = float(score)
        if entry.kind in EXAMPLE_KINDS:
            nearest_example.setdefault(label_of.get(entry.doc_id, entry.doc_id), score)
        if entry.section:
            sections = section_score.setdefault(entry.doc_id, {})
            sections[entry.section] = sections.get(entry.section, 0.0) + 1.0 / (params.rrf_k + r)
        if entry.kind == CHUNK:
            chunk_of.setdefault(entry.doc_id, entry.text)
        if entry.kind == LEARNED:  # a learned question votes for its intent (and section), not as the article
            learned_cos.setdefault(entry.doc_id, score)
            if entry.section:
                learned_section.setdefault(entry.doc_id, (score, entry.section))
            continue
        if entry.kind == HEADING:
            label_cos.setdefault(entry.doc_id, score)
            if entry.section:
                best_heading.setdefault(entry.doc_id, (score, entry.section))
            continue
        if entry.kind == CHUNK and entry.section:
            best_chunk_section.setdefault(entry.doc_id, entry.section)
            best_chunk_cos.setdefault(entry.doc_id, score)
        if entry.doc_id not in doc_cos:
            doc_cos[entry.doc_id] = score
            rank += 1
    # An article is scored by its title and its content (its sections' chunks, which begin with the
    # title and heading path, and its example questions); a heading alone scores it only when none of
    # that was retrieved: a short heading matches questions its section does not answer.
    for doc, score in label_cos.items():
        doc_cos.setdefault(doc, score)
    lexical_rank: dict[str, int] = {}
    doc_bm25: dict[str, float] = {}
    for r, (pos, bm25) in enumerate(lexical_hits):
        entry = entries[pos]
        if entry.section:
            sections = section_score.setdefault(entry.doc_id, {})
            sections[entry.section] = sections.get(entry.section, 0.0) + 1.0 / (params.rrf_k + r)
        if entry.kind != LEARNED and entry.doc_id not in lexical_rank:
            lexical_rank[entry.doc_id] = len(lexical_rank)
            doc_bm25[entry.doc_id] = bm25
    best_bm25 = max(doc_bm25.values(), default=0.0)

    def fused(doc: str) -> float:
        lexical = doc_bm25.get(doc, 0.0) / best_bm25 if best_bm25 > 0 else 0.0
        return doc_cos.get(doc, 0.0) + params.lexical_weight * lexical

    candidates = set(doc_cos) | set(lexical_rank)
    ranked = sorted(candidates, key=lambda d: (-fused(d), -doc_cos.get(d, 0.0)))
    probs = blend_with_neighbours(head_probs, label_index, nearest_example)
    head_idx = int(np.argmax(probs))
    head_label, head_p = labels[head_idx], float(probs[head_idx])

    # The retrieval candidate: the best fused article. The intent candidate: the best article of
    # the head's intent (by the same ranking).
    r_doc = ranked[0] if ranked else None
    r_conf = cos_confidence(doc_cos.get(r_doc, 0.0), params) if r_doc else 0.0
    h_docs = [d for d in ranked if label_of.get(d) == head_label]
    h_doc = h_docs[0] if h_docs else (docs_by_label or {}).get(head_label, [None])[0]  # retrieved or not
    h_conf = head_confidence(head_p, params)
    if r_doc is not None and label_of.get(r_doc) == head_label:
        doc_id, confidence = r_doc, max(r_conf, h_conf)
    elif h_doc is not None and (h_conf >= 0.5 or h_conf > r_conf or (
            params.head_leads and r_doc is not None and head_p >= HEAD_LEAD * _p(probs, label_index, label_of.get(r_doc)))):
        # A confident intent picks the article; in a KB whose intents have example questions
        # (`head_leads`) so does an intent the head clearly prefers to retrieval's (trained on
        # example questions the head is the better classifier: BANKING77 10-shot 84.6 % when
        # retrieval settled every disagreement).
        doc_id, confidence = h_doc, h_conf
    elif r_doc is not None:
        r_label = label_of.get(r_doc)
        p_r = float(probs[label_index[r_label]]) if r_label in label_index else 0.0
        doc_id, confidence = r_doc, max(r_conf, head_confidence(p_r, params))
    else:
        doc_id, confidence = None, h_conf
    intent = label_of.get(doc_id) if doc_id else head_label
    handoff = doc_id is None or confidence < threshold

    # Clarify: two or more answerable articles of different intents, too close to tell apart.
    clarify: list[tuple[str, float, str | None]] = []
    # An intent head that is sure of the chosen article (trained on example questions) already told
    # the close articles apart: no need to ask.
    head_sure = head_label == label_of.get(doc_id) and h_conf >= 0.5
    if not handoff and doc_id is not None and params.clarify_margin > 0 and not head_sure:
        top_cos = doc_cos.get(doc_id, 0.0)
        close = [d for d in sorted(doc_cos, key=lambda d: -doc_cos[d])
                 if label_of.get(d) != intent and doc_cos[d] >= params.cos_threshold
                 and top_cos - doc_cos[d] < params.clarify_margin]
        if close and top_cos >= params.cos_threshold:
            picks = [doc_id]
            for d in close:
                if label_of.get(d) not in {label_of.get(p) for p in picks}:
                    picks.append(d)
            clarify = [(d, doc_cos.get(d, 0.0), _best_section(section_score.get(d))) for d in picks[:params.max_clarify]]

    by_cos = sorted(doc_cos.items(), key=lambda kv: -kv[1])
    if handoff:  # for the human who takes over: only articles that are relevant at all
        sources = [(d, s) for d, s in by_cos if s >= params.relevance_floor][:params.max_sources]
    else:
        # The answering article's relevance also counts the questions users confirmed for it.
        own = max(doc_cos.get(doc_id, 0.0), learned_cos.get(doc_id, 0.0) if label_of.get(doc_id) == intent else 0.0)
        sources = sorted([(doc_id, own)] + [(d, s) for d, s in by_cos if d != doc_id][:params.max_sources - 1],
                         key=lambda kv: -kv[1])
    top_two = [s for _, s in by_cos[:2]]
    signals = {"top_cos": top_two[0] if top_two else 0.0,
               "margin": (top_two[0] - top_two[1]) if len(top_two) == 2 else (top_two[0] if top_two else 0.0),
               "head_p": head_p, "lexical_agrees": bool(lexical_rank) and min(lexical_rank, key=lexical_rank.get) == doc_id}
    section = None
    if doc_id:
        # A paraphrase of a question that agents confirmed or corrected (a learned question), closer to it
        # than to any of the article's text, gets that question's section: a 👍 pins what it confirmed.
        learned = learned_section.get(doc_id)
        heading = best_heading.get(doc_id)
        if learned is not None and learned[0] >= max(LEARNED_PIN, best_chunk_cos.get(doc_id, -1.0)):
            section = learned[1]
        elif heading is not None and heading[0] - best_chunk_cos.get(doc_id, -1.0) >= HEADING_LEAD:
            section = heading[1]  # the question is nearly the heading's own words
        else:
            section = best_chunk_section.get(doc_id) or _best_section(section_score.get(doc_id))
    return Decision(intent=intent, doc_id=doc_id, section=section,
                    confidence=float(confidence), handoff=handoff, sources=sources, clarify=clarify,
                    signals=signals, chunk_of=chunk_of)


def _p(probs: np.ndarray, label_index: dict[str, int], label: str | None) -> float:
    return float(probs[label_index[label]]) if label in label_index else 0.0


def _best_section(scores: dict[str, float] | None) -> str | None:
    if not scores:
        return None
    return max(scores.items(), key=lambda kv: kv[1])[0]


def tune(negative_cos: list[float], negative_head_p: list[float], *, decline_quantile: float = 0.98,
         cos_bounds: tuple[float, float] = (0.45, 0.8), head_bounds: tuple[float, float] = (0.3, 0.99),
         head_informative: bool = True, head_leads: bool = False) -> dict:
    """Per-version thresholds from off-topic questions: each signal's `decline_quantile` quantile,
    so that share of them is declined, clipped to bounds. Returns the tuned values and how they
    were obtained (stored in the version's meta).

    The cosine bound below (0.45) is where sentence-encoder similarities stop meaning "same topic":
    generic off-topic questions are easier to decline than the near-domain ones users send
    (CLINC150's out-of-scope questions sit up to ~0.55 from a tech-support KB). A head trained
    without example questions (`head_informative=False`: only titles and headings) restates
    retrieval with less evidence and is switched off."""
    def quantile(values, bounds):
        if not values:
            return None
        return float(min(max(np.quantile(np.asarray(values, dtype=np.float64), decline_quantile), bounds[0]), bounds[1]))

    cos_t = quantile(negative_cos, cos_bounds)
    head_t = quantile(negative_head_p, head_bounds)
    if not head_informative or (head_t is not None and head_t >= head_bounds[1]):
        head_t = HEAD_OFF  # off-topic questions are as sure as anything: the head cannot tell (tiny KBs)
    return {"cos_threshold": round(cos_t, 4) if cos_t is not None else DecisionParams.cos_threshold,
            "head_threshold": round(head_t, 4) if head_t is not None else DecisionParams.head_threshold,
            "head_leads": bool(head_leads and head_t is not None and head_t < 1.0),
            "tuned_on": {"offtopic_questions": len(negative_cos), "decline_quantile": decline_quantile}}
