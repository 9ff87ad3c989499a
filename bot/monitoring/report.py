"""A channel's sentiment over a period: a summary dict and a PNG chart.

`build_report(store, channel, since, until)` reads the channel's monitored messages, counts them per
UTC day and sentiment, ranks the topics of the negative messages, and replays the spike detector
over the period (`spikes.scan_store`, with the baseline before `since`) to mark where alerts would
have fired. `render_chart(summary)` draws it with matplotlib's Agg canvas (no pyplot, no display):

* top: daily messages as stacked bars (negative at the bottom, then neutral, then positive), the
  daily negative share as a line on the right axis, and a dashed line at each spike alert;
* bottom: the top topics of the negative messages, as horizontal bars.

The colours are fixed (NEGATIVE_COLOR etc.) so tests can count pixels.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter
from pathlib import Path
from typing import Any

from bot.monitoring.spikes import NEGATIVE, SpikeConfig, as_utc, scan_store, topic_of
from core.answer import SENTIMENT_LABELS

LABELS = SENTIMENT_LABELS
NEGATIVE_COLOR = "#d62728"
NEUTRAL_COLOR = "#b8b8b8"
POSITIVE_COLOR = "#2ca02c"
TOPIC_COLOR = "#8c564b"
SHARE_COLOR = "#222222"
ALERT_COLOR = "#ff7f0e"
COLORS = {"negative": NEGATIVE_COLOR, "neutral": NEUTRAL_COLOR, "positive": POSITIVE_COLOR}
FIGSIZE = (10.0, 6.5)  # inches; at DPI this is 1000 x 650 pixels
DPI = 100
TOP_TOPICS = 6


def _day(t: dt.datetime) -> dt.date:
    return t.date()


def summarize(rows: list[dict], *, channel: str, since: Any, until: Any, alerts: list | None = None,
              top_n: int = TOP_TOPICS, label: str | None = None) -> dict:
    """Counts per UTC day and sentiment for rows with since <= time <= until; top negative topics.

    `rows` are monitored_messages rows (time, sentiment, intent). `alerts` are SpikeChecks (or
    their to_json dicts). Everything in the result is JSON-able.
    """
    since, until = as_utc(since), as_utc(until)
    if until <= since:
        raise ValueError("the report's end must be after its start")
    days: dict[dt.date, Counter] = {}
    d, last = _day(since), _day(until - dt.timedelta(microseconds=1))
    while d <= last:
        days[d] = Counter()
        d += dt.timedelta(days=1)
    totals: Counter = Counter()
    topics: Counter = Counter()
    for row in rows:
        t = as_utc(row["time"])
        if not since <= t <= until:
            continue
        sentiment = row.get("sentiment") if row.get("sentiment") in LABELS else "neutral"
        days.setdefault(_day(t), Counter())[sentiment] += 1
        totals[sentiment] += 1
        if sentiment == NEGATIVE:
            topics[topic_of(row.get("intent"))] += 1
    total = sum(totals.values())
    daily = []
    for day in sorted(days):
        counts = days[day]
        n = sum(counts.values())
        daily.append({"date": day.isoformat(), **{k: counts.get(k, 0) for k in LABELS}, "total": n,
                      "negative_share": round(counts.get(NEGATIVE, 0) / n, 4) if n else None})
    alert_dicts = [a if isinstance(a, dict) else a.to_json() for a in (alerts or [])]
    for a in alert_dicts:
        a.pop("examples", None)
    return {
        "channel": channel,
        "label": label or channel,
        "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "total": total,
        "counts": {k: totals.get(k, 0) for k in LABELS},
        "negative_share": round(totals.get(NEGATIVE, 0) / total, 4) if total else None,
        "daily": daily,
        "top_negative_topics": [{"topic": t, "count": c}
                                for t, c in sorted(topics.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]],
        "alerts": alert_dicts,
    }


def build_report(store, channel: str, since: Any, until: Any, *, config: SpikeConfig | None = None,
                 label: str | None = None, with_alerts: bool = True) -> dict:
    """The summary of `channel` between `since` and `until` from the store (with the alerts the spike
    detector raises over that period)."""
    since, until = as_utc(since), as_utc(until)
    rows = store.monitored_messages(channel, since=since - dt.timedelta(microseconds=1))
    alerts = scan_store(store, channel, since, until, config) if with_alerts else []
    return summarize(rows, channel=channel, since=since, until=until, alerts=alerts, label=label)


def render_chart(summary: dict, out: str | Path | None = None, *, figsize: tuple[float, float] = FIGSIZE,
                 dpi: int = DPI) -> bytes:
    """Draw the summary as a PNG; returns its bytes (and writes them to `out` when given)."""
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 2])
    ax = fig.add_subplot(grid[0])
    daily = summary["daily"]
    x = [mdates.date2num(dt.datetime.fromisoformat(d["date"])) + 0.5 for d in daily]
    bottom = [0] * len(daily)
    for label in LABELS:
        values = [d[label] for d in daily]
        ax.bar(x, values, width=0.8, bottom=bottom, color=COLORS[label], label=label, linewidth=0, antialiased=False)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("messages per day")
    step = max(1, -(-len(daily) // 12))  # at most ~12 day labels
    ax.set_xticks(x[::step], [dt.date.fromisoformat(d["date"]).strftime("%a %d %b") for d in daily][::step])
    ax.tick_params(axis="x", labelsize=9)
    if x:
        ax.set_xlim(x[0] - 0.6, x[-1] + 0.6)
    ax.set_ylim(0, max(bottom + [1]) * 1.25)
    ax.spines[["top"]].set_visible(False)
    share_ax = ax.twinx()
    shares = [(xi, d["negative_share"]) for xi, d in zip(x, daily) if d["negative_share"] is not None]
    if shares:
        share_ax.plot([s[0] for s in shares], [s[1] * 100 for s in shares], color=SHARE_COLOR, marker="o",
                      markersize=4, linewidth=1.5, label="% negative")
    share_ax.set_ylim(0, 105)
    share_ax.set_ylabel("% negative")
    share_ax.spines[["top"]].set_visible(False)
    for i, alert in enumerate(summary.get("alerts") or []):
        when = mdates.date2num(as_utc(alert["now"]).replace(tzinfo=None))
        ax.axvline(when, color=ALERT_COLOR, linestyle="--", linewidth=1.2, label="spike alert" if i == 0 else None)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = share_ax.get_legend_handles_labels()
    ax.legend(handles + h2, labels + l2, loc="upper left", fontsize=8, ncol=5, frameon=False)
    total, share = summary["total"], summary.get("negative_share")
    since, until = as_utc(summary["since"]), as_utc(summary["until"])
    fig.suptitle(f"{summary.get('label') or summary['channel']}: sentiment {since:%d %b} – {until:%d %b %Y} (UTC)",
                 fontsize=13, fontweight="bold")
    ax.set_title(f"{total:,} messages, {share:.0%} negative" if total else "no monitored messages in this period",
                 fontsize=10, loc="left")

    tax = fig.add_subplot(grid[1])
    topics = summary.get("top_negative_topics") or []
    if topics:
        names = [t["topic"] for t in topics][::-1]
        counts = [t["count"] for t in topics][::-1]
        bars = tax.barh(names, counts, color=TOPIC_COLOR, height=0.6, antialiased=False)
        tax.bar_label(bars, padding=3, fontsize=8)
        tax.set_xlim(0, max(counts) * 1.15)
        tax.set_xlabel("negative messages")
        tax.tick_params(axis="y", labelsize=9)
    else:
        tax.text(0.5, 0.5, "no negative messages", ha="center", va="center", transform=tax.transAxes)
        tax.set_xticks([])
        tax.set_yticks([])
    tax.set_title("Top topics of negative messages", fontsize=10, loc="left")
    tax.spines[["top", "right"]].set_visible(False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    data = buffer.getvalue()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(data)
    return data


HOME_DAYS = 7  # the App Home's summary window


def channel_summaries(store, channels, now, days: int = HOME_DAYS) -> list[dict]:
    """Per watched channel: messages and negative share over the last `days` (and the `days` before),
    the top negative topic and the last alert (the App Home shows it)."""
    now = as_utc(now)
    start, previous_start = now - dt.timedelta(days=days), now - dt.timedelta(days=2 * days)
    found = []
    for channel in sorted(channels):
        counts = store.monitored_sentiment_counts(channel, start, now)
        before = store.monitored_sentiment_counts(channel, previous_start, start)
        total, total_before = sum(counts.values()), sum(before.values())
        topics: dict[str, int] = {}
        if counts.get("negative"):
            for row in store.monitored_messages(channel, since=start):
                if row.get("sentiment") == "negative":
                    topic = topic_of(row.get("intent"))
                    topics[topic] = topics.get(topic, 0) + 1
        alerts = store.monitoring_alerts(channel, since=start)
        found.append({
            "channel": channel, "days": days, "total": total,
            "negative_share": counts.get("negative", 0) / total if total else None,
            "previous_share": before.get("negative", 0) / total_before if total_before else None,
            "top_topic": max(sorted(topics), key=lambda t: topics[t]) if topics else None,
            "last_alert": alerts[-1]["time"][:16].replace("T", " ") + " UTC" if alerts else None,
        })
    return found
