"""csbot's one time parser (the base layer): every time in the SQLite file, the monitoring and the
CLI's --since options goes through here.

All times are stored as ISO-8601 UTC strings with microseconds and a "Z" suffix
("2025-11-25T10:58:00.123456Z"): they sort lexicographically in time order, so range queries
use the indexes on the `time` columns. `utcnow` is looked up on this module at every call
(tests freeze it with monkeypatch.setattr("core.clock.utcnow", ...)).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from core.errors import UserError

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: Any) -> dt.datetime:
    """datetime / date / unix seconds / ISO-8601 string -> an aware UTC datetime.

    Naive datetimes and ISO strings without an offset are taken as UTC. A string that is not
    ISO-8601 raises ValueError (to_iso turns that into a UserError); any other type TypeError.
    """
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    if isinstance(value, str):
        return as_utc(dt.datetime.fromisoformat(value.strip()))
    raise TypeError(f"cannot use {type(value).__name__} as a time")


def to_iso(value: Any) -> str:
    """Normalise a time (datetime, date, unix seconds, ISO string) to the store's format.

    Naive datetimes and ISO strings without an offset are taken as UTC.
    """
    try:
        moment = as_utc(value)
    except ValueError:
        if not isinstance(value, str):
            raise
        raise UserError(f"cannot read {value!r} as a date or time (use e.g. 2025-01-31 or 2025-01-31T09:30:00Z)") from None
    return moment.strftime(TIME_FORMAT)


def time_from_slack_ts(ts: Any) -> str:
    """A Slack message ts ("1700000000.000100") as a store time; now if it is not a number."""
    try:
        return to_iso(float(ts))
    except (TypeError, ValueError, OverflowError, OSError):
        return to_iso(utcnow())


# Units: s seconds, m/min minutes (not months), h hours, d days, w weeks, mo months (30 days).
_UNITS = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600,
          "d": 86400, "day": 86400, "days": 86400, "w": 7 * 86400, "wk": 7 * 86400, "week": 7 * 86400,
          "weeks": 7 * 86400, "mo": 30 * 86400, "month": 30 * 86400, "months": 30 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")\s*$", re.I)
DURATION_HELP = "a number and a unit: s, m (minutes), h, d, w, mo (months of 30 days); e.g. 90d, 12h, 30m, 6mo"


def is_duration(text: Any) -> bool:
    """Whether `text` reads as a duration ("90d", "12h"), i.e. parse_duration accepts it."""
    return isinstance(text, str) and _DURATION.match(text) is not None


def parse_duration(text: str) -> dt.timedelta:
    """"90d", "12h", "30m" (minutes), "45s", "2w", "6mo" (30-day months) -> timedelta. A unit is required."""
    m = _DURATION.match(str(text))
    if not m:
        raise UserError(f"cannot read {text!r} as a duration; use {DURATION_HELP}")
    return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_since(value: Any) -> str | None:
    """A "since" bound -> store time string. Accepts None, datetimes, dates, unix seconds,
    ISO strings, durations meaning "that long ago" ("7d"), or a training-run dict (its
    training_run_watermark)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return training_run_watermark(value)
    if isinstance(value, dt.timedelta):
        return to_iso(utcnow() - value)
    if is_duration(value):
        return to_iso(utcnow() - parse_duration(value))
    return to_iso(value)


def training_run_watermark(run: dict | None) -> str | None:
    """The time after which feedback is new to the given training run (parse_since of a run dict)."""
    if not run:
        return None
    return run.get("data_until") or run.get("started_at") or run.get("finished_at")
