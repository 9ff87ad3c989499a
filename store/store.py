"""The conversation and feedback store: every answer and vote with provenance, PII redacted.

The bot writes, the retrain reads. All times are ISO-8601 UTC strings with microseconds and a
"Z" suffix ("2025-11-25T10:58:00.123456Z"): they sort lexicographically in time order, so
range queries use the indexes on the `time` columns. Every write is one `BEGIN IMMEDIATE`
transaction committed with synchronous=FULL before the method returns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from store import schema
from store.redact import KINDS, Redactor
from store.schema import StoreBusyError, StoreError

VOTES = ("up", "down", "retract")
ORIGINS = ("button", "reaction", "modal", "cli", "import", "clarify")
# "clarify": the user picked an article from the bot's "Did you mean…" question; stored as an "up"
# vote whose correction names the picked article (a labelled example, not a complaint).
CORRECTION_ORIGINS = ("modal", "cli", "import", "clarify")
SENTIMENT_LABELS = ("negative", "neutral", "positive")
STORED, DUPLICATE, CAPPED, NO_VOTE = "stored", "duplicate", "capped", "no-vote"
SUCCESS_STATUS = "ok"
DEFAULT_DAILY_VOTE_CAP = 200
SALT_FILE = "salt"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class UnknownAnswerError(UserError):
    """A vote names an answer id the store has never recorded."""


class InvalidVoteError(UserError):
    """A vote value, origin or correction is not acceptable."""


@dataclass(frozen=True)
class VoteResult:
    """What happened to one vote.

    status: "stored" (written, durable), "duplicate" (this Slack event id was already
    processed; nothing written), "capped" (the user hit the daily cap; nothing written) or
    "no-vote" (a retraction, but the user had no vote on that answer).
    """

    status: str
    answer_id: str
    vote: str
    feedback_id: int | None = None
    previous: str | None = None  # the user's earlier vote on this answer, if any

    @property
    def stored(self) -> bool:
        return self.status == STORED

    def to_json(self) -> dict:
        return asdict(self)


# --- time helpers -----------------------------------------------------------------------------


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def to_iso(value: Any) -> str:
    """Normalise a time (datetime, date, unix seconds, ISO string) to the store's format.

    Naive datetimes and ISO strings without an offset are taken as UTC.
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).strftime(_TIME_FORMAT)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).strftime(_TIME_FORMAT)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc).strftime(_TIME_FORMAT)
    if isinstance(value, str):
        text = value.strip()
        try:
            return to_iso(dt.datetime.fromisoformat(text))
        except ValueError:
            pass
        raise UserError(f"cannot read {value!r} as a date or time (use e.g. 2025-01-31 or 2025-01-31T09:30:00Z)")
    raise TypeError(f"cannot use {type(value).__name__} as a time")


# Units: s seconds, m/min minutes (not months), h hours, d days, w weeks, mo months (30 days).
_UNITS = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600,
          "d": 86400, "day": 86400, "days": 86400, "w": 7 * 86400, "wk": 7 * 86400, "week": 7 * 86400,
          "weeks": 7 * 86400, "mo": 30 * 86400, "month": 30 * 86400, "months": 30 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")\s*$", re.I)
DURATION_HELP = "a number and a unit: s, m (minutes), h, d, w, mo (months of 30 days); e.g. 90d, 12h, 30m, 6mo"


