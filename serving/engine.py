"""The answer engine: one message in, one `Answer` out (text, intent, confidence, sentiment, sources,
hand-off). Every front end — CLI, Slack, benchmarks — goes through `Engine.answer` / `answer_batch`,
which select; the answer policy (serving/policy.py) decides what a front end does with a selected
answer (stay quiet, hand off, compose).

Per message: one encoder pass gives the sentence embedding and the per-layer features; the intent
head and the sentiment head read them; FAISS finds the closest titles, headings, example questions
and section chunks, and the lexical index (FTS5/BM25) the entries that share its exact terms.
retrieval/ranking.py turns that evidence into one decision: the article and the section to quote,
a confidence calibrated around thresholds tuned for the served version, a clarifying question when
two articles are too close to tell apart, or a hand-off. Short follow-ups in a thread are read
together with the thread's previous turn.

The engine serves the champion model version and switches to a new champion without a restart
(`maybe_reload`, called before each request and at most every `reload_check_seconds`). The new
version is loaded completely before the swap, so no request is dropped or sees half a model.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

from core.answer import OUT_OF_SCOPE, SENTIMENT_LABELS, Answer, Source
from core.errors import CsbotError
from core.runtime import beside
from core.settings import ANSWER_MODES, Settings
from core.text import clean_text
from models.encoder import Encoder
from models.heads import SoftmaxHead
from models.intent import DEFAULT_OOS_THRESHOLD
from models.onnx_encoder import one_text_workers
from models.protocols import EncoderRuntime, SentimentLabeler, TailLabeler, TokenStatesEncoder
from models.runtimes import load_encoder
from retrieval.index import VectorIndex
from retrieval.kb import Document, Section, chunk_markdown, split_sections
from retrieval.ranking import SEARCH_K, Decision, DecisionParams, decide
from retrieval.scope import Scope, load_names
from serving.compose import Composer, Composition, GuardFailure, Passage, clip_words
from serving.policy import HANDOFF_TEXT  # the engine's hand-offs say it; the policy words them per front end
from serving.model_store import BlobMismatch
from serving.versions import ModelVersion, VersionStore

log = logging.getLogger("csbot.engine")

# A short follow-up the engine can answer on its own at least this confidently stands alone ("what
# about international orders?"); a weaker one is read with the thread's previous turn when that
# makes the engine surer ("and for express?").
FOLLOWUP_STANDALONE = 0.75
CONTEXT_GAIN = 0.03  # cosine a longer message must gain from its thread's turns for them to be used


@dataclass
class Served:
    """Everything one model version needs to answer; immutable once loaded."""

    version: ModelVersion
    encoder: EncoderRuntime
    intent_head: SoftmaxHead
    sentiment: SentimentLabeler  # the head over the encoder pass, or a fine-tuned model's own pass (reads_encoder)
    index: VectorIndex
    documents: dict[str, Document]
    docs_by_label: dict[str, list[str]]
    threshold: float
    label_index: dict[str, int]
    params: DecisionParams
    sections: dict[str, Section]
    chunk_markdown: dict[str, str]  # a chunk entry's text -> the Markdown it was made from
    label_of: dict[str, str]
    # A question's sentiment continues from the encoder pass's token states (`sentiment_shares_encoder`
    # and the loaded exports fit); watched-channel messages (sentiment only) take the model's own pass.
    shares_encoder: bool = False
    scope: Scope | None = None  # None: other products are not declined (decline_other_products = false)


def runtime_for(version: ModelVersion, settings: Settings) -> str:
    """The encoder runtime that serves `version`: the `runtime` setting when forced, else what the
    version's build chose (meta "runtime"); torch on CUDA, or when the version has no ONNX export."""
    from models.loading import pick_device

    wanted = version.runtime if settings.runtime == "auto" else settings.runtime
    if wanted == "torch" or pick_device(settings.device).startswith("cuda"):
        return "torch"
    if version.onnx_dir is None:
        log.warning("version %s has no ONNX export (built with runtime = torch): serving torch", version.name)
        return "torch"
    return wanted


