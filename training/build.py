"""Build a model version from a knowledge base: encode, index, train the intent head, package.

Used by `csbot ingest` (new or changed KB) and by the nightly retrain (new training data). The
version is complete on disk before anyone can promote it (see serving/versions.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.settings import Settings
from models.encoder import Encoder
from models.sentiment import head_path
from retrieval.index import LEARNED, Entry, VectorIndex
from retrieval.kb import SECTION_SEP, Document, chunk_document, split_sections
from retrieval.ranking import SEARCH_K, DecisionParams, decide, tune
from serving.versions import ONNX_DIR, ModelVersion, TrainingExample, VersionStore
from training.export import (prepare_runtime, prepare_sentiment, remember, remember_sentiment, sentiment_artefact,
                             wants_onnx)
from training.finetune import finetune_encoder
from training.fit_heads import train_intent_head

log = logging.getLogger(__name__)

HEAD_LEADS_COVERAGE = 0.8  # share of intents with KB example questions for the head to lead (ranking.py)
HEAD_INFORMATIVE_COVERAGE = 0.5  # share of intents with example questions for the head to have a say at all
DECISION_THRESHOLD = 0.5  # the confidence below which a version hands off: its tuned thresholds map to it

OFFTOPIC_QUESTIONS = Path(__file__).resolve().parent.parent / "models" / "assets" / "offtopic_questions.txt"


@dataclass
class BuildResult:
    version: ModelVersion
    seconds: float
    counts: dict = field(default_factory=dict)


def kb_hash(documents: list[Document]) -> str:
    digest = hashlib.sha256()
    for doc in sorted(documents, key=lambda d: d.id):
        digest.update(doc.content_hash().encode())
    return digest.hexdigest()[:16]


def index_entries(documents: list[Document], chunk_words: int,
                  learned: list[TrainingExample] | None = None) -> list[Entry]:
    """What the index holds for each article: its title, each section heading (as "Title › Heading"),
    its example questions, its sections' chunks (each under its section id); and one `learned` entry
    per labelled question from feedback (filed under its article when known, else the first article
    of its intent; `assign_learned_sections` later files it under the section that answers it), so
    questions users confirmed or corrected feed the engine's nearest-neighbour vote."""
    entries: list[Entry] = []
    first_doc_of: dict[str, str] = {}
    doc_ids = {doc.id for doc in documents}
    for doc in documents:
        first_doc_of.setdefault(doc.label, doc.id)
        sections = split_sections(doc)
        lead = next((s.id for s in sections if not s.heading), "")
        entries.append(Entry(doc.id, "title", doc.title, lead))  # a title match points at the article's lead
        entries.extend(Entry(doc.id, "heading", SECTION_SEP.join(s.path), s.id) for s in sections if s.heading)
        entries.extend(Entry(doc.id, "question", q) for q in doc.questions)
        entries.extend(Entry(doc.id, "chunk", c.text, c.section) for c in chunk_document(doc, chunk_words))
    for ex in learned or []:
        doc_id = ex.doc_id if ex.doc_id in doc_ids else first_doc_of.get(ex.intent)
        if doc_id is not None:
            section = ex.section if ex.section and doc_id == ex.doc_id and ex.section.startswith(f"{doc_id}#") else ""
            entries.append(Entry(doc_id, LEARNED, ex.text, section))
    return entries


def assign_learned_sections(entries: list[Entry], vectors: np.ndarray) -> list[Entry]:
    """File each learned question under the section of its article that is closest to it, so a
    correction that names an article also teaches which part of it answers the question. A question
    whose 👍 confirmed a section keeps that one."""
    sections_of: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        if entry.kind in ("chunk", "heading") and entry.section:
            sections_of.setdefault(entry.doc_id, []).append(i)
    out = list(entries)
    for i, entry in enumerate(entries):
        if entry.kind == LEARNED and not entry.section and sections_of.get(entry.doc_id):  # 👍'd ones keep theirs
            rows = sections_of[entry.doc_id]
            best = rows[int(np.argmax(vectors[rows] @ vectors[i]))]
            out[i] = Entry(entry.doc_id, LEARNED, entry.text, entries[best].section)
    return out


