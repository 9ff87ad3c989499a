"""Watching a channel: score a message (sentiment + topic) without replying, store it, and decide
whether the channel now has a negative spike worth an alert; plus replaying a recorded stream.

* `watch_message` - one message: the engine's answer gives sentiment and intent in one encoder
  pass; the store keeps the scores always and the (redacted) text only with store_message_text;
  then `check_channel` at the message's own time (the clock is the message, never the wall).
* `alert_summary` - what an alert says: counts, recent vs baseline share, the top
  topics of the recent negatives and up to 3 redacted examples (only when text is stored).
* `read_stream` / `replay` - feed a CSV or JSON Lines stream (e.g. the airline tweets, with their
  timestamps) through the same path, in time order, for demos, tests and `csbot report --replay`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.monitoring.spikes import ALERT, SpikeCheck, SpikeConfig, as_utc, check_channel
from core.answer import SENTIMENT_LABELS
from core.errors import UserError

SENTIMENTS = SENTIMENT_LABELS
REPLAY_BATCH = 64
TIME_FORMATS = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M")


@dataclass(frozen=True)
class Scored:
    sentiment: str
    scores: dict[str, float]
    intent: str | None
    confidence: float | None


@dataclass
class WatchResult:
    stored: bool  # False: this (channel, ts) was already stored (a replayed event); nothing checked
    scored: Scored
    check: SpikeCheck | None = None

    @property
    def alert(self) -> bool:
        return self.check is not None and self.check.status == ALERT


def scored_from_answer(answer: Any) -> Scored:
    return Scored(answer.sentiment, dict(answer.sentiment_scores or {}), answer.intent,
                  None if answer.confidence is None else float(answer.confidence))


def score_texts(engine, texts: list[str]) -> list[Scored]:
    """Sentiment and intent for many texts (one batched engine pass)."""
    if not texts:
        return []
    answers = engine.answer_batch(list(texts))
    return [scored_from_answer(a) for a in answers]


def watch_message(engine, store, *, channel: str, ts: str, user: str | None, text: str | None,
                  workspace: str | None = None, config: SpikeConfig | None = None, now: Any = None,
                  scored: Scored | None = None, check: bool = True) -> WatchResult:
    """Score and store one watched message, then check the channel for a spike at `now` (default:
    the message's own ts). Pass `scored` to reuse a score computed elsewhere."""
    if scored is None:
        scored = score_texts(engine, [text or ""])[0]
    stored = store.record_monitored_message(
        channel=channel, ts=ts, user=user, sentiment=scored.sentiment, scores=scored.scores, intent=scored.intent,
        confidence=scored.confidence, text=text, workspace=workspace)
    if not stored or not check:
        return WatchResult(stored, scored)
    return WatchResult(stored, scored, check_channel(store, channel, ts if now is None else now, config))


# ----- what an alert says -----------------------------------------------------------------------------

def alert_summary(check: SpikeCheck, *, text_stored: bool) -> dict:
    """Everything an alert shows (bot/slack/blocks.py renders it as blocks and as plain text)."""
    cfg = check.config
    return {
        "channel": check.channel,
        "time": check.now.strftime("%Y-%m-%d %H:%M UTC"),
        "window_minutes": int(cfg.window.total_seconds() // 60),
        "baseline_days": round(cfg.baseline.total_seconds() / 86400, 1),
        "recent_n": check.recent_n,
        "recent_negative": check.recent_negative,
        "recent_share": check.recent_share,
        "lower_bound": check.lower_bound,
        "baseline_n": check.baseline_n,
        "baseline_share": check.baseline_share,
        "confidence": cfg.confidence,
        "cooldown_minutes": int(cfg.cooldown.total_seconds() // 60),
        "topics": list(check.topics),
        "examples": list(check.examples[: cfg.examples]) if text_stored else None,
        "text_stored": text_stored,
    }


# ----- replaying a recorded stream ---------------------------------------------------------------------

@dataclass(frozen=True)
class StreamRow:
    time: dt.datetime
    text: str
    label: str | None = None
    topic: str | None = None
    user: str | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)


def parse_time(value: str, time_format: str | None = None) -> dt.datetime:
    """A stream's timestamp: `time_format` if given, else unix seconds, ISO-8601 or a few common
    formats ("2/24/2015 11:35"). Times without an offset are taken as UTC."""
    text = str(value).strip()
    formats = (time_format,) if time_format else TIME_FORMATS
    if not time_format:
        try:
            return as_utc(text)
        except (TypeError, ValueError):
            pass
    for fmt in formats:
        try:
            return as_utc(dt.datetime.strptime(text, fmt))
        except ValueError:
            continue
    raise UserError(f"cannot read the time {value!r}" + (f" with format {time_format!r}" if time_format else ""))


def read_stream(path: str | Path, *, time_column: str, text_column: str = "text", label_column: str | None = None,
                topic_column: str | None = None, user_column: str | None = None, where: dict[str, str] | None = None,
                time_format: str | None = None) -> list[StreamRow]:
    """Read a CSV or JSON Lines stream, keep rows matching `where` ({column: value}), sorted by time
    (stable: rows with equal times keep the file's order)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"replay file {path} does not exist")
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
                records = [json.loads(line) for line in handle if line.strip()]
            else:
                records = list(csv.DictReader(handle))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if records and time_column not in records[0]:
        raise UserError(f"{path} has no column {time_column!r} (columns: {', '.join(records[0])})")
    rows = []
    for record in records:
        if where and any(str(record.get(k, "")) != v for k, v in where.items()):
            continue
        label = (str(record.get(label_column) or "").strip().lower() or None) if label_column else None
        if label is not None and label not in SENTIMENTS:
            raise UserError(f"{path}: label {label!r} is not one of {', '.join(SENTIMENTS)}")
        rows.append(StreamRow(parse_time(record[time_column], time_format), str(record.get(text_column) or ""),
                              label, (str(record.get(topic_column) or "").strip() or None) if topic_column else None,
                              str(record.get(user_column)) if user_column and record.get(user_column) else None,
                              record))
    rows.sort(key=lambda r: r.time)
    return rows


def slack_ts_for(rows: Iterable[StreamRow]) -> list[str]:
    """Unique Slack-style ts per row: the row's second, plus a microsecond counter for rows that share
    it (recorded streams often have minute resolution)."""
    seen: dict[int, int] = {}
    out = []
    for row in rows:
        second = int(row.time.timestamp())
        k = seen.get(second, 0)
        seen[second] = k + 1
        out.append(f"{second}.{k:06d}")
    return out


def replay(engine, store, rows: list[StreamRow], channel: str, *, config: SpikeConfig | None = None,
           check: bool = True, workspace: str | None = None, on_alert=None) -> list[SpikeCheck]:
    """Feed `rows` (time-ordered) into `channel` exactly as the Slack listener would: score (unless
    the row carries a label), store, and with `check` run the online spike check after each message
    (alerts are recorded in the store, with its cooldown). Returns the alerts raised; `on_alert(check)`
    is called for each. A row's `topic`, when given, is stored as its intent."""
    alerts: list[SpikeCheck] = []
    timestamps = slack_ts_for(rows)
    for start in range(0, len(rows), REPLAY_BATCH):
        chunk = rows[start:start + REPLAY_BATCH]
        need = [r.text for r in chunk if r.label is None or r.topic is None]
        scored_iter = iter(score_texts(engine, need) if need and engine is not None else [])
        for offset, row in enumerate(chunk):
            engine_scored = next(scored_iter) if (row.label is None or row.topic is None) and engine is not None else None
            if row.label is None and engine_scored is None:
                raise UserError("replaying unlabelled rows needs the engine (or a label column)")
            sentiment = row.label or engine_scored.sentiment
            scores = ({k: float(k == row.label) for k in SENTIMENTS} if row.label else engine_scored.scores)
            intent = row.topic or (engine_scored.intent if engine_scored else None)
            confidence = None if row.topic or engine_scored is None else engine_scored.confidence
            result = watch_message(engine, store, channel=channel, ts=timestamps[start + offset], user=row.user,
                                   text=row.text, workspace=workspace, config=config, check=check,
                                   scored=Scored(sentiment, scores, intent, confidence))
            if result.alert:
                alerts.append(result.check)
                if on_alert is not None:
                    on_alert(result.check)
    return alerts