def sentiment_runtime_for(version: ModelVersion, settings: Settings) -> str:
    """What labels sentiment for `version`: "head" (the head over the encoder pass) when the version has
    no fine-tuned sentiment model, else that model's runtime as `runtime_for` decides the encoder's
    (the forced `runtime` setting, else the build's choice; torch on CUDA or without an export)."""
    from models.loading import pick_device

    if version.sentiment_model_path is None:
        return "head"
    wanted = version.sentiment_runtime if settings.runtime == "auto" else settings.runtime
    if wanted == "torch" or pick_device(settings.device).startswith("cuda") or version.sentiment_onnx_dir is None:
        return "torch"
    return wanted


def sentiment_shares_encoder(version: ModelVersion, settings: Settings) -> bool:
    """Whether a question's sentiment continues from the encoder pass (docs/sentiment.md): the build
    measured the shared path on the runtimes that serve now and approved it (meta
    "sentiment"."shared"), and `sentiment_share_encoder` is on. The engine also checks the loaded
    exports fit (models.sentiment_onnx.shares_prefix_with)."""
    shared = (version.meta.get("sentiment") or {}).get("shared") or {}
    pair = f"{runtime_for(version, settings)}/{sentiment_runtime_for(version, settings)}"
    return bool(settings.sentiment_share_encoder and shared.get("served") and shared.get("pair") == pair)


def _exports_fit(encoder: EncoderRuntime, sentiment: SentimentLabeler) -> bool:
    """The loaded encoder outputs the token states the loaded sentiment model's tail starts from."""
    from models.sentiment_onnx import shares_prefix_with

    if not (isinstance(sentiment, TailLabeler) and sentiment.tail is not None
            and isinstance(encoder, TokenStatesEncoder) and encoder.token_states is not None):
        return False  # no tail graph, or no token states for it to continue from
    problem = shares_prefix_with(encoder.manifest, sentiment.manifest)
    if problem:
        log.warning("sentiment takes its own pass: %s", problem)
    return problem is None


@dataclass(frozen=True)
class Catalogue:
    """What the served version knows, for front ends: its articles (by id) and its intents."""

    model_version: str
    articles: dict[str, Document]
    intents: list[str]

    def article(self, doc_id: str | None) -> Document | None:
        return self.articles.get(doc_id) if doc_id else None

    def titles(self) -> list[tuple[str, str]]:
        """(doc id, title) of every article, sorted by title."""
        return sorted(((doc_id, doc.title) for doc_id, doc in self.articles.items()), key=lambda a: a[1].lower())

    def sections(self, doc_id: str | None) -> list[tuple[str, str]]:
        """(section id, its heading path below the title) of an article's sections, in order; the lead
        (text before the first heading) is "Introduction". [] for an unknown article."""
        from retrieval.kb import split_sections

        doc = self.article(doc_id)
        return [(s.id, " › ".join(s.path[1:]) or "Introduction") for s in split_sections(doc)] if doc else []


