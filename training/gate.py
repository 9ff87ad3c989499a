"""The promotion gate: champion and candidate scored on one frozen held-out set, and the decision
rules. (The run's report is training/report.py.)

Held-out protocol (see docs/retrain.md):
- `CSBOT_HOME/heldout/heldout.jsonl` is created by the first retrain of a knowledge base: for each
  intent with at least `heldout_min_questions` example questions, a deterministic
  `heldout_fraction` of them (the lowest SHA-256 of the normalised text) is frozen. Intents added
  later get their share when they first appear; frozen rows never change. Rows whose intent left
  the KB are not scored.
- Trusted admin corrections (users in `slack_admin_users`) are appended: all their out-of-scope
  corrections, and a deterministic `admin_heldout_fraction` of the others.
- Labelled feedback is appended too, so a knowledge base of plain articles (no example questions)
  gets a held-out set from its first feedback: of the resolved labelled questions (👍, corrections,
  clarifying picks — after the poisoning defences of training/feedback_data.py) of intents that
  at least `heldout_feedback_min_users` distinct users confirmed in the run, a deterministic
  `heldout_feedback_fraction` (lowest SHA-256 of the text) is frozen; one user's uncorroborated
  rows are at most `max_user_share` of those added (never fewer than HELDOUT_USER_FLOOR). Frozen
  rows are never trained on.
- With fewer than `gate_min_heldout` in-scope rows the gate does not decide (training/steps.py
  ends the run "not enough held-out data" before training, and the feedback waits).
- Generic off-topic questions (`builtin_oos`) measure out-of-scope recall.
- Sentiment corrections have their rows in the same set (source "sentiment", with the `sentiment`
  label and no intent): a deterministic SENTIMENT_HELDOUT_FRACTION (by the SHA-256 of the text) of a
  run's resolved corrections is frozen; the sentiment update is judged on them and never trains on
  them. They are not rows of the classifier's gate (`eval_rows`).
- Every held-out text is kept out of the builds the gate scores: the candidate is scored as a
  build from the KB minus the held-out questions (plus the feedback examples, with its new encoder),
  and the champion as a *reference rebuild* of the same kind (its own encoder and examples, the
  intent head refitted without the held-out texts), both in temporary folders. The champion's
  encoder was tuned with those questions, so the comparison leans towards the champion
  (conservative). Only a candidate that passes is then built from the whole KB and served.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.answer import OUT_OF_SCOPE
from core.settings import RetrainSettings
from retrieval.kb import Document, sentences, split_sections
from training.feedback_data import normalize, stable_fraction

HELDOUT_DIR = "heldout"
HELDOUT_FILE = "heldout.jsonl"
HELDOUT_USER_FLOOR = 5  # one user's uncorroborated held-out rows may always reach this many
SENTIMENT_SOURCE = "sentiment"
SENTIMENT_HELDOUT_FRACTION = 0.2  # of a run's resolved sentiment corrections

# Questions no customer-service knowledge base answers: out-of-scope recall needs some.
BUILTIN_OOS = [
    "what is the capital of australia", "tell me a joke", "how tall is mount everest",
    "who won the football world cup in 2014", "translate good morning into german",
    "what's 17 times 23", "set an alarm for 6am tomorrow", "what's the weather like in paris today",
    "recommend a good science fiction novel", "how many calories are in a banana",
    "play some relaxing music", "who painted the mona lisa", "what's a good recipe for lasagna",
    "how do i change a flat tyre on a bicycle", "what time is it in tokyo",
    "how far is the moon from the earth", "write me a poem about the sea",
    "what is the meaning of life", "how do you say thank you in japanese",
    "what should i name my puppy", "how long should i boil an egg", "who is the president of france",
    "can you help me with my chemistry homework", "what's the best way to learn the guitar",
    "how many legs does a spider have", "book me a table for two at an italian restaurant",
    "what year did the titanic sink", "is it going to rain this weekend", "roll a dice for me",
    "what's the square root of 144", "suggest a workout for my legs", "how do plants make oxygen",
    "what movies are playing tonight", "teach me a card trick", "how do i get rid of hiccups",
    "what is the tallest building in the world", "remind me to call my mother at 5",
    "what rhymes with orange", "how old is the universe", "who wrote pride and prejudice",
]


# ----- the frozen held-out set ------------------------------------------------------------------

@dataclass
class HeldoutSet:
    path: Path
    rows: list[dict] = field(default_factory=list)  # {text, intent, doc_id, source, added}

    @classmethod
    def load(cls, home: Path) -> "HeldoutSet":
        path = Path(home) / HELDOUT_DIR / HELDOUT_FILE
        rows = []
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return cls(path, rows)

    def texts(self) -> set[str]:
        return {normalize(r["text"]) for r in self.rows}

    def update_from_kb(self, documents: list[Document], config) -> int:
        """Freeze the held-out share of every intent that has none yet; returns rows added."""
        covered = {r["intent"] for r in self.rows if r.get("source") == "kb"}
        taken = self.texts()
        by_label: dict[str, list[tuple[str, str]]] = {}
        for doc in documents:
            for question in doc.questions:
                by_label.setdefault(doc.label, []).append((question, doc.id))
        added = 0
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for label in sorted(by_label):
            if label in covered:
                continue
            unique = {}
            for question, doc_id in by_label[label]:
                unique.setdefault(normalize(question), (question, doc_id))
            n = len(unique)
            if n < max(2, config.heldout_min_questions):
                continue
            n_held = min(int(n * config.heldout_fraction + 0.5), n - 2)
            ranked = sorted(unique.items(), key=lambda kv: stable_fraction(kv[0], "heldout"))
            for key, (question, doc_id) in ranked[:max(0, n_held)]:
                if key in taken:
                    continue
                self.rows.append({"text": question, "intent": label, "doc_id": doc_id, "source": "kb", "added": now})
                taken.add(key)
                added += 1
        return added

    def add_admin(self, rows: list[dict]) -> int:
        taken = self.texts()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        added = 0
        for row in rows:
            key = normalize(row["text"])
            if key in taken:
                continue
            self.rows.append({**row, "source": "admin", "added": now})
            taken.add(key)
            added += 1
        return added

    def add_feedback(self, labelled, config) -> int:
        """Freeze a deterministic share of agreed labelled feedback (see the module doc); returns rows added."""
        users_of: dict[str, set[str]] = {}
        for q in labelled:
            users_of.setdefault(q.intent, set()).update(q.users)
        taken = self.texts()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        chosen = [q for q in labelled
                  if not q.trusted and q.intent != OUT_OF_SCOPE
                  and len(users_of.get(q.intent, ())) >= config.heldout_feedback_min_users
                  and stable_fraction(q.text, "heldout-feedback") < config.heldout_feedback_fraction
                  and normalize(q.text) not in taken]
        per_user_cap = max(HELDOUT_USER_FLOOR, int(config.max_user_share * len(chosen) + 0.5))
        alone: dict[str, int] = {}
        added = 0
        for q in chosen:
            if len(q.users) == 1:
                alone[q.users[0]] = alone.get(q.users[0], 0) + 1
                if alone[q.users[0]] > per_user_cap:
                    continue
            row = {"text": q.text, "intent": q.intent, "doc_id": q.doc_id, "source": "feedback", "added": now}
            if q.section:  # the section 👍 votes confirmed: the gate then scores the quoted section too
                row["section"] = q.section
            self.rows.append(row)
            taken.add(normalize(q.text))
            added += 1
        return added

    def add_sentiment(self, pairs: list[tuple[str, str]]) -> int:
        """Freeze a deterministic share of resolved sentiment corrections, (text, label) pairs
        (training/sentiment_update.py: resolve_corrections); returns rows added."""
        taken = self.texts()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        added = 0
        for text, label in pairs:
            key = normalize(text)
            if key in taken or not is_sentiment_heldout(text):
                continue
            self.rows.append({"text": text, "intent": None, "doc_id": None, "sentiment": label,
                              "source": SENTIMENT_SOURCE, "added": now})
            taken.add(key)
            added += 1
        return added

    def sentiment_pairs(self) -> list[tuple[str, str]]:
        """The frozen sentiment rows as (text, label)."""
        return [(r["text"], r["sentiment"]) for r in self.rows if r.get("source") == SENTIMENT_SOURCE]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name("." + self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in self.rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def eval_rows(self, documents: list[Document], *, builtin_oos: bool = RetrainSettings.builtin_oos) -> list[dict]:
        """Rows for `training.evaluate.evaluate`: held-out questions of intents the KB still has, plus OOS."""
        labels = {doc.label for doc in documents}
        kb_keys = {normalize(q) for doc in documents for q in doc.questions}
        sections = {s.id for doc in documents for s in split_sections(doc)}
        rows = [{"text": r["text"], "intent": r["intent"], "sentiment": None, "doc_id": r.get("doc_id"),
                 "section": r.get("section") if r.get("section") in sections else None} for r in self.rows
                if r.get("source") != SENTIMENT_SOURCE and (r["intent"] in labels or r["intent"] == OUT_OF_SCOPE)]
        if builtin_oos:
            # About one generic off-topic question per four in-scope rows (at least 5), so that
            # they measure out-of-scope recall without swamping the overall accuracy.
            taken = self.texts() | kb_keys
            n_in_scope = sum(r["intent"] != OUT_OF_SCOPE for r in rows)
            wanted = max(5, round(0.25 * n_in_scope))
            rows += [{"text": q, "intent": OUT_OF_SCOPE, "sentiment": None}
                     for q in BUILTIN_OOS if normalize(q) not in taken][:wanted]
        return rows


def is_sentiment_heldout(text: str) -> bool:
    """Whether a corrected text belongs to the sentiment share of the held-out set (deterministic)."""
    return stable_fraction(text, "sentiment") < SENTIMENT_HELDOUT_FRACTION


def kb_heading_rows(documents: list[Document], *, exclude: set[str] | frozenset = frozenset()) -> list[dict]:
    """Gate rows from the KB itself: each section heading path ("Title › Heading") labelled with its
    article's intent (articles without headings: their title). They are also what the KB teaches, so they
    measure that a candidate keeps the KB in place, not what it learned; held-out votes measure that."""
    rows, seen = [], set(exclude)
    for doc in documents:
        headings = [(" › ".join(s.path), s.id) for s in split_sections(doc) if s.heading] or [(doc.title, f"{doc.id}#")]
        for text, section in headings:
            key = normalize(text)
            if key and key not in seen:
                seen.add(key)
                rows.append({"text": text, "intent": doc.label, "sentiment": None, "doc_id": doc.id, "section": section})
    return rows


def kb_passage_rows(documents: list[Document], limit: int) -> list[dict]:
    """Gate rows from the KB's own text: each section's sentences, labelled with its article's intent and
    the section itself; at most `limit`, a fixed sample (by a hash of the text) so that every run of a
    KB scores the same ones. A question that quotes the help centre is answered from where it says so,
    whatever the votes taught: a candidate that drifts from the KB's text (a retrieval that reads less
    of each chunk, learned questions that pull answers to sibling articles) loses these."""
    rows, seen = [], set()
    for doc in documents:
        for section in split_sections(doc):
            for text in sentences(section.text):
                key = normalize(text)
                if key not in seen:
                    seen.add(key)
                    rows.append({"text": text, "intent": doc.label, "sentiment": None, "doc_id": doc.id,
                                 "section": section.id})
    if len(rows) > limit:
        rows = sorted(rows, key=lambda r: stable_fraction(r["text"], "passages"))[:limit]
    return rows


def training_documents(documents: list[Document], exclude: set[str]) -> list[Document]:
    """Copies of the articles without the held-out example questions (titles and answers unchanged)."""
    return [dataclasses.replace(doc, questions=[q for q in doc.questions if normalize(q) not in exclude])
            for doc in documents]


# ----- scoring and the decision -------------------------------------------------------------------

def score_version(settings, version_name: str, rows: list[dict], *, per_row: bool = False) -> dict:
    """Evaluate one version (pinned, not necessarily the champion) on the held-out rows (`per_row`:
    training.evaluate.evaluate's)."""
    from serving.engine import Engine
    from training.evaluate import evaluate

    engine = Engine(settings, version=version_name, reload_check_seconds=1e9)
    return evaluate(engine, rows, per_row=per_row)


@dataclass
class Decision:
    promote: bool
    checks: list[dict]

    @property
    def reasons(self) -> list[str]:
        return [c["detail"] for c in self.checks if not c["passed"]]


def decide(champion: dict, candidate: dict, config, passages: tuple[dict, dict] | None = None) -> Decision:
    """The promotion rules: accuracy, every well-supported intent, the quoted section (rows naming one),
    the KB's own sentences (`passages`: the champion's and the candidate's reports on them), out-of-scope
    recall."""
    checks = []
    a, b = champion.get("accuracy"), candidate.get("accuracy")
    if a is None or b is None:
        checks.append({"rule": "accuracy", "passed": False, "detail": "no held-out rows to score on"})
        return Decision(False, checks)
    tol = config.gate_accuracy_tolerance
    checks.append({"rule": "accuracy", "passed": b >= a - tol - 1e-9, "champion": a, "candidate": b,
                   "detail": f"accuracy {a:.4f} → {b:.4f}" + (f" (tolerance {tol:g})" if tol else "")})
    drops = []
    for intent, stats in sorted(champion.get("per_class", {}).items()):
        if intent == OUT_OF_SCOPE or stats.get("support", 0) < config.gate_min_support:
            continue
        new = candidate.get("per_class", {}).get(intent, {"recall": 0.0})
        drop = stats["recall"] - new["recall"]
        if drop > config.gate_intent_max_drop + 1e-9:
            drops.append({"intent": intent, "champion": stats["recall"], "candidate": new["recall"],
                          "support": stats["support"]})
    eligible = sum(1 for i, s in champion.get("per_class", {}).items()
                   if i != OUT_OF_SCOPE and s.get("support", 0) >= config.gate_min_support)
    detail = (f"{len(drops)} of {eligible} intents with ≥{config.gate_min_support} held-out rows lost more than "
              f"{config.gate_intent_max_drop:.0%} recall")
    if drops:
        detail += ": " + ", ".join(f"{d['intent']} {d['champion']:.2f}→{d['candidate']:.2f}" for d in drops[:8])
    checks.append({"rule": "per_intent", "passed": not drops, "drops": drops, "eligible": eligible, "detail": detail})
    if champion.get("section_accuracy") is not None and candidate.get("section_accuracy") is not None:
        # Rows that name their section (👍'd answers' sections, the KB's headings): a candidate that finds
        # the right articles but quotes worse sections is worse for the customer who reads the quote.
        a, b = champion["section_accuracy"], candidate["section_accuracy"]
        tol = config.gate_accuracy_tolerance
        checks.append({"rule": "section", "passed": b >= a - tol - 1e-9, "champion": a, "candidate": b,
                       "n": candidate.get("sections", {}).get("n"),
                       "detail": f"quoted section right {a:.4f} → {b:.4f} (n={candidate.get('sections', {}).get('n')})"})
    if passages is not None:
        checks.append(passage_check(*passages, config.gate_passage_tolerance))
    if "oos_recall" in champion or "oos_recall" in candidate:
        a, b = champion.get("oos_recall", 0.0), candidate.get("oos_recall", 0.0)
        tol = config.gate_oos_tolerance
        checks.append({"rule": "oos_recall", "passed": b >= a - tol - 1e-9, "champion": a, "candidate": b,
                       "detail": f"out-of-scope recall {a:.4f} → {b:.4f}"})
    return Decision(all(c["passed"] for c in checks), checks)


def passage_check(champion: dict, candidate: dict, tolerance: float) -> dict:
    """The KB-sentence rule: article and quoted section each within `tolerance` of the champion's, or
    within one sentence in a KB too small for the tolerance to allow one (38 sentences: 0.02 is less)."""
    a, b = champion.get("accuracy") or 0.0, candidate.get("accuracy") or 0.0
    sa, sb = champion.get("section_accuracy") or 0.0, candidate.get("section_accuracy") or 0.0
    tolerance = max(tolerance, 1.0 / max(1, candidate.get("n") or 1))
    passed = b >= a - tolerance - 1e-9 and sb >= sa - tolerance - 1e-9
    return {"rule": "kb_passages", "passed": passed, "champion": a, "candidate": b, "champion_section": sa,
            "candidate_section": sb, "n": candidate.get("n"), "tolerance": tolerance,
            "detail": f"the KB's own sentences (n={candidate.get('n')}): article {a:.4f} → {b:.4f}, "
                      f"section {sa:.4f} → {sb:.4f} (tolerance {tolerance:g})"}


def reference_build(settings, champion, documents: list[Document], examples, work_dir: Path):
    """A champion that saw held-out texts, rebuilt without them (its encoder, refitted head), in `work_dir`.

    Returns (settings for that home, version name). Nothing under CSBOT_HOME/models is touched.
    """
    from training.build import build_version, carry_sentiment

    home = Path(tempfile.mkdtemp(prefix="reference-", dir=work_dir))
    ref_settings = carry_sentiment(settings, champion).replace(
        home=home, finetune_epochs=0, encoder=champion.base_encoder or settings.encoder)
    result = build_version(documents, ref_settings, extra_examples=examples, encoder_dir=champion.encoder_dir,
                           parent=champion.name, meta={"reason": "gate reference"})
    return ref_settings, result.version.name