def parse_duration(text: str) -> dt.timedelta:
    """"90d", "12h", "30m" (minutes), "45s", "2w", "6mo" (30-day months) -> timedelta. A unit is required."""
    m = _DURATION.match(str(text))
    if not m:
        raise UserError(f"cannot read {text!r} as a duration; use {DURATION_HELP}")
    return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_since(value: Any) -> str | None:
    """A "since" bound -> store time string. Accepts None, datetimes, dates, unix seconds,
    ISO strings, durations meaning "that long ago" ("7d"), or a training-run dict."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return training_run_watermark(value)
    if isinstance(value, dt.timedelta):
        return to_iso(utcnow() - value)
    if isinstance(value, str) and _DURATION.match(value):
        return to_iso(utcnow() - parse_duration(value))
    return to_iso(value)


def training_run_watermark(run: dict | None) -> str | None:
    """The time after which feedback is new to the given training run."""
    if not run:
        return None
    return run.get("data_until") or run.get("started_at") or run.get("finished_at")


# --- salt -------------------------------------------------------------------------------------


def load_or_create_salt(path: Path) -> str:
    """Read the user-hash salt from `path`, creating it (random, mode 0600) the first time.

    Creation is atomic (write a temporary file, then hard-link it into place), so concurrent
    first runs agree on one salt. Losing this file makes stored user hashes unlinkable:
    `forget --user` can then no longer find a user's rows.
    """
    path = Path(path)
    try:
        salt = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        salt = ""
    except OSError as exc:
        raise StoreError(f"cannot read the salt file {path}: {exc.strerror or exc}") from exc
    if salt:
        return salt
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    salt = path.read_text(encoding="utf-8").strip()
    if not salt:
        raise StoreError(f"the salt file {path} is empty; delete it to generate a new one")
    return salt


# --- the store --------------------------------------------------------------------------------

_FEEDBACK_SINCE_SQL = """
SELECT f.id AS feedback_id, f.answer_id, f.vote, f.correct_intent, f.correct_doc_id,
       f.correct_answer, f.origin, f.user_hash, f.event_id, f.time, f.created,
       a.question, a.intent AS answer_intent, a.doc_id AS answer_doc_id,
       a.confidence, a.model_version, a.answer_text, a.handoff, a.time AS answer_time,
       a.used_context
