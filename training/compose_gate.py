"""The composer's gate: the current composer and a retrained one, scored on one frozen held-out set
with the served prompt; a retrained composer is approved only if it is at least as faithful and
never invents facts more often.

The held-out set is the retrain's (training/gate.py: frozen once, never trained on): its questions
that name an article (`doc_id`), at most `composer_heldout_max`, chosen by a hash of the text; and
off-topic questions — the admins' out-of-scope corrections in it, then the gate's builtin off-topic
list — at most `composer_heldout_oos`. An answerable question's prompt holds its article's
best-matching section as [1] and the closest section of another article as [2]
(training/compose_data.py builds both the same way); an off-topic one holds the two closest sections.

Per composer, greedy generation (`serving.compose.build_messages`, its stop strings) then:

| metric | what it is |
|---|---|
| token_f1, rouge_l | of the answer (citations removed) against the section's text, answerable rows; an abstention scores 0 |
| faithfulness | their mean |
| guard_pass_rate | answerable rows whose answer passes the guard (`serving.compose.check`), without abstaining |
| citation_accuracy | answerable rows whose answer cites exactly [1], the right section |
| false_abstention_rate | answerable rows the composer abstained on (reported) |
| oos_abstention_rate | off-topic rows it abstained on |
| invented_rate | rows (all) whose answer has a number, URL or e-mail address its sections lack |

Rules (`decide_composer`): faithfulness, guard pass rate, citation accuracy and off-topic abstention
each at least the current composer's minus `composer_gate_tolerance`; the invented-facts rate not
above the current composer's, ever. The current composer is the champion's adapter, or — before any
was approved — the untrained base model. Scores are cached per (model, adapter, held-out set) under
$CSBOT_HOME/heldout/, so an unchanged champion is not scored twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from core.answer import OUT_OF_SCOPE
from models.composer import TransformersChat
from serving.compose import STOP, Passage, abstains, build_messages, check, citations
from training.compose_data import SectionIndex
from training.feedback_data import normalize, stable_fraction
from training.gate import BUILTIN_OOS, HELDOUT_DIR, Decision

SCORES_FILE = "composer_scores.json"
SCORES_KEPT = 20
INVENTED_KINDS = ("number ", "URL ", "e-mail ")  # the guard's problems that are invented facts
METRICS = ("faithfulness", "token_f1", "rouge_l", "guard_pass_rate", "citation_accuracy", "false_abstention_rate",
           "oos_abstention_rate", "invented_rate")

_TOKEN = re.compile(r"[a-z0-9]+")
_CITATION = re.compile(r"\[\d{1,2}\]")


# ----- text overlap ------------------------------------------------------------------------------

def tokens(text: str) -> list[str]:
    """Lower-cased word tokens, citations and Markdown removed."""
    return _TOKEN.findall(_CITATION.sub(" ", text or "").lower())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1: the harmonic mean of token precision and recall (bag of tokens)."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: the longest common token subsequence against both lengths."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    previous = [0] * (len(ref) + 1)
    for p in pred:
        current = [0]
        for j, r in enumerate(ref, start=1):
            current.append(previous[j - 1] + 1 if p == r else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


# ----- the held-out rows -------------------------------------------------------------------------

@dataclass
class ComposerEvalRow:
    question: str
    passages: list[Passage]
    reference: str  # the right section's text ("" for an off-topic question)
    answerable: bool

    def key(self) -> list:
        return [self.question, self.answerable, [[p.n, p.doc_id, p.heading, p.text] for p in self.passages]]


def composer_heldout(heldout, documents, *, config, compose, section_max_words: int) -> list[ComposerEvalRow]:
    """The composer's rows from the retrain's frozen held-out set (see the module doc)."""
    index = SectionIndex(documents)
    words = dict(section_words=compose.section_words, section_max_words=section_max_words)
    answerable = sorted((r for r in heldout.rows if r.get("doc_id") in index.docs and index.sections.get(r["doc_id"])),
                        key=lambda r: stable_fraction(r["text"], "composer-heldout"))
    rows, seen = [], set()
    for r in answerable:
        if len(rows) >= config.composer_heldout_max:
            break
        if normalize(r["text"]) in seen:
            continue
        seen.add(normalize(r["text"]))
        section = index.best_section(r["doc_id"], r["text"])
        passages = index.prompt_passages(r["text"], section, **words)
        rows.append(ComposerEvalRow(r["text"], passages, passages[0].text, True))
    kb_keys = {normalize(q) for d in documents for q in d.questions}
    offtopic = [r["text"] for r in heldout.rows if r.get("intent") == OUT_OF_SCOPE]
    if config.builtin_oos:
        offtopic += [q for q in BUILTIN_OOS if normalize(q) not in kb_keys]
    n = 0
    for question in offtopic:
        if n >= config.composer_heldout_oos or normalize(question) in seen:
            continue
        seen.add(normalize(question))
        rows.append(ComposerEvalRow(question, index.prompt_passages(question, None, **words), "", False))
        n += 1
    return rows


def heldout_key(rows: list[ComposerEvalRow], config) -> str:
    """Identifies the rows and the generation settings: scores with the same key are comparable."""
    data = json.dumps([[r.key() for r in rows], config.composer_max_new_tokens, build_messages("q", [])[0]["content"],
                       STOP], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def adapter_id(adapter_dir: Path | None) -> str:
    """The identity of an adapter: a hash of its weights ("" for none)."""
    if adapter_dir is None:
        return ""
    digest = hashlib.sha256()
    for path in sorted(Path(adapter_dir).glob("adapter_model.*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# ----- scoring ---------------------------------------------------------------------------------------

def score_composer(model, rows: list[ComposerEvalRow], *, config, batch_size: int = 8) -> dict:
    """Generate an answer per row with the served prompt and measure it (see the module doc)."""
    started = time.perf_counter()
    conversations = [build_messages(r.question, r.passages) for r in rows]
    if isinstance(model, TransformersChat):  # the one backend that batches prompts
        texts = model.generate_batch(conversations, max_new_tokens=config.composer_max_new_tokens, stop=STOP,
                                     batch_size=batch_size)
    else:  # any ChatModel (e.g. an endpoint): one stream per row
        texts = ["".join(model.stream(c, max_new_tokens=config.composer_max_new_tokens, stop=STOP))
                 for c in conversations]
    sums: Counter = Counter()
    samples = []
    n_in = sum(r.answerable for r in rows)
    n_out = len(rows) - n_in
    for row, text in zip(rows, texts):
        text = text.strip()
        abstained = abstains(text)
        guard = None if abstained else check(text, row.passages, row.question)
        invented = bool(guard) and any(p.startswith(INVENTED_KINDS) for p in guard.problems)
        sums["invented"] += invented
        if row.answerable:
            if abstained:
                sums["false_abstentions"] += 1
            else:
                sums["token_f1"] += token_f1(text, row.reference)
                sums["rouge_l"] += rouge_l(text, row.reference)
                sums["guard_pass"] += guard.ok
                cited, invalid = citations(text, row.passages)
                sums["citation_correct"] += cited == [1] and not invalid
        else:
            sums["oos_abstained"] += abstained
        if len(samples) < 6:
            samples.append({"question": row.question, "answer": text[:300], "answerable": row.answerable,
                            "guard": guard.problems[:3] if guard else "abstained"})
    ratio = (lambda k, n: round(sums[k] / n, 4) if n else None)
    f1, rl = ratio("token_f1", n_in), ratio("rouge_l", n_in)
    return {"answerable": n_in, "offtopic": n_out, "token_f1": f1, "rouge_l": rl,
            "faithfulness": None if f1 is None else round((f1 + rl) / 2, 4),
            "guard_pass_rate": ratio("guard_pass", n_in), "citation_accuracy": ratio("citation_correct", n_in),
            "false_abstention_rate": ratio("false_abstentions", n_in), "oos_abstention_rate": ratio("oos_abstained", n_out),
            "invented_rate": ratio("invented", len(rows)), "seconds": round(time.perf_counter() - started, 2),
            "samples": samples}


class ScoreCache:
    """Composer scores per (base model, adapter hash, held-out key), in $CSBOT_HOME/heldout/."""

    def __init__(self, home: Path):
        self.path = Path(home) / HELDOUT_DIR / SCORES_FILE
        try:
            self.entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def key(model: str, adapter: str, heldout: str, backend: str = "transformers") -> str:
        """One composer's scores: its model, adapter, the held-out set and the backend that ran it."""
        return f"{model}|{adapter}|{heldout}" + ("" if backend == "transformers" else f"|{backend}")

    def get(self, key: str) -> dict | None:
        entry = self.entries.get(key)
        return dict(entry["metrics"]) if entry else None

    def put(self, key: str, metrics: dict) -> None:
        self.entries[key] = {"time": time.time(), "metrics": metrics}
        newest = sorted(self.entries.items(), key=lambda kv: kv[1]["time"])[-SCORES_KEPT:]
        self.entries = dict(newest)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name("." + self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.entries, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass


# ----- the decision ------------------------------------------------------------------------------

def decide_composer(current: dict, candidate: dict, config) -> Decision:
    """The composer's promotion rules (see the module doc)."""
    checks = []
    if not current.get("answerable") or candidate.get("faithfulness") is None:
        checks.append({"rule": "heldout", "passed": False, "detail": "no held-out question with an article to score on"})
        return Decision(False, checks)
    tol = config.composer_gate_tolerance
    for rule in ("faithfulness", "guard_pass_rate", "citation_accuracy", "oos_abstention_rate"):
        a, b = current.get(rule), candidate.get(rule)
        if a is None or b is None:
            continue
        checks.append({"rule": rule, "passed": b >= a - tol - 1e-9, "current": a, "candidate": b,
                       "detail": f"{rule.replace('_', ' ')} {a:.3f} → {b:.3f}" + (f" (tolerance {tol:g})" if tol else "")})
    a, b = current.get("invented_rate") or 0.0, candidate.get("invented_rate") or 0.0
    checks.append({"rule": "invented_rate", "passed": b <= a + 1e-9, "current": a, "candidate": b,
                   "detail": f"invented facts (numbers, URLs, e-mails the sections lack) {a:.3f} → {b:.3f}"
                             + (" — rises: never promoted" if b > a + 1e-9 else "")})
    return Decision(all(c["passed"] for c in checks), checks)