class Engine:
    def __init__(self, settings: Settings, *, version: str | None = None, reload_check_seconds: float = 2.0):
        """Serve the champion (following promotions), or exactly `version` when given (pinned)."""
        self.settings = settings
        self.pinned = version
        self.versions = VersionStore.from_settings(settings)
        self.reload_check_seconds = reload_check_seconds
        self._lock = threading.Lock()
        self._served: Served | None = None
        self._stamp = None
        self._last_check = 0.0
        self._encoders: dict[str, EncoderRuntime] = {}
        self._sentiments: dict[tuple, SentimentLabeler] = {}
        self._composers: dict[tuple, Composer] = {}
        self._composer_lock = threading.Lock()
        self.reload(force=True)

    # ----- model versions --------------------------------------------------------------------
    @property
    def served(self) -> Served:
        return self._served

    @property
    def model_version(self) -> str:
        return self._served.version.name

    def catalogue(self) -> Catalogue:
        """The served version's articles and intents (front ends list them; they never read `served`)."""
        served = self._served
        return Catalogue(served.version.name, served.documents, sorted(served.intent_head.labels))

    def reload(self, force: bool = False) -> bool:
        """Load the champion if it changed (or `force`); returns True when a new version is served. A
        champion the model store refuses (a file that does not match its manifest) is not tried again
        until the pointer moves."""
        if self.pinned and not force:
            return False
        stamp = None if self.pinned else self.versions.champion_stamp()
        if not force and stamp == self._stamp:
            return False
        with self._lock:
            try:
                version = self.versions.get(self.pinned) if self.pinned else self.versions.champion()
            except BlobMismatch:
                if self._served is not None:
                    self._stamp = stamp
                raise
            if not force and self._served is not None and version.name == self._served.version.name:
                self._stamp = stamp
                return False
            served = self._load(version)
            self._served, self._stamp = served, stamp  # one reference swap: readers see old or new
        return True

    def maybe_reload(self) -> bool:
        """`reload` at most every reload_check_seconds (each check is one HEAD request with a model
        store). A failure keeps the loaded version serving: the store out of reach, or a new champion
        refused."""
        now = time.monotonic()
        if now - self._last_check < self.reload_check_seconds:
            return False
        self._last_check = now
        try:
            changed = self.reload()
        except CsbotError as exc:
            self._check = {"ok": False, "error": str(exc), "at": time.time()}
            if self._served is None:
                raise
            log.warning("still serving %s: %s", self._served.version.name, exc)
            return False
        self._check = {"ok": True, "at": time.time()}
        return changed

    def store_status(self) -> dict:
        """Where the versions come from and how the last check for a new champion went (/healthz):
        {"location", "remote", "ok", "checked_seconds_ago", "error"?}. Read from the last check, so a
        store out of reach never makes the health check wait."""
        check = getattr(self, "_check", None) or {"ok": True, "at": None}
        status = {"location": self.versions.location, "remote": self.versions.remote is not None, "ok": check["ok"],
                  "checked_seconds_ago": round(time.time() - check["at"], 1) if check["at"] else None}
        if "error" in check:
            status["error"] = check["error"]
        return status

    def _encoder_for(self, version: ModelVersion) -> EncoderRuntime:
        runtime = runtime_for(version, self.settings)
        key = f"{version.encoder_name}#{runtime}"
        if key not in self._encoders:
            if runtime == "torch":
                self._encoders[key] = Encoder(version.encoder_name, self.settings.device)
            else:
                self._encoders[key] = load_encoder(version.onnx_dir, runtime, threads=self.settings.torch_threads,
                                                     workers=self.settings.batch_threads)
        return self._encoders[key]

    def _sentiment_for(self, version: ModelVersion) -> SentimentLabeler:
        runtime = sentiment_runtime_for(version, self.settings)
        if runtime == "head":
            return version.load_sentiment()
        key = ((version.meta.get("sentiment") or {}).get("artefact_sha256") or str(version.path), runtime)
        if key not in self._sentiments:  # the same artefact is loaded once however many versions carry it
            self._sentiments = {key: version.load_sentiment(runtime, threads=self.settings.torch_threads,
                                                                     workers=self.settings.batch_threads)}
        return self._sentiments[key]

    @property
    def sentiment_runtime(self) -> str:
        """What labels sentiment in the served version: head, torch, onnx or onnx-int8."""
        return sentiment_runtime_for(self._served.version, self.settings)

    @property
    def runtime(self) -> str:
        """The encoder runtime of the served version: torch, onnx or onnx-int8."""
        return runtime_for(self._served.version, self.settings)

    def _load(self, version: ModelVersion) -> Served:
        documents = {doc.id: doc for doc in version.documents()}
        by_label: dict[str, list[str]] = defaultdict(list)
        for doc in documents.values():
            by_label[doc.label].append(doc.id)
        index = version.load_index()
        threshold = self.settings.confidence_threshold
        if threshold is None:
            threshold = float(version.meta.get("oos_threshold", DEFAULT_OOS_THRESHOLD))
        intent_head = version.load_intent_head()
        params = DecisionParams.from_dict(version.meta.get("decision"), max_sources=self.settings.max_sources,
                                          clarify_margin=self.settings.clarify_margin)
        sections = {s.id: s for doc in documents.values() for s in split_sections(doc)}
        encoder, sentiment = self._encoder_for(version), self._sentiment_for(version)
        shares = sentiment_shares_encoder(version, self.settings) and _exports_fit(encoder, sentiment)
        return Served(
            params=params,
            sections=sections,
            chunk_markdown=chunk_markdown(documents.values(), self.settings.chunk_words),
            label_of={doc_id: doc.label for doc_id, doc in documents.items()},
            version=version,
            encoder=encoder,
            intent_head=intent_head,
            label_index={label: i for i, label in enumerate(intent_head.labels)},
            sentiment=sentiment,
            shares_encoder=shares,
            index=index,
            documents=documents,
            docs_by_label=dict(by_label),
            threshold=threshold,
            scope=self._scope_for(documents.values()),
        )

    def _scope_for(self, documents) -> Scope | None:
        if not self.settings.decline_other_products:
            return None
        extra = [n for n in self.settings.other_products.split(",") if n.strip()]
        return Scope([f"{doc.title}\n{doc.answer}\n" + "\n".join(doc.questions) for doc in documents],
                     names=load_names(extra=extra))

    def embed(self, texts: list[str]):
        """The served encoder's sentence embeddings of `texts` (numpy, one row each): what grouping
        questions (training/gaps.py) compares, in the same space the index searches."""
        return self._served.encoder.embed([clean_text(t) for t in texts])

    # ----- answering ---------------------------------------------------------------------------
    def answer(self, text: str, context: list[str] | None = None) -> Answer:
        return self.answer_batch([text], [context or []])[0]

    def answer_batch(self, texts: list[str], contexts: list[list[str]] | None = None) -> list[Answer]:
        """Select the answers to many messages with one batched encoder pass. The engine only
        selects: whether to compose (and whether to answer at all) is the answer policy's
        (serving/policy.py), which calls `compose` / `compose_stream` at most once per answer."""
        texts = [clean_text(t) for t in texts]  # no lone surrogate or control character reaches a tokenizer
        contexts = None if contexts is None else [[clean_text(t) for t in c or []] for c in contexts]
        return self._select_batch(texts, contexts)

    def _select_batch(self, texts: list[str], contexts: list[list[str]] | None = None) -> list[Answer]:
        self.maybe_reload()
        served = self._served
        contexts = contexts or [[] for _ in texts]
        if len(contexts) != len(texts):
            raise ValueError("one context per text")
        inputs = [" ".join(t.split()) for t in texts]
        # Short follow-ups are also read with the thread's previous turn; both go in the same batch.
        # Longer messages in a thread are also read with the two turns before them, and that reading is
        # used when it matches clearly closer or settles a clarifying question: "can I bring my dog?"
        # after "I'm staying at the Acorn Guest House".
        followup_of: dict[int, int] = {}
        for i, (text, context) in enumerate(zip(inputs, contexts)):
            turns = [c.strip() for c in context if c and c.strip()]
            if not turns or not text:
                continue
            followup_of[i] = len(inputs)
            short = len(text.split()) <= self.settings.followup_max_words
            inputs.append(" ".join((turns[-1:] if short else turns[-2:]) + [text]))
        started = None
        if len(inputs) == 1 and not served.sentiment.reads_encoder and one_text_workers(self.settings.batch_threads) > 1:
            # One question, and its sentiment is a pass of its own: the model's whole pass starts on a second
            # core at once and runs while this thread encodes, searches and decides (the label a watched
            # channel's message of the same text gets), unless that thread is busy with another question's;
            # then the label continues from this pass's token states, as in a batch.
            started = beside("sentiment", served.sentiment.predict, inputs[:len(texts)])
        if served.shares_encoder and started is None:
            encoded = served.encoder.encode(inputs, states=True)
        else:
            encoded = served.encoder.encode(inputs)
        intent_probs = served.intent_head.predict_proba(encoded)
        scores, positions = served.index.search(encoded.embeddings, SEARCH_K)
        decisions = [decide(served.index.entries, served.label_of, served.intent_head.labels, served.label_index,
                            intent_probs[i], scores[i], positions[i], served.index.lexical_search(inputs[i], SEARCH_K),
                            served.params, served.threshold, served.docs_by_label)
                     for i in range(len(inputs))]
        sentiments = started.result() if started else self._label_sentiment(served, inputs[:len(texts)], encoded)
        answers = []
        for i, text in enumerate(texts):
            decision, used_context = decisions[i], False
            j = followup_of.get(i)
            if j is not None:
                alt, short = decisions[j], len(inputs[i].split()) <= self.settings.followup_max_words
                weak = short and decision.confidence < FOLLOWUP_STANDALONE and alt.confidence > decision.confidence
                # A longer message is read with the thread when the thread makes the match clearly closer
                # (the entity it is about was named earlier) or settles a clarifying question.
                closer = alt.signals.get("top_cos", 0.0) > decision.signals.get("top_cos", 0.0) + CONTEXT_GAIN
                settled = (bool(decision.clarify) or (closer and not short)) and not alt.clarify and not alt.handoff
                if weak or settled:
                    decision, used_context = alt, True
            label, sentiment_scores = sentiments[i]
            answers.append(self._make_answer(served, text, decision, label, sentiment_scores, used_context))
        return answers

    # ----- composed answers (serving/compose.py) ------------------------------------------------------
    def mode_for(self, requested: str | None = None) -> str:
        """"select" or "compose": `requested` (or the answer_mode setting); "auto" composes when the
        served version's composer was approved by the retrain's gate."""
        mode = requested or self.settings.answer_mode
        if mode not in ANSWER_MODES:
            raise ValueError(f"unknown answer mode {mode!r}; use one of {', '.join(ANSWER_MODES)}")
        if mode == "auto":
            return "compose" if self._served.version.composer.get("approved") else "select"
        return mode

    def composer(self) -> Composer:
        """The served version's composer (its LoRA adapter when a retrain trained one), loaded on first use."""
        version = self._served.version
        cfg = self.settings.compose
        key = (cfg.backend, cfg.model, cfg.endpoint_url, str(version.composer_dir or ""))
        with self._composer_lock:
            if key not in self._composers:
                from models.composer import load_chat_model

                model = load_chat_model(self.settings, adapter_dir=version.composer_dir)
                self._composers = {key: Composer(model, cfg)}  # only the served version's stays loaded
            return self._composers[key]

    def passages(self, answer: Answer) -> list[Passage]:
        """The sections a composer reads for `answer`: the chosen section first (as select mode
        quotes it), then the best-matching section of each further source — for a clarifying
        question, the section of each option, so one answer can draw on both articles —
        `compose_sections` at most; the chosen one clipped to `compose_section_words`, the others to
        half that (a shorter prompt is a sooner first token)."""
        served, cfg = self._served, self.settings.compose
        if not answer.doc_id or answer.doc_id not in served.documents:
            return []
        chosen = served.documents[answer.doc_id]
        heading = (answer.section or {}).get("heading") or ""
        passages = [Passage(1, chosen.id, chosen.title, heading, chosen.url, clip_words(answer.text, cfg.section_words))]
        question = set(answer.question.lower().split())
        wanted = [(o["doc_id"], o.get("section")) for o in answer.clarify] + [(s.doc_id, None) for s in answer.sources]
        for doc_id, section_id in wanted:
            if len(passages) >= cfg.sections:
                break
            doc = served.documents.get(doc_id)
            if doc is None or any(p.doc_id == doc_id for p in passages):
                continue
            best = served.sections.get(section_id) if section_id else None
            if best is None or best.doc_id != doc_id:
                sections = [s for s in served.sections.values() if s.doc_id == doc.id and s.text.strip()]
                best = max(sections, key=lambda s: len(question & set(s.text.lower().split())), default=None)
            text = best.text if best is not None else doc.answer
            passages.append(Passage(len(passages) + 1, doc.id, doc.title, best.heading if best else "", doc.url,
                                    clip_words(text, max(20, cfg.section_words // 2))))
        return passages

    def compose(self, answer: Answer, context: list[str] | None = None) -> Answer:
        """`answer` (select mode's) composed by the language model: the composed text with its
        sources in citation order (a clarifying question's options composed into one answer); a
        hand-off when the model abstains; the select answer itself (with the composition's report)
        when the guard, a budget or the backend fails. Hand-offs are not composed."""
        if answer.handoff or not answer.doc_id:
            return answer
        passages = self.passages(answer)
        composition = self.composer().compose(answer.question, passages, self._turns(context))
        return self.composed_answer(answer, passages, composition)

    def compose_stream(self, answer: Answer, context: list[str] | None = None) -> "ComposedStream":
        """The composition of `answer` as checked sentences, for a front end that streams (Slack)."""
        passages = self.passages(answer)
        return ComposedStream(self, answer, passages,
                              self.composer().stream(answer.question, passages, self._turns(context)))

    def composed_answer(self, answer: Answer, passages: list[Passage], composition: Composition) -> Answer:
        report = composition.to_dict()
        # What the model read (the retrain rebuilds the prompt of a voted answer from it).
        report["passages"] = [{"n": p.n, "doc_id": p.doc_id, "heading": p.heading} for p in passages]
        if composition.outcome == "composed":
            # Every passage is a source, in prompt order, so that [n] in the text is sources[n - 1].
            sources = [Source(p.doc_id, p.title, p.url, next((s.score for s in answer.sources if s.doc_id == p.doc_id),
                                                              0.0)) for p in passages]
            # The answer is about the first section it cites: when that is another article than the
            # select answer's ([2] of a clarifying question's options, say), that article is the
            # answer's, so a 👍 teaches the classifier the article the reader actually got.
            cited = sorted(composition.guard.cited) if composition.guard else []
            lead = next((p for p in passages if cited and p.n == cited[0]), None)
            doc_id, intent = answer.doc_id, answer.intent
            if lead is not None and lead.doc_id != doc_id and lead.doc_id in self._served.documents:
                doc_id, intent = lead.doc_id, self._served.documents[lead.doc_id].label
            return dataclasses.replace(answer, text=composition.text, sources=sources, section=None, mode="compose",
                                       clarify=[], composition=report, doc_id=doc_id, intent=intent)
        if composition.outcome == "abstained":
            return dataclasses.replace(answer, text=HANDOFF_TEXT, intent=OUT_OF_SCOPE, handoff=True, doc_id=None,
                                       section=None, clarify=[], sources=[], mode="compose", composition=report)
        log.info("composing %s fell back to the select answer: %s", answer.answer_id, composition.reason)
        return dataclasses.replace(answer, composition=report)

    def _turns(self, context: list[str] | None) -> list[str]:
        turns = [t for t in (context or []) if t and t.strip()]
        return turns[-self.settings.compose.turns:] if self.settings.compose.turns > 0 else []

    def sentiment(self, texts: list[str]) -> list[tuple[str, dict[str, float]]]:
        """Sentiment only (no retrieval): for watched channels."""
        self.maybe_reload()
        served = self._served
        texts = [clean_text(t) for t in texts]
        return self._label_sentiment(served, texts, served.encoder.encode(texts) if served.sentiment.reads_encoder else None)

    @staticmethod
    def _label_sentiment(served: Served, texts: list[str], encoded) -> list[tuple[str, dict[str, float]]]:
        """One (label, scores) per text: the head reads the shared pass, a fine-tuned model the texts (or,
        for questions, the encoder pass's token states: `Served.shares_encoder`)."""
        if served.sentiment.reads_encoder:
            return served.sentiment.predict(encoded)[:len(texts)]
        if served.shares_encoder and encoded is not None and encoded.token_states is not None:
            return served.sentiment.predict_shared(texts, encoded.token_states[:len(texts)])
        return served.sentiment.predict(texts)

    def _quote(self, served: Served, doc: Document, section_id: str | None, chunk: str | None) -> tuple[str, dict | None]:
        """What an answer from `doc` shows: the whole article when it is short and the match is its
        title or lead; else the matching section (its best-matching part when the section is long)."""
        words = len(doc.answer.split())
        chosen = served.sections.get(section_id) if section_id else None
        if chosen is not None and chosen.doc_id != doc.id:
            chosen = None
        if chosen is None or (not chosen.heading and words <= self.settings.section_max_words):
            return doc.answer, None
        text = chosen.text
        if len(text.split()) > self.settings.section_max_words and chunk:
            text = served.chunk_markdown.get(chunk, text)  # the matching part of a long section
        return text, {"id": chosen.id, "heading": chosen.heading, "path": list(chosen.path)}

    def pick(self, question: str, doc_id: str, section_id: str | None = None) -> Answer:
        """The answer a user chose from a clarifying question: that article (its section, when one
        was offered), with confidence 1. Raises KeyError for an article the served KB lacks."""
        served = self._served
        doc = served.documents[doc_id]
        text, section = self._quote(served, doc, section_id, None)
        return Answer(
            answer_id=uuid.uuid4().hex[:16], question=question, text=text, intent=doc.label, confidence=1.0,
            sentiment="neutral", sentiment_scores={k: float(k == "neutral") for k in SENTIMENT_LABELS},
            sources=[Source(doc.id, doc.title, doc.url, 1.0)], handoff=False, model_version=served.version.name,
            doc_id=doc.id, section=section)

    def section_text(self, section_id: str) -> str | None:
        """The Markdown of one section of the served KB (a clarifying pick is answered with it)."""
        section = self._served.sections.get(section_id)
        return section.text if section else None

    def _make_answer(self, served: Served, question: str, d: Decision, sentiment: str,
                     sentiment_scores: dict[str, float], used_context: bool) -> Answer:
        sources = [Source(doc_id, served.documents[doc_id].title, served.documents[doc_id].url, score)
                   for doc_id, score in d.sources if doc_id in served.documents]
        section = None
        clarify = []
        others = served.scope.other_products(question) if served.scope is not None else []
        if others:  # another product's question: declined, never answered from our nearest article
            d = dataclasses.replace(d, handoff=True, clarify=[])
        if d.handoff or d.doc_id is None:
            text, intent = HANDOFF_TEXT, OUT_OF_SCOPE
        else:
            text, section = self._quote(served, served.documents[d.doc_id], d.section, d.chunk_of.get(d.doc_id))
            intent = d.intent
            if d.clarify:
                clarify = [{"doc_id": doc_id, "title": served.documents[doc_id].title,
                            "section": sec, "intent": served.documents[doc_id].label, "score": round(score, 4),
                            "heading": served.sections[sec].heading if sec in served.sections else ""}
                           for doc_id, score, sec in d.clarify if doc_id in served.documents]
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
            section=section,
            clarify=clarify,
            other_products=others,
        )


class ComposedStream:
    """A composition in progress: iterate `pieces()` for the checked sentences; `answer` is then the
    final Answer (composed, a hand-off, or the select answer when the composition failed —
    `pieces()` raises GuardFailure in that case, once something was already shown)."""

    def __init__(self, engine: Engine, select: Answer, passages: list[Passage], stream):
        self.engine, self.select, self.passages, self._stream = engine, select, passages, stream
        self.answer: Answer | None = None

    def pieces(self) -> Iterator[str]:
        try:
            composition = yield from self._stream
        except GuardFailure as failure:
            self.answer = self.engine.composed_answer(self.select, self.passages, failure.composition)
            raise
        self.answer = self.engine.composed_answer(self.select, self.passages, composition)
