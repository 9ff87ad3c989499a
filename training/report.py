"""The retrain's report, written beside the steps (training/steps.py): the run's JSON and Markdown
under CSBOT_HOME/reports/ (`retrain-latest.json|md` always the newest), its row in the store's
training-runs table, and the lines of its message that summarise the gate's and the composer's verdicts.

`conclude` ends every run: it completes the report, writes the files (runs that trained), records
the row (every run but a dry run) and returns the Outcome.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from training.run_state import DRY_RUN, ERROR, Outcome, RunState

REPORTS_DIR = "reports"
# The report keys the training-runs row keeps in `extra`, besides its own columns.
RUN_ROW_KEYS = ("champion", "candidate", "champion_scored_as", "counts", "decision", "report_json", "report_md",
                "seconds", "timings", "exit_code", "since", "sentiment", "training")

log = logging.getLogger("csbot.retrain")


def conclude(state: RunState, status: str, code: int, message: str, *, consumed: bool = False,
             write: bool = False) -> Outcome:
    """The run's outcome: the report completed; with `write` its files; unless a dry run, its
    training-runs row (`consumed`: its `data_until` moves the watermark)."""
    from serving.versions import code_revision

    report = state.report
    report.update({"status": status, "message": message, "exit_code": code,
                   "seconds": round(time.perf_counter() - state.t0, 2), "timings": state.timings,
                   "code_revision": code_revision()})
    if state.dry_run:
        # A dry run that would not train says so with the real run's exit code; one that would, 0.
        if status not in (ERROR, DRY_RUN):
            report["would"] = status
            return Outcome(DRY_RUN, code, "dry run: " + message, report)
        return Outcome(DRY_RUN if status != ERROR else ERROR, code if status == ERROR else 0, message, report)
    if write:
        try:
            json_path, md_path = write_report(state.settings.home, report)
            report.update({"report_json": str(json_path), "report_md": str(md_path)})
        except OSError as exc:
            log.warning("could not write the report: %s", exc)
    if state.store is not None:
        _record_run(state, status, message, consumed=consumed)
    log.info("%s", message)
    return Outcome(status, code, message, report)


def _record_run(state: RunState, status: str, message: str, *, consumed: bool) -> None:
    report = state.report
    try:
        state.store.record_training_run(
            started_at=state.started_at, status=status, model_version=report.get("served"),
            data_until=report.get("data_until") if consumed else None, n_feedback=len(state.rows),
            metrics={"champion": summary(report.get("champion_metrics")),
                     "candidate": summary(report.get("candidate_metrics"))},
            notes=message, composer=composer_summary(report.get("composer")),
            **{k: report.get(k) for k in RUN_ROW_KEYS})
    except Exception as exc:  # noqa: BLE001 - the outcome stands even if it cannot be recorded
        log.warning("could not record the training run: %s", exc)


def summary(scores: dict | None) -> dict | None:
    """The headline figures of one held-out score report (training.evaluate.evaluate's)."""
    if not scores:
        return None
    return {k: scores.get(k) for k in ("model_version", "n", "accuracy", "macro_f1", "in_scope_accuracy", "oos_recall")
            if k in scores}


def composer_line(composer: dict) -> str:
    """The composer's part of the run's message."""
    status = composer.get("status")
    if status in ("approved", "rejected"):
        verdict = composer.get("verdict") or {}
        a, b = (verdict.get("current_metrics") or {}).get("faithfulness"), (verdict.get("metrics") or {}).get("faithfulness")
        scores = f"faithfulness {a:.3f} → {b:.3f}" if a is not None and b is not None else "no faithfulness score"
        if status == "approved":
            return f"composer approved ({scores})"
        return f"composer rejected: {'; '.join(verdict.get('reasons') or [])}"
    if status == "error":
        return f"composer failed ({composer.get('error')}); the champion's carried over"
    reason = composer.get("reason") or (composer.get("plan") or {}).get("reason", "")
    return f"composer not retrained ({reason})"


def composer_summary(composer: dict | None) -> dict | None:
    """The composer's part of the training-runs row."""
    if not composer:
        return None
    verdict = composer.get("verdict") or {}
    return {"status": composer.get("status") or ("plan" if composer.get("plan") else None),
            "train": (composer.get("plan") or {}).get("train"), "reason": composer.get("reason")
            or (composer.get("plan") or {}).get("reason"), "approved": verdict.get("approved"),
            "metrics": {k: (verdict.get("metrics") or {}).get(k) for k in ("faithfulness", "guard_pass_rate",
                                                                             "invented_rate")} if verdict else None}


def write_report(home: Path, report: dict) -> tuple[Path, Path]:
    """`reports/retrain-<stamp>.json` and `.md`, plus `retrain-latest.json` / `.md` (replaced atomically)."""
    folder = Path(home) / REPORTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = folder / f"retrain-{stamp}"
    n = 1
    while base.with_suffix(".json").exists():
        n += 1
        base = folder / f"retrain-{stamp}-{n}"
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    report = {**report, "report_json": str(json_path), "report_md": str(md_path)}
    text_json = json.dumps(report, indent=2, sort_keys=True, default=str)
    text_md = markdown_report(report)
    for path, text in ((json_path, text_json), (md_path, text_md),
                       (folder / "retrain-latest.json", text_json), (folder / "retrain-latest.md", text_md)):
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return json_path, md_path


def markdown_report(report: dict) -> str:
    lines = [f"# Retrain {report.get('started_at', '')}", "",
             f"**Outcome: {report.get('status')}** — {report.get('message', '')}", ""]
    rows = [("champion", report.get("champion")), ("candidate", report.get("candidate")),
            ("scored champion as", report.get("champion_scored_as")), ("feedback since", report.get("since")),
            ("data until", report.get("data_until")), ("seconds", report.get("seconds")),
            ("code revision", report.get("code_revision"))]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows if v is not None] + [""]
    counts = report.get("counts") or {}
    if counts:
        lines += ["## Data", "", "| count | n |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(counts.items())] + [""]
    champion, candidate = report.get("champion_metrics"), report.get("candidate_metrics")
    if champion and candidate:
        lines += ["## Held-out scores", "", f"{candidate.get('rows', '?')} frozen held-out rows.", "",
                  "| metric | champion | candidate |", "|---|---|---|"]
        for key in ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall"):
            if key in champion or key in candidate:
                lines.append(f"| {key} | {_fmt(champion.get(key))} | {_fmt(candidate.get(key))} |")
        lines.append("")
    checks = (report.get("decision") or {}).get("checks") or []
    if checks:
        lines += ["## Gate", "", "| rule | passed | detail |", "|---|---|---|"]
        lines += [f"| {c['rule']} | {'yes' if c['passed'] else '**no**'} | {c['detail']} |" for c in checks] + [""]
    timings = report.get("timings") or {}
    if timings:
        lines += ["## Timings (s)", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()] + [""]
    training = report.get("training") or {}
    if training.get("stages"):
        lines += ["## Encoder training", "", "| stage | steps | validation before | best | stopped early |", "|---|---|---|---|---|"]
        for s in training["stages"]:
            lines.append(f"| {s['stage']} | {s['steps']} | {_fmt(s.get('initial_metric'))} | {_fmt(s.get('best_metric'))} | "
                         f"{'yes' if s.get('stopped_early') else 'no'} |")
        lines.append("")
    if report.get("sentiment"):
        lines += ["## Sentiment head", "", "```", json.dumps(report["sentiment"], indent=2), "```", ""]
    lines += _composer_markdown(report.get("composer") or {})
    return "\n".join(lines)


def _composer_markdown(composer: dict) -> list[str]:
    """The composer stage's part of the report (training/compose_train.py, compose_gate.py)."""
    if not composer:
        return []
    plan = composer.get("plan") or {}
    lines = ["## Composer", "", f"**{composer.get('status', 'planned')}** — "
             f"{composer.get('reason') or composer.get('error') or plan.get('reason', '')}", ""]
    verdict = composer.get("verdict") or {}
    current, candidate = verdict.get("current_metrics") or {}, verdict.get("metrics") or {}
    if candidate:
        lines += [f"{candidate.get('answerable', 0)} answerable and {candidate.get('offtopic', 0)} off-topic held-out "
                  f"questions; current: {composer.get('current', '?')}.", "",
                  "| metric | current | retrained |", "|---|---|---|"]
        for key in ("faithfulness", "token_f1", "rouge_l", "guard_pass_rate", "citation_accuracy",
                    "false_abstention_rate", "oos_abstention_rate", "invented_rate"):
            lines.append(f"| {key} | {_fmt(current.get(key))} | {_fmt(candidate.get(key))} |")
        lines.append("")
        lines += ["| rule | passed | detail |", "|---|---|---|"]
        lines += [f"| {c['rule']} | {'yes' if c['passed'] else '**no**'} | {c['detail']} |"
                  for c in verdict.get("checks") or []] + [""]
    rows = plan.get("rows") or {}
    if rows:
        lines += ["| rows | n |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows.items()] + [""]
    return lines


def _fmt(value) -> str:
    return "–" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
