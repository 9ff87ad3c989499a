"""The team's weekly view of its help centre: per week, how many questions came, the answer rate
(answered without a hand-off), the hand-off rate, the 👍 share of the votes and the articles answered
most; with the period's content gaps (training/gaps.py). `csbot report` prints it (without
`--channel`), the App Home shows it to admins, and the weekly digest posts it with its chart.

Weeks are the seven-day windows ending at `until` (the newest first in `weeks`), so "this week" is
always the last seven days, whatever the weekday.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

from bot.monitoring.spikes import as_utc

WEEK = dt.timedelta(days=7)
TOP_ARTICLES = 5


def week_summary(rows: list[dict], start: dt.datetime, end: dt.datetime, titles: dict[str, str]) -> dict:
    """One week's figures from store `answer_outcomes` rows."""
    n = len(rows)
    handoffs = sum(row["handoff"] for row in rows)
    ups = sum(row["ups"] for row in rows)
    downs = sum(row["downs"] for row in rows)
    answered = Counter(row["doc_id"] for row in rows if not row["handoff"] and row["doc_id"])
    return {
        "start": start.isoformat(), "end": end.isoformat(), "questions": n,
        "answered": n - handoffs, "handoffs": handoffs,
        "answer_rate": (n - handoffs) / n if n else None,
        "handoff_rate": handoffs / n if n else None,
        "up_votes": ups, "down_votes": downs,
        "up_share": ups / (ups + downs) if ups + downs else None,
        "top_articles": [{"doc_id": doc, "title": titles.get(doc, doc), "answers": count}
                         for doc, count in sorted(answered.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ARTICLES]],
    }


def weekly_view(store, until: Any, *, weeks: int = 4, titles: dict[str, str] | None = None) -> dict:
    """{until, weeks: [newest week first, ...]} over the last `weeks` seven-day windows."""
    until = as_utc(until)
    titles = titles or {}
    found = []
    for back in range(weeks):
        end = until - back * WEEK
        start = end - WEEK
        found.append(week_summary(store.answer_outcomes(start, end), start, end, titles))
    return {"until": until.isoformat(), "weeks": found}


def collect_gaps(store, engine, since: Any, until: Any, params=None, chatter: list[str] | None = None):
    """(gaps, summary) for [since, until): the stored answers and their votes, embedded with the
    served encoder; each gap's nearest article titled from the served catalogue."""
    from training.gaps import GapParams, find_gaps

    since, until = as_utc(since), as_utc(until)
    rows = store.answer_outcomes(since, until)
    previous = store.answer_outcomes(since - (until - since), since)
    gaps, summary = find_gaps(rows, engine.embed, previous_rows=previous,
                              chatter_questions=chatter if chatter is not None else offtopic_questions(),
                              params=params or GapParams())
    catalogue = engine.catalogue()
    for gap in gaps:
        doc = catalogue.article(gap.nearest_doc_id)
        gap.nearest_title = doc.title if doc else None
    summary.update({"since": since.isoformat(), "until": until.isoformat(), "gaps": len(gaps)})
    return gaps, summary


def offtopic_questions() -> list[str]:
    """The generic off-topic questions a version tunes its decline bound on: the chatter reference."""
    path = Path(__file__).resolve().parents[2] / "models" / "assets" / "offtopic_questions.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def describe_weekly(view: dict) -> list[str]:
    lines = []
    for week in view["weeks"]:
        label = f"{week['start'][:10]} – {week['end'][:10]}"
        if not week["questions"]:
            lines.append(f"  {label}: no questions")
            continue
        up = "no votes" if week["up_share"] is None else f"{week['up_share']:.0%} 👍 of {week['up_votes'] + week['down_votes']} votes"
        top = ", ".join(f"{a['title']} ({a['answers']})" for a in week["top_articles"][:3]) or "none"
        lines.append(f"  {label}: {week['questions']:,} questions, {week['answer_rate']:.0%} answered, "
                     f"{week['handoff_rate']:.0%} handed off, {up}; top: {top}")
    return lines


def render_weekly_chart(view: dict, gaps: list, out: str | Path | None = None) -> bytes | None:
    """Left: questions per week, answered vs handed off, with the 👍 share; right: the largest gaps.
    Written to `out`, or returned as PNG bytes when `out` is None."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weeks = list(reversed(view["weeks"]))
    labels = [w["end"][5:10] for w in weeks]
    figure = Figure(figsize=(11, 4))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 2, 1)
    answered = [w["answered"] for w in weeks]
    ax.bar(labels, answered, color="#5cb85c", label="answered")
    ax.bar(labels, [w["handoffs"] for w in weeks], bottom=answered, color="#f0ad4e", label="handed off")
    ax.set_ylabel("questions (week ending)")
    share = ax.twinx()
    share.plot(labels, [w["up_share"] if w["up_share"] is not None else float("nan") for w in weeks],
               color="#337ab7", marker="o", label="up-vote share")
    share.set_ylim(0, 1.05)
    share.set_ylabel("share of votes that are up-votes")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Questions per week", fontsize=10)
    gx = figure.add_subplot(1, 2, 2)
    top = gaps[:6][::-1]
    gx.barh(range(len(top)), [g.size for g in top], color="#d9534f")
    gx.set_yticks(list(range(len(top))), [g.title[:40] + ("…" if len(g.title) > 40 else "") for g in top], fontsize=8)
    gx.set_xlabel("unmet questions this week")
    gx.set_title("Content gaps" if top else "Content gaps: none this week", fontsize=10)
    figure.tight_layout()
    if out is not None:
        figure.savefig(out, dpi=110)
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
