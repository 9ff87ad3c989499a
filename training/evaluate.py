"""Scoring a model version on labelled rows `{text, intent?, sentiment?, doc_id?, section?}` (used by
`csbot eval` and the retrain gate). Intent `out_of_scope` marks a question the bot should decline.

The report follows `rasa test nlu`: accuracy, macro-F1, a per-class report, the most-confused pairs,
and out-of-scope recall when out-of-scope rows are present. Two more parts, because a customer judges
the quoted text, not the label, and an agent reads the confidence:

* `sections` (rows naming the section that answers them): right section / right article but another
  section / wrong article / a clarifying question offering the right article or not / hand-off, and
  `section_accuracy` (the share of those rows whose quoted section is the gold one).
* `reliability` (a reliability table): the answered in-scope rows binned by the answer's confidence, with
  each bin's mean confidence beside its accuracy, and the expected calibration error (`ece`) - a
  confidence of 0.9 should be right about nine times in ten.

A gold section is a section id as `csbot ask --json` prints it (`"refunds#how-long-a-refund-takes"`;
`"refunds#"` is the article's lead) or, with `doc_id`, the section's heading (`"How long a refund takes"`).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from core.answer import OOS_ALIASES, OUT_OF_SCOPE, SENTIMENT_LABELS
from core.errors import UserError


def read_eval_rows(path: str | Path) -> list[dict]:
    """CSV (header with `text`) or JSONL rows; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text") from exc
    rows: list[dict] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if "text" not in (reader.fieldnames or []):
            raise UserError(f"{path}:1: CSV header needs a 'text' column")
        raw = [(reader.line_num, row) for row in reader]
    else:
        raw = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
    for number, row in raw:
        if not isinstance(row, dict) or not str(row.get("text") or "").strip():
            raise UserError(f"{path}:{number}: a row needs a non-empty 'text'")
        intent = (row.get("intent") or row.get("label") or "").strip() or None
        if intent in OOS_ALIASES:
            intent = OUT_OF_SCOPE
        sentiment = (row.get("sentiment") or "").strip().lower() or None
        if sentiment is not None and sentiment not in SENTIMENT_LABELS:
            raise UserError(f"{path}:{number}: sentiment must be one of {', '.join(SENTIMENT_LABELS)}")
        doc_id = str(row.get("doc_id") or "").strip() or None
        section = str(row.get("section") or "").strip() or None
        if section is not None and "#" not in section and doc_id is None:
            raise UserError(f"{path}:{number}: a section given by its heading needs the row's 'doc_id' "
                            f"(or give the section id, e.g. 'refunds#how-long-a-refund-takes')")
        rows.append({"text": row["text"].strip(), "intent": intent, "sentiment": sentiment, "doc_id": doc_id,
                     "section": section})
    if not rows:
        raise UserError(f"{path} has no rows")
    return rows


def classification_report(gold: list[str], predicted: list[str]) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    labels = sorted(set(gold) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    gold_labels = set(gold)
    per_class = {
        label: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support)
    }
    macro_f1 = sum(per_class[label]["f1"] for label in gold_labels) / max(1, len(gold_labels))
    confused = Counter((g, p) for g, p in zip(gold, predicted) if g != p)
    return {
        "n": len(gold),
        "accuracy": round(sum(g == p for g, p in zip(gold, predicted)) / max(1, len(gold)), 4),
        "macro_f1": round(macro_f1, 4),
        "per_class": per_class,
        "confused": [{"gold": g, "predicted": p, "count": c} for (g, p), c in confused.most_common(10)],
    }


def evaluate(engine, rows: list[dict], batch_size: int = 256, *, per_row: bool = False) -> dict:
    """The report `csbot eval` prints. `per_row`: also "correct", one bool per row with an intent, in
    order (the retrain's runtime choice pairs two variants' rows; not in `eval`'s output)."""
    answers = []
    for start in range(0, len(rows), batch_size):
        answers.extend(engine.answer_batch([r["text"] for r in rows[start:start + batch_size]]))
    report: dict = {"model_version": engine.model_version}
    intent_rows = [(r, a) for r, a in zip(rows, answers) if r["intent"]]
    if intent_rows:
        gold = [r["intent"] for r, _ in intent_rows]
        predicted = [a.intent for _, a in intent_rows]
        report.update(classification_report(gold, predicted))
        if per_row:
            report["correct"] = [g == p for g, p in zip(gold, predicted)]
        in_scope = [(g, p) for g, p in zip(gold, predicted) if g != OUT_OF_SCOPE]
        oos = [(g, p) for g, p in zip(gold, predicted) if g == OUT_OF_SCOPE]
        if in_scope:
            report["in_scope_accuracy"] = round(sum(g == p for g, p in in_scope) / len(in_scope), 4)
        if oos:
            report["oos_recall"] = round(sum(p == OUT_OF_SCOPE for _, p in oos) / len(oos), 4)
    else:
        report.update({"n": 0, "accuracy": None, "macro_f1": None, "per_class": {}, "confused": []})
    sentiment_rows = [(r["sentiment"], a.sentiment) for r, a in zip(rows, answers) if r["sentiment"]]
    if sentiment_rows:
        gold, predicted = zip(*sentiment_rows)
        sent = classification_report(list(gold), list(predicted))
        recalls = [sent["per_class"][label]["recall"] for label in set(gold)]
        report["sentiment"] = {"n": sent["n"], "accuracy": sent["accuracy"], "macro_f1": sent["macro_f1"],
                               "macro_recall": round(sum(recalls) / len(recalls), 4), "per_class": sent["per_class"]}
    sections = section_outcomes(rows, answers)
    if sections:
        report.update(sections)
    reliability = reliability_table(rows, answers)
    if reliability:
        report["reliability"] = reliability
    report["rows"] = len(rows)
    return report


