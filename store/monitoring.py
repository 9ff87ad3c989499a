"""Monitored channel messages, negative-spike alerts and sentiment corrections.

Mixed into store.store.Store, which provides the connection (`_write`, `_read`), `hash_user`,
`redact` and `store_message_text`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from core import clock
from core.answer import SENTIMENT_LABELS
from core.clock import parse_since, time_from_slack_ts, to_iso
from core.errors import UserError
from store.answers import CORRECTION_ORIGINS
from store.events import claim_event
from store.rows import loads


def decode_monitored_message(row: dict) -> dict:
    """A monitored_messages row with its `scores` decoded."""
    row["scores"] = loads(row["scores"]) or {}
    return row


class Monitoring:
    """The monitored_messages, monitoring_alerts and sentiment_corrections tables."""

    # -- monitored messages --------------------------------------------------------------------

    def record_monitored_message(
        self,
        *,
        channel: str,
        ts: str,
        user: str | None,
        sentiment: str | None,
        scores: dict,
        intent: str | None,
        confidence: float | None,
        text: str | None,
        workspace: str | None = None,
    ) -> bool:
        """Log one monitored channel message for sentiment trends. The text is kept (redacted)
        only when store_message_text is on. Idempotent per (channel, ts)."""
        if not channel or not ts:
            raise UserError("a monitored message needs a channel and a ts")
        when = time_from_slack_ts(ts)
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO monitored_messages (time, workspace, channel, ts, user_hash, sentiment,"
                " scores, intent, confidence, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (channel, ts) DO NOTHING",
                (
                    when,
                    workspace,
                    channel,
                    str(ts),
                    self.hash_user(user),
                    sentiment,
                    json.dumps({k: float(v) for k, v in (scores or {}).items()}),
                    intent,
                    None if confidence is None else float(confidence),
                    self.redact(text) if self.store_message_text else None,
                ),
            )
            return cur.rowcount == 1

    def monitored_messages(self, channel: str | None = None, since: Any = None) -> list[dict]:
        rows = self._read(*_select("monitored_messages", channel, since))
        return [decode_monitored_message(row) for row in rows]

    def monitored_message(self, channel: str, ts: str) -> dict | None:
        """One monitored message by its Slack channel and ts (None if it was not stored)."""
        rows = self._read("SELECT * FROM monitored_messages WHERE channel = ? AND ts = ?", (channel, str(ts)))
        if not rows:
            return None
        return decode_monitored_message(rows[0])

    def monitored_sentiment_counts(self, channel: str, start: Any, end: Any) -> dict[str, int]:
        """{sentiment: count} of the channel's monitored messages with start < time <= end (the
        spike detector's windows; one indexed range count)."""
        rows = self._read(
            "SELECT sentiment, count(*) AS n FROM monitored_messages WHERE channel = ? AND time > ? AND time <= ?"
            " GROUP BY sentiment",
            (channel, to_iso(start), to_iso(end)),
        )
        return {row["sentiment"] or "": row["n"] for row in rows}

    # -- monitoring alerts ---------------------------------------------------------------------

    def claim_monitoring_alert(self, channel: str, time: Any, cooldown: dt.timedelta, details: dict | None = None) -> int | None:
        """Record a negative-spike alert for `channel` at `time`, unless one was recorded within
        `cooldown` of that time (before or after). Atomic (one write transaction), so two workers or
        a restarted bot cannot both alert. Returns the new alert's id, or None (cooling down)."""
        if not channel:
            raise UserError("an alert needs a channel")
        when = to_iso(time)  # a bad time is a UserError
        moment = clock.as_utc(when)
        lo, hi = to_iso(moment - cooldown), to_iso(moment + cooldown)
        details = dict(details or {})
        with self._write() as conn:
            if conn.execute(
                "SELECT 1 FROM monitoring_alerts WHERE channel = ? AND time > ? AND time < ?", (channel, lo, hi)
            ).fetchone():
                return None
            return self.inserted_id(
                conn,
                "INSERT INTO monitoring_alerts (channel, time, created, recent_n, recent_negative, baseline_n,"
                " baseline_negative, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (channel, when, to_iso(clock.utcnow()), details.get("recent_n"), details.get("recent_negative"),
                 details.get("baseline_n"), details.get("baseline_negative"), json.dumps(details, default=str)),
            )

    def monitoring_alerts(self, channel: str | None = None, since: Any = None) -> list[dict]:
        """Recorded alerts (time > since), oldest first; `details` decoded."""
        rows = self._read(*_select("monitoring_alerts", channel, since))
        for row in rows:
            row["details"] = loads(row["details"]) or {}
        return rows

    # -- sentiment corrections -----------------------------------------------------------------

    def record_sentiment_correction(
        self,
        channel: str,
        ts: str,
        user: str | None,
        label: str,
        text: str | None,
        origin: str = "modal",
        event_id: str | None = None,
        *,
        workspace: str | None = None,
    ) -> bool:
        """Store the sentiment a person says a message has, for the retrain. The text is redacted and
        kept (whatever store_message_text says) because the user submitted it for training.

        Last write wins per (channel, ts, user). With `event_id` (e.g. "view:<view id>") a replay
        writes nothing and returns False; otherwise returns True when stored.
        """
        label = (label or "").strip().lower()
        if label not in SENTIMENT_LABELS:
            raise UserError(f"sentiment label must be one of {', '.join(SENTIMENT_LABELS)}, not {label!r}")
        if origin not in CORRECTION_ORIGINS:
            raise UserError(f"origin must be one of {', '.join(CORRECTION_ORIGINS)}, not {origin!r}")
        if not channel or not ts:
            raise UserError("a sentiment correction needs the message's channel and ts")
        user_hash = self.hash_user(user)
        with self._write() as conn:
            now = to_iso(clock.utcnow())
            if event_id and not claim_event(conn, f"sentiment:{event_id}", now):
                return False
            conn.execute(
                "INSERT INTO sentiment_corrections (time, workspace, channel, ts, user_hash, label, text, origin,"
                " event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (channel, ts, user_hash) DO UPDATE SET time = excluded.time, label = excluded.label,"
                " text = excluded.text, origin = excluded.origin, event_id = excluded.event_id,"
                " workspace = coalesce(excluded.workspace, sentiment_corrections.workspace)",
                (now, workspace, channel, str(ts), user_hash, label, self.redact(text), origin, event_id),
            )
            return True

    def sentiment_corrections(self, since: Any = None) -> list[dict]:
        """Corrections changed strictly after `since` (None: all; a training-run dict works), oldest
        first, as dicts with exactly: text (redacted), label, user_hash, time, channel, ts."""
        bound = parse_since(since)
        return self._read(
            "SELECT text, label, user_hash, time, channel, ts FROM sentiment_corrections"
            + (" WHERE time > ?" if bound is not None else "") + " ORDER BY time, id",
            (bound,) if bound is not None else (),
        )


def _select(table: str, channel: str | None, since: Any) -> tuple[str, list]:
    """SELECT of one channel's (or every channel's) rows of `table` with time > since, oldest first."""
    where, params = [], []
    if channel:
        where.append("channel = ?")
        params.append(channel)
    bound = parse_since(since)
    if bound is not None:
        where.append("time > ?")
        params.append(bound)
    return f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY time, id", params
