"""The answer engine: one message in, one `Answer` out (text, intent, confidence, sentiment, sources,
hand-off). Every front end — CLI, Slack, benchmarks — goes through `Engine.answer` / `answer_batch`.

Per message: one encoder pass gives the sentence embedding and the per-layer features; the intent
head and the sentiment head read them; FAISS finds the closest titles, example questions and chunks.
The classifier and retrieval can each overrule a weak other:
- a confident intent picks the article (the best-retrieved article of that intent);
- a weak intent is overruled by a strong retrieval hit (the retrieved article's intent is used);
- when both are weak, the engine declines and hands off.
Short follow-ups in a thread are read together with the thread's previous turn.

The engine serves the champion model version and switches to a new champion without a restart
(`maybe_reload`, called before each request and at most every `reload_check_seconds`). The new
version is loaded completely before the swap, so no request is dropped or sees half a model.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from bot.answer import OUT_OF_SCOPE, SENTIMENT_LABELS, Answer, Source
from bot.config import Settings
from models.encoder import Encoder
from models.heads import SoftmaxHead
from models.intent import DEFAULT_OOS_THRESHOLD
from models.sentiment import SentimentModel
from models.versions import ModelVersion, VersionStore
from retrieval.index import LEARNED, VectorIndex
from retrieval.kb import Document
from training.build import load_version_documents

HANDOFF_TEXT = ("I'm not sure I can answer that correctly, so I've passed it to a colleague on the "
                "support team who will follow up here.")
RETRIEVAL_OVERRULE = 0.72  # cosine of a retrieved title/question/chunk strong enough to overrule a weak intent
SEARCH_K = 24
NEIGHBOUR_WEIGHT = 0.3  # share of the nearest-neighbour vote in the intent probabilities
NEIGHBOUR_TEMPERATURE = 0.05


@dataclass
class Served:
    """Everything one model version needs to answer; immutable once loaded."""

    version: ModelVersion
    encoder: Encoder
    intent_head: SoftmaxHead
    sentiment: SentimentModel
    index: VectorIndex
    documents: dict[str, Document]
    docs_by_label: dict[str, list[str]]
    threshold: float
    label_index: dict[str, int]


class Engine:
    def __init__(self, settings: Settings, *, version: str | None = None, reload_check_seconds: float = 2.0):
        """Serve the champion (following promotions), or exactly `version` when given (pinned)."""
        self.settings = settings
        self.pinned = version
        self.versions = VersionStore(settings.models_dir)
        self.reload_check_seconds = reload_check_seconds
        self._lock = threading.Lock()
        self._served: Served | None = None
        self._stamp = None
        self._last_check = 0.0
        self._encoders: dict[str, Encoder] = {}
        self.reload(force=True)

    # ----- model versions --------------------------------------------------------------------
    @property
    def served(self) -> Served:
        return self._served

    @property
    def model_version(self) -> str:
        return self._served.version.name

    def reload(self, force: bool = False) -> bool:
        """Load the champion if it changed (or `force`); returns True when a new version is served."""
        if self.pinned and not force:
            return False
        stamp = self.versions.champion_stamp()
        if not force and stamp == self._stamp:
            return False
        with self._lock:
            version = self.versions.get(self.pinned) if self.pinned else self.versions.champion()
            if not force and self._served is not None and version.name == self._served.version.name:
                self._stamp = stamp
                return False
            served = self._load(version)
            self._served, self._stamp = served, stamp  # one reference swap: readers see old or new
        return True

    def maybe_reload(self) -> bool:
        now = time.monotonic()
        if now - self._last_check < self.reload_check_seconds:
            return False
        self._last_check = now
        return self.reload()

    def _encoder_for(self, version: ModelVersion) -> Encoder:
        name = version.encoder_name
        if name not in self._encoders:
            self._encoders[name] = Encoder(name, self.settings.device)
        return self._encoders[name]

    def _load(self, version: ModelVersion) -> Served:
        documents = {doc.id: doc for doc in load_version_documents(version)}
        by_label: dict[str, list[str]] = defaultdict(list)
        for doc in documents.values():
            by_label[doc.label].append(doc.id)
        index = VectorIndex.load(version.path / "index", expect_encoder_version=version.meta.get("encoder_version"))
        threshold = self.settings.confidence_threshold
        if threshold is None:
            threshold = float(version.meta.get("oos_threshold", DEFAULT_OOS_THRESHOLD))
        intent_head = SoftmaxHead.load(version.path / "intent_head.npz")
        return Served(
            version=version,
            encoder=self._encoder_for(version),
            intent_head=intent_head,
            label_index={label: i for i, label in enumerate(intent_head.labels)},
            sentiment=SentimentModel.load(str(version.path / "sentiment_head.npz")),
            index=index,
            documents=documents,
            docs_by_label=dict(by_label),
            threshold=threshold,
        )

    # ----- answering ---------------------------------------------------------------------------
    def answer(self, text: str, context: list[str] | None = None) -> Answer:
        return self.answer_batch([text], [context or []])[0]

    def answer_batch(self, texts: list[str], contexts: list[list[str]] | None = None) -> list[Answer]:
        """Answer many messages with one batched encoder pass."""
        self.maybe_reload()
        served = self._served
        contexts = contexts or [[] for _ in texts]
        if len(contexts) != len(texts):
            raise ValueError("one context per text")
        inputs = [" ".join(t.split()) for t in texts]
        # Short follow-ups are also read with the thread's previous turn; both go in the same batch.
        followup_of: dict[int, int] = {}
        for i, (text, context) in enumerate(zip(inputs, contexts)):
            if context and 0 < len(text.split()) <= self.settings.followup_max_words:
                followup_of[i] = len(inputs)
                inputs.append(f"{context[-1].strip()} {text}")
        encoded = served.encoder.encode(inputs)
        intent_probs = served.intent_head.predict_proba(encoded)
        sentiments = served.sentiment.predict(encoded)
        scores, positions = served.index.search(encoded.embeddings, SEARCH_K)
        decisions = [self._decide(served, intent_probs[i], scores[i], positions[i]) for i in range(len(inputs))]
        answers = []
        for i, text in enumerate(texts):
            decision, used_context = decisions[i], False
            j = followup_of.get(i)
            if j is not None and decisions[j].confidence > decision.confidence:
                decision, used_context = decisions[j], True
            label, sentiment_scores = sentiments[i]
            answers.append(self._make_answer(served, text, decision, label, sentiment_scores, used_context))
        return answers

    def sentiment(self, texts: list[str]) -> list[tuple[str, dict[str, float]]]:
        """Sentiment only (no retrieval): for watched channels."""
        self.maybe_reload()
        served = self._served
        return served.sentiment.predict(served.encoder.encode(list(texts)))

    def _decide(self, served: Served, head_probs: np.ndarray, scores: np.ndarray, positions: np.ndarray) -> "_Decision":
        # Best score per article, in retrieval order; best matching chunk per article; and the
        # nearest example question (or title, or question learned from feedback) per intent, for the
        # nearest-neighbour vote.
        doc_scores: dict[str, float] = {}
        best_chunk: dict[str, str] = {}
        nearest_example: dict[str, float] = {}
        for score, pos in zip(scores, positions):
            if pos < 0:
                continue
            entry = served.index.entries[pos]
            if entry.kind in ("title", "question", LEARNED):
                label = served.documents[entry.doc_id].label
                nearest_example.setdefault(label, float(score))
            if entry.kind == LEARNED:  # a learned question votes for its intent, not for one article
                continue
            if entry.doc_id not in doc_scores:
                doc_scores[entry.doc_id] = float(score)
            if entry.kind == "chunk" and entry.doc_id not in best_chunk:
                best_chunk[entry.doc_id] = entry.text
        probs = _blend_with_neighbours(head_probs, served.label_index, nearest_example)
        best_label_idx = int(np.argmax(probs))
        intent = served.intent_head.labels[best_label_idx]
        p_intent = float(probs[best_label_idx])
        ranked = sorted(doc_scores.items(), key=lambda kv: -kv[1])
        top_doc, top_score = ranked[0] if ranked else (None, 0.0)

        intent_docs = served.docs_by_label.get(intent, [])
        doc_id = max(intent_docs, key=lambda d: doc_scores.get(d, -1.0)) if intent_docs else top_doc
        confidence = p_intent
        if p_intent < served.threshold and top_doc is not None and top_score >= RETRIEVAL_OVERRULE:
            doc_id = top_doc
            intent = served.documents[top_doc].label
            label_idx = served.label_index.get(intent)
            p_retrieved = float(probs[label_idx]) if label_idx is not None else 0.0
            # The retrieval hit vouches for the article: confidence is the better of both signals.
            confidence = max(p_retrieved, _retrieval_confidence(top_score))
        handoff = confidence < served.threshold
        if handoff or doc_id is None:  # no answer: the closest articles, for the human who takes over
            sources = ranked[: self.settings.max_sources]
        else:  # the answering article first, then the next closest
            sources = [(doc_id, doc_scores.get(doc_id, 0.0))]
            sources += [(d, s) for d, s in ranked if d != doc_id][: self.settings.max_sources - 1]
        return _Decision(intent, doc_id, confidence, handoff, sources, best_chunk)

    def _make_answer(self, served: Served, question: str, d: "_Decision", sentiment: str,
                     sentiment_scores: dict[str, float], used_context: bool) -> Answer:
        sources = [Source(doc_id, served.documents[doc_id].title, served.documents[doc_id].url, score)
                   for doc_id, score in d.sources if doc_id in served.documents]
        if d.handoff or d.doc_id is None:
            text, intent = HANDOFF_TEXT, OUT_OF_SCOPE
        else:
            doc = served.documents[d.doc_id]
            text, intent = doc.answer, d.intent
            if d.doc_id in d.best_chunk and len(doc.answer.split()) > self.settings.chunk_words:
                text = d.best_chunk[d.doc_id].split(": ", 1)[-1]  # the matching part of a long article
        return Answer(
            answer_id=uuid.uuid4().hex[:16],
            question=question,
            text=text,
            intent=intent,
            confidence=d.confidence,
            sentiment=sentiment,
            sentiment_scores={k: float(sentiment_scores.get(k, 0.0)) for k in SENTIMENT_LABELS},
            sources=sources,
            handoff=d.handoff or d.doc_id is None,
            model_version=served.version.name,
            doc_id=None if d.handoff else d.doc_id,
            used_context=used_context,
        )


@dataclass
class _Decision:
    intent: str
    doc_id: str | None
    confidence: float
    handoff: bool
    sources: list[tuple[str, float]]
    best_chunk: dict[str, str]


def _blend_with_neighbours(head_probs: np.ndarray, label_index: dict[str, int],
                           nearest_example: dict[str, float]) -> np.ndarray:
    """Mix the head's probabilities with a nearest-neighbour vote over the retrieved example questions.

    The vote is a softmax (temperature NEIGHBOUR_TEMPERATURE) over each intent's most similar example
    among the retrieved hits. On BANKING77 the blend adds about one point over the head alone (see
    docs/benchmarks.md).
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


def _retrieval_confidence(cosine: float) -> float:
    """Map a retrieval cosine to a confidence: RETRIEVAL_OVERRULE → 0.5, 0.9 → ~0.9."""
    return float(1.0 / (1.0 + np.exp(-12.0 * (cosine - RETRIEVAL_OVERRULE))))