SECTION_OUTCOMES = ("right", "wrong_section", "wrong_article", "clarified_right", "clarified_other", "handoff")


def gold_section(row: dict) -> tuple[str, str] | None:
    """A row's gold (article id, section id or heading), or None when it names no section."""
    section = row.get("section")
    if not section:
        return None
    if "#" in section:
        return section.split("#", 1)[0], section
    return row.get("doc_id") or "", section


def section_outcome(row: dict, answer) -> str | None:
    """What a customer who asked `row` was shown, judged by the section it names (None: it names none)."""
    gold = gold_section(row)
    if gold is None:
        return None
    doc, section = gold
    if answer.clarify:
        return "clarified_right" if doc in {o.get("doc_id") for o in answer.clarify} else "clarified_other"
    if answer.handoff or not answer.doc_id:
        return "handoff"
    if answer.doc_id != doc:
        return "wrong_article"
    quoted = answer.section or {}
    quoted_id = quoted.get("id") or f"{answer.doc_id}#"
    heading = (quoted.get("heading") or "").strip().casefold()
    right = section == quoted_id if "#" in section else section.strip().casefold() == heading
    return "right" if right else "wrong_section"


def section_outcomes(rows: list[dict], answers) -> dict:
    """`sections` (each outcome's share and count) and `section_accuracy` over the rows naming a section."""
    outcomes = [o for o in (section_outcome(r, a) for r, a in zip(rows, answers)) if o is not None]
    if not outcomes:
        return {}
    counts = Counter(outcomes)
    n = len(outcomes)
    return {"section_accuracy": round(counts["right"] / n, 4),
            "sections": {"n": n, **{k: round(counts[k] / n, 4) for k in SECTION_OUTCOMES},
                         "counts": {k: counts[k] for k in SECTION_OUTCOMES}}}


RELIABILITY_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0000001)


def reliability_table(rows: list[dict], answers) -> dict:
    """The answered in-scope rows binned by confidence: each bin's n, mean confidence, accuracy (the right
    intent) and, where rows name one, the right section's share; plus the expected calibration error."""
    pairs = [(r, a) for r, a in zip(rows, answers)
             if r.get("intent") and r["intent"] != OUT_OF_SCOPE and not a.handoff and not a.clarify]
    if not pairs:
        return {}
    bins, ece = [], 0.0
    for low, high in zip(RELIABILITY_EDGES, RELIABILITY_EDGES[1:]):
        inside = [(r, a) for r, a in pairs if low <= a.confidence < high]
        if not inside:
            continue
        confidence = sum(a.confidence for _, a in inside) / len(inside)
        accuracy = sum(a.intent == r["intent"] for r, a in inside) / len(inside)
        ece += len(inside) / len(pairs) * abs(accuracy - confidence)
        row = {"low": low, "high": min(high, 1.0), "n": len(inside), "confidence": round(confidence, 4),
               "accuracy": round(accuracy, 4)}
        judged = [o for o in (section_outcome(r, a) for r, a in inside) if o is not None]
        if judged:
            row["section_accuracy"] = round(judged.count("right") / len(judged), 4)
        bins.append(row)
    return {"n": len(pairs), "ece": round(ece, 4), "bins": bins}


def report_text(report: dict) -> str:
    lines = [f"model {report['model_version']} · {report['rows']} rows"]
    if report.get("n"):
        lines.append(f"intent: accuracy {report['accuracy']:.3f} · macro-F1 {report['macro_f1']:.3f} (n={report['n']})")
        if "in_scope_accuracy" in report:
            lines.append(f"  in-scope accuracy {report['in_scope_accuracy']:.3f}")
        if "oos_recall" in report:
            lines.append(f"  out-of-scope recall {report['oos_recall']:.3f}")
        worst = sorted(report["per_class"].items(), key=lambda kv: (kv[1]["f1"], -kv[1]["support"]))[:8]
        lines.append("  weakest classes: " + ", ".join(f"{k} F1 {v['f1']:.2f} (n={v['support']})" for k, v in worst if v["support"]))
        if report["confused"]:
            lines.append("  most confused: " + ", ".join(f"{c['gold']} → {c['predicted']} ×{c['count']}" for c in report["confused"][:5]))
    if "sections" in report:
        sec = report["sections"]
        lines.append(f"quoted section: right {sec['right']:.1%} · right article, other section {sec['wrong_section']:.1%}"
                     f" · wrong article {sec['wrong_article']:.1%} · clarified {sec['clarified_right'] + sec['clarified_other']:.1%}"
                     f" · handed off {sec['handoff']:.1%} (n={sec['n']})")
    if "reliability" in report:
        rel = report["reliability"]
        lines.append(f"reliability (answered in-scope rows, n={rel['n']}; expected calibration error {rel['ece']:.3f}):")
        for b in rel["bins"]:
            extra = f" · right section {b['section_accuracy']:.0%}" if "section_accuracy" in b else ""
            lines.append(f"  confidence {b['low']:.2f}–{b['high']:.2f}: n={b['n']:<4d} mean {b['confidence']:.2f}"
                         f" · right {b['accuracy']:.0%}{extra}")
    if "sentiment" in report:
        s = report["sentiment"]
        lines.append(f"sentiment: accuracy {s['accuracy']:.3f} · macro-recall {s['macro_recall']:.3f} (n={s['n']})")
    return "\n".join(lines)