def offtopic_questions() -> list[str]:
    return [line.strip() for line in OFFTOPIC_QUESTIONS.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def tune_decision(encoder: Encoder, index: VectorIndex, head, documents: list[Document], search_k: int) -> dict:
    """The version's answer/hand-off thresholds, tuned on generic off-topic questions
    (retrieval/ranking.py: `tune`) through the same decision the engine makes."""
    questions = offtopic_questions()
    encoded = encoder.encode(questions)
    probs = head.predict_proba(encoded)
    scores, positions = index.search(encoded.embeddings, search_k)
    label_of = {doc.id: doc.label for doc in documents}
    label_index = {label: i for i, label in enumerate(head.labels)}
    params = DecisionParams()
    cos, head_p = [], []
    for i, text in enumerate(questions):
        d = decide(index.entries, label_of, head.labels, label_index, probs[i], scores[i], positions[i],
                   index.lexical_search(text, search_k), params)
        cos.append(d.signals["top_cos"])
        head_p.append(d.signals["head_p"])
    labels = {doc.label for doc in documents}
    with_questions = {doc.label for doc in documents if doc.questions}
    learned = {label_of[e.doc_id] for e in index.entries if e.kind == LEARNED and e.doc_id in label_of}
    # The head is trained on titles, headings and example questions. With example questions (the KB's or
    # learned from votes) for fewer than HEAD_INFORMATIVE_COVERAGE of the intents, it pulls questions towards
    # the intents that have some (a small team's first votes on two of eight articles took two of the other
    # articles' own sentences): retrieval alone decides then.
    informative = len(with_questions | learned) >= HEAD_INFORMATIVE_COVERAGE * len(labels)
    return tune(cos, head_p, head_informative=informative,
                head_leads=len(with_questions) >= HEAD_LEADS_COVERAGE * len(labels))


def finetune_plan(documents: list[Document], extra: list[TrainingExample]) -> str | None:
    """Why the ingest-time fine-tuning cannot run, or None when it can: it pairs each intent's
    title with its example questions (from the KB or from feedback), so it needs at least two
    intents that have example questions."""
    with_questions = {doc.label for doc in documents if doc.questions} | {ex.intent for ex in extra}
    if len(with_questions) < 2:
        return ("the knowledge base has no example questions to fine-tune on, so the encoder is used as "
                "it is; answers come from its articles, and feedback teaches it in the nightly retrain")
    return None


def build_version(
    documents: list[Document],
    settings: Settings,
    *,
    extra_examples: list[TrainingExample] | None = None,
    encoder_dir: Path | None = None,
    parent: str | None = None,
    meta: dict | None = None,
    runtime_verdict: dict | None = None,
    composer_dir: Path | None = None,
    composer_meta: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build (but do not promote) a new version from `documents` plus `extra_examples`.

    The version's encoder is `encoder_dir` when given (an already fine-tuned sentence-transformers
    folder, copied into the version), else the configured base encoder fine-tuned on the KB's
    questions (`finetune.epochs` > 0), else the base encoder itself. `composer_dir` (a LoRA adapter
    folder: the retrain's, or the parent's carried over) is copied into the version and
    `composer_meta` (the composer gate's verdict) becomes its meta["composer"]. `progress` is told
    each stage as it starts ("encoding 1,234 texts (1,100 chunks)"), for a progress display.
    """
    if not documents:
        from core.errors import UserError

        raise UserError("the knowledge base is empty: nothing to build")
    started = time.perf_counter()
    _check_sentiment_files(settings)  # a missing file fails here, not after the fine-tuning
    versions = VersionStore.from_settings(settings)
    extra_examples = extra_examples or []
    label_of = {doc.id: doc.label for doc in documents}
    known_labels = set(label_of.values())
    extra = [ex for ex in extra_examples if ex.intent in known_labels]
    notes: list[str] = []
    stage = progress or _silent
    with versions.draft() as draft:
        entries = index_entries(documents, settings.chunk_words, learned=extra)
        rows = _TrainingRows.of(entries, extra, label_of)
        if composer_dir is not None:
            draft.copy_composer(Path(composer_dir))
        _place_encoder(draft, documents, entries, extra, rows, settings, encoder_dir, notes, stage)
        stage("loading the encoder")
        source, encoder, encoder_version = _load_encoder(draft, settings)
        runtime = None
        if wants_onnx(settings):  # compressed serving: export, score fp32 vs int8, build with the winner
            reuse = Path(encoder_dir).parent / ONNX_DIR if encoder_dir is not None else None
            encoder, runtime = prepare_runtime(draft, source, encoder_version, documents, settings, encoder,
                                               reuse=reuse, verdict=runtime_verdict, progress=stage)
        torch_version = encoder_version
        if runtime and runtime["served"] != "torch":
            encoder_version = f"{encoder_version}+{runtime['served']}"  # the index records the runtime that built it
        entries, vectors = _build_index(draft, encoder, entries, settings, encoder_version, stage)
        decision = _train_heads(draft, encoder, vectors, rows, documents, settings, stage)
        sentiment = _sentiment(draft, settings, versions, runtime, stage)
        stage("saving the version")
        draft.save_documents(documents)
        draft.save_examples(extra)
        counts = {"documents": len(documents), "index_entries": len(entries), "kb_examples": len(rows.train),
                  "extra_examples": len(extra), "intents": len(known_labels)}
        version = draft.commit({
            **(meta or {}),
            "parent": parent,
            "encoder": settings.encoder,
            "encoder_version": encoder_version,
            "kb_hash": kb_hash(documents),
            "oos_threshold": DECISION_THRESHOLD,
            "decision": decision,
            "runtime": runtime or {"served": "torch", "reason": "runtime = torch, or CUDA: no ONNX export"},
            "sentiment": sentiment,
            "notes": notes,
            "counts": counts,
            "build_seconds": round(time.perf_counter() - started, 2),
            **({"composer": composer_meta} if composer_meta is not None else {}),
        })
        remember(torch_version, version.onnx_dir)
        remember_sentiment(version)
    return BuildResult(version, time.perf_counter() - started, counts)


def _check_sentiment_files(settings: Settings) -> None:
    """Fail on a missing sentiment head or model file before any work is done."""
    head_path(settings.sentiment_head)
    if settings.uses_sentiment_model:
        sentiment_artefact(settings)  # a brought classifier is loaded and its labels mapped here


@dataclass
class _TrainingRows:
    """The intent head's rows: index entries that are titles, headings and questions (`train`, their
    positions), then the learned ones (`learned`, one per `extra` example, in order); their texts and labels."""

    train: list[int]
    learned: list[int]
    texts: list[str]
    labels: list[str]

    @classmethod
    def of(cls, entries: list[Entry], extra: list[TrainingExample], label_of: dict[str, str]) -> "_TrainingRows":
        train = [i for i, e in enumerate(entries) if e.kind in ("title", "heading", "question")]
        learned = [i for i, e in enumerate(entries) if e.kind == LEARNED]
        texts = [entries[i].text for i in train] + [ex.text for ex in extra]
        labels = [label_of[entries[i].doc_id] for i in train] + [ex.intent for ex in extra]
        return cls(train, learned, texts, labels)


def _place_encoder(draft, documents: list[Document], entries: list[Entry], extra: list[TrainingExample],
                   rows: _TrainingRows, settings: Settings, encoder_dir: Path | None, notes: list[str],
                   stage: Callable[[str], None]) -> None:
    """Put the version's own encoder in the draft: `encoder_dir` copied, or the base encoder fine-tuned on
    the KB's titles and questions; neither (the base encoder serves) when fine-tuning is off or cannot run."""
    known_labels = {doc.label for doc in documents}
    if encoder_dir is not None:
        draft.copy_encoder(encoder_dir)
    elif settings.finetune.epochs > 0 and (skip := finetune_plan(documents, extra)):
        log.warning("not fine-tuning the encoder at ingest: %s", skip)
        notes.append(f"not fine-tuned: {skip}")
    elif settings.finetune.epochs > 0 and len(known_labels) > 1:
        positions = rows.train + [-1] * len(extra)
        tune_texts = [t for t, i in zip(rows.texts, positions) if i < 0 or entries[i].kind != "heading"]
        tune_labels = [l for l, i in zip(rows.labels, positions) if i < 0 or entries[i].kind != "heading"]
        log.info("fine-tuning the encoder on %d titles and labelled questions", len(tune_texts))
        stage(f"fine-tuning the encoder on {len(tune_texts):,} titles and questions")
        finetune_encoder(settings.encoder, tune_texts, tune_labels, draft.encoder_dir, settings.finetune,
                         seed=settings.seed, device=settings.device)


def _load_encoder(draft, settings: Settings) -> tuple[str, Encoder, str]:
    """(source, the loaded encoder, its version): the draft's own encoder when it has one, else the base."""
    if draft.has_encoder:
        source = str(draft.encoder_dir)
        return source, Encoder(source, settings.device, cached=False), _folder_version(draft.encoder_dir)
    return settings.encoder, Encoder(settings.encoder, settings.device), _encoder_version(settings.encoder)


def _build_index(draft, encoder, entries: list[Entry], settings: Settings, encoder_version: str,
                 stage: Callable[[str], None]) -> tuple[list[Entry], np.ndarray]:
    """Encode every entry, file learned questions under their sections, and save the index; returns the
    entries as filed and their vectors."""
    log.info("encoding %d index entries", len(entries))
    chunks = sum(e.kind == "chunk" for e in entries)
    stage(f"encoding {len(entries):,} texts ({chunks:,} chunks)")
    vectors = encoder.embed([e.text for e in entries])
    entries = assign_learned_sections(entries, vectors)
    stage(f"building the index of {len(entries):,} vectors")
    index = VectorIndex.build(vectors, entries, encoder=settings.encoder, encoder_version=encoder_version,
                              index_type=settings.index_type, hnsw_min_vectors=settings.hnsw_min_vectors,
                              seed=settings.seed)
    draft.save_index(index)
    return entries, vectors


def _train_heads(draft, encoder, vectors: np.ndarray, rows: _TrainingRows, documents: list[Document],
                 settings: Settings, stage: Callable[[str], None]) -> dict:
    """Train and save the intent head, tune the answer thresholds (returned), save the sentiment head."""
    stage("training the intent classifier")
    features = vectors[rows.train + rows.learned]  # learned rows are `extra`, in order
    head = train_intent_head(features, rows.labels, seed=settings.seed)
    draft.save_intent_head(head)
    stage("tuning the answer thresholds")
    decision = tune_decision(encoder, draft.load_index(), head, documents, search_k=SEARCH_K)
    log.info("thresholds tuned for this version: cosine %.3f, intent probability %.3f",
             decision["cos_threshold"], decision["head_threshold"])
    draft.save_sentiment_head(head_path(settings.sentiment_head))
    return decision


def _sentiment(draft, settings: Settings, versions: VersionStore, runtime: dict | None,
               stage: Callable[[str], None]) -> dict:
    """The version's meta["sentiment"]: the fine-tuned model prepared (exported like the encoder), or the head."""
    if not settings.uses_sentiment_model:
        return {"model": "head", "served": "head", "reason": "sentiment_model = none: the head over the encoder pass"}
    stage("preparing the sentiment model")
    return prepare_sentiment(draft, sentiment_artefact(settings), settings, versions,
                             encoder_runtime=(runtime or {}).get("served", "torch"), progress=stage)


def carry_sentiment(settings: Settings, champion: ModelVersion, head: Path | None = None) -> Settings:
    """Settings that rebuild with the champion's sentiment: its head (or `head`, an updated one), and its
    fine-tuned model when it serves one and the settings still ask for one (`sentiment_model` not
    "none"), so a retrain, the gate's reference build and `forget` keep what corrections taught it. A
    different `sentiment_model` takes effect at the next `csbot ingest`."""
    changes = {"sentiment_head": str(head or champion.sentiment_head_path)}
    if settings.uses_sentiment_model and champion.sentiment_model_path is not None:
        changes["sentiment_model"] = str(champion.sentiment_model_path)
    return settings.replace(**changes)


def _silent(label: str) -> None:
    """No progress display."""


def _encoder_version(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def _folder_version(folder: Path) -> str:
    """A fine-tuned encoder's identity: the hash of its weights."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")) or sorted(folder.rglob("*.bin")):
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]