FROM feedback f JOIN answers a ON a.answer_id = f.answer_id
"""


def _rows(cursor: sqlite3.Cursor) -> list[dict]:
    keys = [d[0] for d in cursor.description]
    return [dict(zip(keys, row)) for row in cursor]


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


class Store:
    """Answers, votes, sentiment log and training runs in one SQLite file (see docs/store.md).

    Thread-safe: one connection guarded by a lock. Other processes may open the same file at
    the same time (WAL mode): readers never block the writer and vice versa.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        salt: str,
        daily_vote_cap: int | None = DEFAULT_DAILY_VOTE_CAP,
        redact: bool | Iterable[str] = True,
        store_message_text: bool = False,
        busy_timeout: float = schema.DEFAULT_BUSY_TIMEOUT,
        cap_exempt_origins: Iterable[str] = ("import",),
    ):
        if not salt or not str(salt).strip():
            raise ValueError("Store needs a non-empty salt for hashing user ids")
        self.path = Path(path)
        self._salt = str(salt).encode("utf-8")
        self.daily_vote_cap = int(daily_vote_cap) if daily_vote_cap else None
        if redact is True or redact is None:  # None: not configured, so the safe default
            self.redactor = Redactor(KINDS)
        elif redact is False:
            self.redactor = Redactor(())
        else:
            self.redactor = Redactor(redact)
        self.store_message_text = bool(store_message_text)
        self.cap_exempt_origins = frozenset(cap_exempt_origins)
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._inbox = None
        self._conn = schema.open_database(self.path, busy_timeout=busy_timeout)

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "Store":
        """Build the store from `core.settings.Settings` (missing fields take the defaults)."""
        home = Path(getattr(settings, "home", ".csbot"))
        if home.is_dir() and not os.access(home, os.W_OK):
            # Say so plainly: SQLite would fail to open the WAL files and the error reads as corruption.
            raise StoreError(f"the csbot home {home} is read-only (the database needs to write there); "
                             "make it writable or point CSBOT_HOME at a writable folder")
        salt = getattr(settings, "user_hash_salt", None) or load_or_create_salt(home / SALT_FILE)
        cap = getattr(settings, "vote_daily_cap", DEFAULT_DAILY_VOTE_CAP)
        kwargs: dict[str, Any] = {
            "salt": salt,
            "daily_vote_cap": DEFAULT_DAILY_VOTE_CAP if cap is None else cap,
            "redact": getattr(settings, "redact_pii", True),
            "store_message_text": getattr(settings, "store_message_text", False),
        }
        kwargs.update(overrides)
        db_path = getattr(settings, "db_path", None) or home / "csbot.sqlite3"
        return cls(db_path, **kwargs)

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def inbox(self):
        """The Slack inbox, reply ledger and revoked workspaces in this database (store/inbox.py)."""
        if self._inbox is None:
            from store.inbox import Inbox

            self._inbox = Inbox(self)
        return self._inbox

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction; the commit happens before the caller returns."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._busy(exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                    raise self._busy(exc) from exc
                raise

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        with self._lock:
            try:
                return _rows(self._conn.execute(sql, tuple(params)))
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    raise self._busy(exc) from exc
                raise

    def _busy(self, exc: Exception) -> StoreBusyError:
        return StoreBusyError(f"{self.path} stayed locked by another writer for {self.busy_timeout:g}s ({exc})")

    def hash_user(self, user: str | None) -> str | None:
        """The salted hash stored in place of a Slack (or CLI) user id."""
        if user is None or str(user).strip() == "":
            return None
        return hmac.new(self._salt, str(user).strip().encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def redact(self, text: str | None) -> str | None:
        return self.redactor(text)

    # -- answers -------------------------------------------------------------------------------

    def record_answer(
        self,
        answer: Any,
        *,
        user: str | None = None,
        workspace: str | None = None,
        channel: str | None = None,
        thread: str | None = None,
        origin: str = "cli",
        question: str | None = None,
    ) -> bool:
        """Store one engine answer (question and answer text redacted). Idempotent per answer_id:
        returns False, writing nothing, if the id is already stored (e.g. a replayed event)."""
        if not getattr(answer, "answer_id", None):
            raise UserError("cannot record an answer without an answer_id")
        sources = [
            {"doc_id": s.doc_id, "title": s.title, "url": s.url, "score": round(float(s.score), 4)}
            for s in (answer.sources or [])
        ]
        row = (
            answer.answer_id,
            origin,
            workspace,
            channel,
            thread,
            self.hash_user(user),
            self.redact(answer.question if question is None else question),
            answer.intent,
            None if answer.confidence is None else float(answer.confidence),
            answer.sentiment,
            json.dumps(sources, ensure_ascii=False),
            answer.model_version,
            int(bool(answer.handoff)),
            self.redact(answer.text),
            answer.doc_id,
            json.dumps(dict(answer.sentiment_scores or {})),
            int(bool(getattr(answer, "used_context", False))),
        )
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO answers (answer_id, time, origin, workspace, channel, thread,"
                " user_hash, question, intent, confidence, sentiment, sources, model_version, handoff,"
                " answer_text, doc_id, sentiment_scores, used_context)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row[0], to_iso(utcnow()), *row[1:]),
            )
            return cur.rowcount == 1

    def get_answer(self, answer_id: str) -> dict | None:
        rows = self._read("SELECT * FROM answers WHERE answer_id = ?", (answer_id,))
        if not rows:
            return None
        row = rows[0]
        row["sources"] = _loads(row["sources"]) or []
        row["sentiment_scores"] = _loads(row["sentiment_scores"]) or {}
        row["handoff"] = bool(row["handoff"])
        row["used_context"] = bool(row["used_context"])
        tally = self._read(
            "SELECT vote, count(*) AS n FROM feedback WHERE answer_id = ? GROUP BY vote", (answer_id,)
        )
        votes = {"up": 0, "down": 0}
        votes.update({r["vote"]: r["n"] for r in tally if r["vote"] in votes})
        row["votes"] = votes
        return row

    # -- votes ---------------------------------------------------------------------------------

    def record_vote(
        self,
        answer_id: str,
        vote: str,
        *,
        user: str | None,
        origin: str,
        event_id: str | None = None,
        intent: str | None = None,
        doc_id: str | None = None,
        answer_text: str | None = None,
    ) -> VoteResult:
        """Record 👍/👎 (or a retraction) on an answer; durable before it returns.

        * Last write wins per (answer, user): a new vote replaces the user's earlier one.
          Votes without a user (local CLI use) share one anonymous identity per answer.
        * "retract" marks the user's vote retracted (it no longer counts); corrections are cleared.
        * A user may create at most `daily_vote_cap` new votes per UTC day (changing or
          retracting an existing vote is always allowed; anonymous votes and origins in
          `cap_exempt_origins` are not capped).
        * `event_id` (the Slack event / action id) makes the call idempotent: a replay returns
          status "duplicate". The id is claimed in the same transaction as the vote.
        * Corrections: the right intent, the right article (doc_id) or a written answer text
          (redacted before storage).
        """
        vote = (vote or "").strip().lower()
        if vote not in VOTES:
            raise InvalidVoteError(f"vote must be one of {', '.join(VOTES)}, not {vote!r}")
        if origin not in ORIGINS:
            raise InvalidVoteError(f"origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
        if not answer_id or not isinstance(answer_id, str):
            raise UnknownAnswerError("a vote needs an answer id")
        intent, doc_id, answer_text = (_blank_to_none(v) for v in (intent, doc_id, answer_text))
        if vote == "retract" and (intent or doc_id or answer_text):
            raise InvalidVoteError("a retraction cannot carry a correction")
        user_hash = self.hash_user(user)
        if vote == "retract" and user_hash is None:
            raise InvalidVoteError("retracting a vote needs the user who cast it")
        correct_answer = self.redact(answer_text)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM answers WHERE answer_id = ?", (answer_id,)).fetchone() is None:
                raise UnknownAnswerError(f"unknown answer id {answer_id!r}: no answer with that id in {self.path}")
            now = to_iso(utcnow())
            if event_id:
                claimed = conn.execute(
                    "INSERT OR IGNORE INTO processed_events (event_id, time) VALUES (?, ?)",
                    (f"vote:{event_id}", now),
                ).rowcount
                if not claimed or conn.execute("SELECT 1 FROM feedback WHERE event_id = ?", (event_id,)).fetchone():
                    return VoteResult(DUPLICATE, answer_id, vote)
            existing = conn.execute(
                "SELECT id, vote FROM feedback WHERE answer_id = ? AND user_hash IS ?", (answer_id, user_hash)
            ).fetchone()
            stored_vote = "retracted" if vote == "retract" else vote
            if existing is None:
                if vote == "retract":
                    return VoteResult(NO_VOTE, answer_id, vote)
                if self._capped(conn, user_hash, origin, now):
                    return VoteResult(CAPPED, answer_id, vote)
                cur = conn.execute(
                    "INSERT INTO feedback (answer_id, user_hash, vote, origin, event_id, time, created,"
                    " correct_intent, correct_doc_id, correct_answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (answer_id, user_hash, stored_vote, origin, event_id, now, now, intent, doc_id, correct_answer),
                )
                return VoteResult(STORED, answer_id, vote, cur.lastrowid)
            feedback_id, previous = existing
            if vote == "retract" and previous == "retracted":
                return VoteResult(NO_VOTE, answer_id, vote, feedback_id, previous)
            conn.execute(
                "UPDATE feedback SET vote = ?, origin = ?, event_id = ?, time = ?, correct_intent = ?,"
                " correct_doc_id = ?, correct_answer = ? WHERE id = ?",
                (stored_vote, origin, event_id, now, intent, doc_id, correct_answer, feedback_id),
            )
            return VoteResult(STORED, answer_id, vote, feedback_id, previous)

    def _capped(self, conn: sqlite3.Connection, user_hash: str | None, origin: str, now: str) -> bool:
        if not self.daily_vote_cap or user_hash is None or origin in self.cap_exempt_origins:
            return False
        day_start = now[:10] + "T00:00:00.000000Z"
        (today,) = conn.execute(
            "SELECT count(*) FROM feedback WHERE user_hash = ? AND created >= ?", (user_hash, day_start)
        ).fetchone()
        return today >= self.daily_vote_cap

    def claim_event(self, event_id: str) -> bool:
        """Atomically mark a Slack event id processed: True the first time, False on every replay.

        For vote events pass `event_id` to record_vote instead (it claims the id in the same
        transaction as the vote, so a crash cannot lose the vote after claiming it).
        """
        if not event_id:
            raise UserError("claim_event needs an event id")
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO processed_events (event_id, time) VALUES (?, ?)", (event_id, to_iso(utcnow()))
            )
            return cur.rowcount == 1

    def _feedback_since_sql(self, since: Any, include_retracted: bool) -> tuple[str, list]:
        where, params = [], []
        bound = parse_since(since)
        if bound is not None:
            where.append("f.time > ?")
            params.append(bound)
        if not include_retracted:
            where.append("f.vote != 'retracted'")
        sql = _FEEDBACK_SINCE_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY f.time, f.id"
        return sql, params

    def feedback_since(self, since: Any = None, *, include_retracted: bool = False, limit: int | None = None) -> list[dict]:
        """Votes changed strictly after `since` (None: all), oldest first, each joined with its answer.

        Keys: feedback_id, answer_id, vote (up/down; "retracted" only with include_retracted),
        correct_intent, correct_doc_id, correct_answer, origin, user_hash, event_id, time (of the
        vote's last change), created, question (redacted), answer_intent, answer_doc_id,
        confidence, model_version, answer_text, handoff, answer_time, used_context (the answer
        read the question with the thread's earlier turn: a follow-up).
        `since` may be a training-run dict (its `data_until`); the newest row's `time` is the
        watermark to record as `data_until` for the next run.
        """
        sql, params = self._feedback_since_sql(since, include_retracted)
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = self._read(sql, params)
        for row in rows:
            row["handoff"] = bool(row["handoff"])
            row["used_context"] = bool(row["used_context"])
        return rows

    def iter_feedback_since(self, since: Any = None, *, include_retracted: bool = False) -> Iterator[dict]:
        """feedback_since as a stream: the same rows, read from one consistent snapshot on a
        separate read-only connection, in constant memory - for a first retrain over millions
        of votes. Writers are never blocked while it is consumed."""
        sql, params = self._feedback_since_sql(since, include_retracted)
        conn = schema.connect(self.path, busy_timeout=self.busy_timeout, read_only=True)
        try:
            cursor = conn.execute(sql, params)
            keys = [d[0] for d in cursor.description]
            while True:
                batch = cursor.fetchmany(5000)
                if not batch:
                    break
                for values in batch:
                    row = dict(zip(keys, values))
                    row["handoff"] = bool(row["handoff"])
                    row["used_context"] = bool(row["used_context"])
                    yield row
        finally:
            conn.close()

    def feedback_since_last_run(self, **kwargs: Any) -> list[dict]:
        """feedback_since(the last successful training run's watermark)."""
        return self.feedback_since(training_run_watermark(self.last_training_run()), **kwargs)

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
        when = _time_from_slack_ts(ts)
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO monitored_messages (time, workspace, channel, ts, user_hash, sentiment,"
                " scores, intent, confidence, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        where, params = [], []
        if channel:
            where.append("channel = ?")
            params.append(channel)
        bound = parse_since(since)
        if bound is not None:
            where.append("time > ?")
            params.append(bound)
        rows = self._read(
            "SELECT * FROM monitored_messages" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY time, id",
            params,
        )
        for row in rows:
            row["scores"] = _loads(row["scores"]) or {}
        return rows

    def monitored_message(self, channel: str, ts: str) -> dict | None:
        """One monitored message by its Slack channel and ts (None if it was not stored)."""
        rows = self._read("SELECT * FROM monitored_messages WHERE channel = ? AND ts = ?", (channel, str(ts)))
        if not rows:
            return None
        rows[0]["scores"] = _loads(rows[0]["scores"]) or {}
        return rows[0]

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
        when = to_iso(time)
        moment = dt.datetime.strptime(when, _TIME_FORMAT).replace(tzinfo=dt.timezone.utc)
        lo, hi = to_iso(moment - cooldown), to_iso(moment + cooldown)
        details = dict(details or {})
        with self._write() as conn:
            if conn.execute(
                "SELECT 1 FROM monitoring_alerts WHERE channel = ? AND time > ? AND time < ?", (channel, lo, hi)
            ).fetchone():
                return None
            cur = conn.execute(
                "INSERT INTO monitoring_alerts (channel, time, created, recent_n, recent_negative, baseline_n,"
                " baseline_negative, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (channel, when, to_iso(utcnow()), details.get("recent_n"), details.get("recent_negative"),
                 details.get("baseline_n"), details.get("baseline_negative"), json.dumps(details, default=str)),
            )
            return int(cur.lastrowid)

    def monitoring_alerts(self, channel: str | None = None, since: Any = None) -> list[dict]:
        """Recorded alerts (time > since), oldest first; `details` decoded."""
        where, params = [], []
        if channel:
            where.append("channel = ?")
            params.append(channel)
        bound = parse_since(since)
        if bound is not None:
            where.append("time > ?")
            params.append(bound)
        rows = self._read(
            "SELECT * FROM monitoring_alerts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY time, id",
            params,
        )
        for row in rows:
            row["details"] = _loads(row["details"]) or {}
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
            now = to_iso(utcnow())
            if event_id:
                claimed = conn.execute(
                    "INSERT OR IGNORE INTO processed_events (event_id, time) VALUES (?, ?)",
                    (f"sentiment:{event_id}", now),
                ).rowcount
                if not claimed:
                    return False
            conn.execute(
                "INSERT INTO sentiment_corrections (time, workspace, channel, ts, user_hash, label, text, origin,"
                " event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (channel, ts, user_hash) DO UPDATE SET time = excluded.time, label = excluded.label,"
                " text = excluded.text, origin = excluded.origin, event_id = excluded.event_id,"
                " workspace = coalesce(excluded.workspace, workspace)",
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

    # -- training runs -------------------------------------------------------------------------

    _RUN_COLUMNS = ("started_at", "finished_at", "status", "model_version", "data_until", "n_feedback", "n_messages", "metrics", "notes")

    def record_training_run(self, **fields: Any) -> int:
        """Record one retrain. Known fields: started_at, finished_at (default now), status
        (default "ok"; only "ok" runs count for last_training_run), model_version, data_until
        (the newest feedback `time` the run learned from), n_feedback, n_messages, metrics
        (JSON-able), notes. Any other field is kept in `extra`. Returns the run id."""
        row: dict[str, Any] = {k: fields.pop(k) for k in list(fields) if k in self._RUN_COLUMNS}
        now = to_iso(utcnow())
        for key in ("started_at", "finished_at", "data_until"):
            if row.get(key) is not None:
                row[key] = to_iso(row[key])
        row.setdefault("finished_at", now)
        row["status"] = row.get("status") or SUCCESS_STATUS
        if "metrics" in row and row["metrics"] is not None:
            row["metrics"] = json.dumps(row["metrics"], default=str)
        row["extra"] = json.dumps(fields, default=str) if fields else None
        columns = list(row)
        with self._write() as conn:
            cur = conn.execute(
                f"INSERT INTO training_runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [row[c] for c in columns],
            )
            return int(cur.lastrowid)

    def training_runs(self, limit: int = 10) -> list[dict]:
        """The newest runs first."""
        rows = self._read("SELECT * FROM training_runs ORDER BY id DESC LIMIT ?", (int(limit),))
        return [self._run_row(r) for r in rows]

    def last_training_run(self, *, any_status: bool = False) -> dict | None:
        """The newest run with status "ok" (any status with any_status=True), or None."""
        if any_status:
            rows = self._read("SELECT * FROM training_runs ORDER BY id DESC LIMIT 1")
        else:
            rows = self._read("SELECT * FROM training_runs WHERE status = ? ORDER BY id DESC LIMIT 1", (SUCCESS_STATUS,))
        return self._run_row(rows[0]) if rows else None

    @staticmethod
    def _run_row(row: dict) -> dict:
        row["metrics"] = _loads(row["metrics"])
        extra = _loads(row.pop("extra"))
        if extra:
            for key, value in extra.items():
                row.setdefault(key, value)
        return row

    # -- retention and deletion ----------------------------------------------------------------

    def purge(self, older_than: dt.timedelta, *, dry_run: bool = False) -> dict[str, int]:
        """Delete everything older than `older_than`: answers (with every vote on them), votes,
        monitored messages and processed event ids. Training runs are kept. Returns row counts."""
        if not isinstance(older_than, dt.timedelta) or older_than <= dt.timedelta(0):
            raise UserError("purge needs a positive age, e.g. 90d")
        cutoff = to_iso(utcnow() - older_than)
        statements = {
            "feedback": (
                "feedback WHERE time < :c OR answer_id IN (SELECT answer_id FROM answers WHERE time < :c)"
            ),
            "answers": "answers WHERE time < :c",
            "monitored_messages": "monitored_messages WHERE time < :c",
            "processed_events": "processed_events WHERE time < :c",
        }
        extra = {
            "sentiment_corrections": "sentiment_corrections WHERE time < :c",
            "monitoring_alerts": "monitoring_alerts WHERE time < :c",
            "slack_posts": "slack_posts WHERE time < :c",
        }
        return self._delete(statements, {"c": cutoff}, dry_run=dry_run, extra=extra)

    def user_questions(self, user: str) -> list[str]:
        """The (redacted) question texts a user asked or voted on: what `forget` must also remove
        from the examples that model versions learned (training/forget.py)."""
        user_hash = self.hash_user(user)
        if user_hash is None:
            raise UserError("forget needs a user id")
        rows = self._read(
            "SELECT question FROM answers WHERE user_hash = ? AND question IS NOT NULL"
            " UNION SELECT a.question FROM feedback f JOIN answers a ON a.answer_id = f.answer_id"
            " WHERE f.user_hash = ? AND a.question IS NOT NULL"
            " UNION SELECT text FROM sentiment_corrections WHERE user_hash = ? AND text IS NOT NULL",
            (user_hash, user_hash, user_hash),
        )
        return sorted({row["question"] for row in rows})

    def forget_user(self, user: str, *, dry_run: bool = False) -> dict[str, int]:
        """Delete every row of one user: their votes, their questions (answers, with the votes
        others cast on them) and their monitored messages. Returns row counts per table."""
        user_hash = self.hash_user(user)
        if user_hash is None:
            raise UserError("forget needs a user id")
        statements = {
            "feedback": "feedback WHERE user_hash = :u OR answer_id IN (SELECT answer_id FROM answers WHERE user_hash = :u)",
            "answers": "answers WHERE user_hash = :u",
            "monitored_messages": "monitored_messages WHERE user_hash = :u",
        }
        extra = {"sentiment_corrections": "sentiment_corrections WHERE user_hash = :u"}
        return self._delete(statements, {"u": user_hash}, dry_run=dry_run, extra=extra)

    def _delete(self, statements: dict[str, str], params: dict, *, dry_run: bool,
                extra: dict[str, str] | None = None) -> dict[str, int]:
        """Delete (or count) per table. Tables in `extra` are always deleted from too, but appear in
        the returned counts only when rows were found (keeps the historical result shape)."""
        counts: dict[str, int] = {}
        with self._write() as conn:
            for table, clause in {**statements, **(extra or {})}.items():
                if dry_run:
                    n = conn.execute(f"SELECT count(*) FROM {clause}", params).fetchone()[0]
                else:
                    n = conn.execute(f"DELETE FROM {clause}", params).rowcount
                if table in statements or n:
                    counts[table] = n
        if not dry_run and any(counts.values()):
            self._checkpoint()
        return counts

    def _checkpoint(self) -> None:
        """Best effort: move deleted pages out of the WAL so old copies do not linger on disk."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass

    # -- export and stats ----------------------------------------------------------------------

    def export(self, since: Any = None, *, kinds: Iterable[str] = ("answers", "feedback", "monitored_messages")) -> Iterator[dict]:
        """Yield every record changed after `since` as JSON-able dicts with a "type" key
        ("answer", "feedback", "monitored_message"), each type oldest first. Reads one
        consistent snapshot on its own read-only connection, so writers are never blocked."""
        kinds = list(kinds)
        unknown = sorted(set(kinds) - {"answers", "feedback", "monitored_messages"})
        if unknown:
            raise UserError(f"unknown export kind(s) {', '.join(unknown)}")
        bound = parse_since(since)
        conn = schema.connect(self.path, busy_timeout=self.busy_timeout, read_only=True)
        try:
            conn.execute("BEGIN")
            for kind in ("answers", "feedback", "monitored_messages"):
                if kind not in kinds:
                    continue
                sql = f"SELECT * FROM {kind}" + (" WHERE time > ?" if bound else "") + " ORDER BY time"
                cursor = conn.execute(sql, (bound,) if bound else ())
                keys = [d[0] for d in cursor.description]
                for values in cursor:
                    row = dict(zip(keys, values))
                    yield {"type": _EXPORT_TYPES[kind], **_decode_export(kind, row)}
        finally:
            conn.close()

    def counts(self) -> dict[str, int]:
        tables = ("answers", "feedback", "monitored_messages", "processed_events", "training_runs")
        counts = {t: self._read(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in tables}
        for vote in ("up", "down", "retracted"):
            counts[f"votes_{vote}"] = self._read("SELECT count(*) AS n FROM feedback WHERE vote = ?", (vote,))[0]["n"]
        return counts

    def schema_version(self) -> int:
        with self._lock:
            return schema.schema_version(self._conn)

    def most_answered_docs(self, limit: int = 10) -> list[tuple[str, int]]:
        """(doc id, answers) of the articles answered most often (hand-offs not counted), most first:
        the Slack messages tab suggests them."""
        rows = self._read("SELECT doc_id, count(*) AS n FROM answers WHERE doc_id IS NOT NULL AND NOT handoff"
                          " GROUP BY doc_id ORDER BY n DESC, doc_id LIMIT ?", (int(limit),))
        return [(row["doc_id"], row["n"]) for row in rows]


_EXPORT_TYPES = {"answers": "answer", "feedback": "feedback", "monitored_messages": "monitored_message"}


def _decode_export(kind: str, row: dict) -> dict:
    if kind == "answers":
        row["sources"] = _loads(row["sources"]) or []
        row["sentiment_scores"] = _loads(row["sentiment_scores"]) or {}
        row["handoff"] = bool(row["handoff"])
        row["used_context"] = bool(row["used_context"])
    elif kind == "monitored_messages":
        row["scores"] = _loads(row["scores"]) or {}
    return row


def _blank_to_none(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidVoteError(f"a correction must be text, not {type(value).__name__}")
    return value.strip() or None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _time_from_slack_ts(ts: Any) -> str:
    try:
        return to_iso(float(ts))
    except (TypeError, ValueError, OverflowError, OSError):
        return to_iso(utcnow())
