"""The Slack inbox: every request csbot acknowledged, kept until its work is done (docs/slack.md).

Owned by the store (the same database: the SQLite file, or PostgreSQL shared by every replica), used
by bot/slack/intake.py (the write before the ack) and bot/slack/workers.py (the worker pool):

* `accept` writes a request's work items and claims its key (the Events API event id, `trigger:<id>` or a
  hash of the signed body: bot/slack/intake.py `claim_key`) in ONE transaction,
  committed before the HTTP 200 / Socket Mode ack goes out: an event that was never acknowledged
  is never marked processed, and one that was is never lost.
* `take` hands the oldest item of the most urgent class to one worker of one serving process
  (several processes may share the database); `finish` deletes it once its effect is durable; `retry`
  and `fail` handle errors; `reclaim` gives the items of a dead process (kill -9, crash) back.
  The lease: a process's heartbeat (`heartbeat`, every housekeeping round). Once it is older than
  `stale_after`, any process's `reclaim` hands that process's running items back to pending, and
  another worker takes them over. On PostgreSQL, `take` claims with `SELECT ... FOR UPDATE SKIP
  LOCKED` in a short transaction of its own: workers on any host never wait for each other and never
  take the same item; the claims do not queue behind the store's other writers.
* The reply ledger (`post_*`) records which Slack message answered which question, so a re-run
  item never posts an answer twice and reactions map to answers across restarts and processes.
* Revoked workspaces (`app_uninstalled`, `tokens_revoked`): nothing is posted there any more.

Privacy: an item holds the raw payload (message text, user ids) only while it is pending or
running; a finished item is deleted (secure_delete is on), a failed one keeps no body and a
redacted error. secure_delete zeroes the database file only: the WAL keeps every page version
written since the last checkpoint, so `scrub` checkpoints it (TRUNCATE). It runs when a finished or
failed item leaves nothing pending or running, and the worker pool calls it at its start (after a
kill -9, the dead process's WAL is still there), every housekeeping round while payloads have left
since the last scrub (a busy inbox is never empty), and at its stop: no checkpoint per message
under load, and no raw payload on disk once the inbox is idle.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from core.clock import to_iso, utcnow
from store.events import CLAIMED_SQL, claim_event

PENDING, RUNNING, FAILED = "pending", "running", "failed"
INTERACTIVE, ANSWER, SENTIMENT = "interactive", "answer", "sentiment"
PRIORITY = {INTERACTIVE: 0, ANSWER: 1, SENTIMENT: 2}
# How long a scrub waits for another process's reader or writer before giving up until the next try:
# it holds the store's lock meanwhile, and the intake's write before an ack waits on that lock.
SCRUB_WAIT_SECONDS = 0.05


@dataclass(frozen=True)
class InboxItem:
    """One unit of acknowledged work: run lazy listener `function` on this payload."""

    function: str
    work: str
    body: str
    mode: str = "http"
    content_type: str | None = None
    team: str | None = None


@dataclass(frozen=True)
class Accepted:
    duplicate: bool  # the event id was already claimed: nothing was written
    queued: int = 0
    shed: int = 0  # sentiment items not queued because the inbox was full
    late: int = 0  # answer items queued to get the busy note because the inbox was full


@runtime_checkable
class ReplyLedger(Protocol):
    """Which Slack message answered which question (`Inbox`'s post_* methods; bot/slack/posted.py and
    the message handlers use it)."""

    def post_record(self, key: str) -> dict | None: ...

    def post_begin(self, key: str, *, answer_id: str | None, channel: str, thread_ts: str | None,
                   question_ts: str | None, message: dict | None = None) -> None: ...

    def post_done(self, key: str, ts: str, answer_id: str | None = None) -> None: ...

    def owed(self, key: str) -> dict | None: ...

    def answer_for_message(self, channel: str, ts: str) -> str | None: ...

    def thread_answered(self, channel: str, thread_ts: str) -> bool: ...


@runtime_checkable
class SlackInbox(ReplyLedger, Protocol):
    """The Slack inbox as the intake and the worker pool use it (`Inbox`; `Store.inbox`), with the
    reply ledger and the revoked workspaces."""

    def accept(self, items: list[InboxItem], *, event_id: str | None = None, limit: int | None = None,
               now: float | None = None) -> Accepted: ...

    def event_claimed(self, event_id: str) -> bool: ...

    def register(self, owner: str, now: float | None = None) -> None: ...

    def heartbeat(self, owner: str, now: float | None = None) -> None: ...

    def unregister(self, owner: str) -> None: ...

    def reclaim(self, *, stale_after: float, now: float | None = None) -> int: ...

    def take(self, owner: str, now: float | None = None) -> dict | None: ...

    def finish(self, item_id: int) -> None: ...

    def retry(self, item_id: int, error: str, delay: float, now: float | None = None) -> None: ...

    def fail(self, item_id: int, error: str) -> None: ...

    def scrub(self, *, if_needed: bool = False) -> bool: ...

    def release(self, owner: str, item_id: int | None = None) -> int: ...

    def depth(self) -> dict[str, int]: ...

    def items(self, state: str | None = None) -> list[dict]: ...

    def revoke(self, team: str, reason: str) -> bool: ...

    def restore(self, team: str) -> bool: ...

    def revoked(self) -> dict[str, dict[str, Any]]: ...


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Inbox:
    """The `SlackInbox` (above) over one Store's connection."""

    def __init__(self, store):
        self.store = store
        self._unscrubbed = False  # a payload left the inbox since the last completed scrub

    # ----- intake ------------------------------------------------------------------------------
    def accept(self, items: list[InboxItem], *, event_id: str | None = None, limit: int | None = None,
               now: float | None = None) -> Accepted:
        """Claim `event_id` (if any) and queue `items`, in one durable transaction.

        With `limit` pending/running items already queued, sentiment items are shed and answer
        items are queued marked late (they get the busy note); interactive items always queue."""
        now = time.time() if now is None else now
        with self.store._write(serial=False) as conn:
            if event_id and not claim_event(conn, event_id, to_iso(now)):
                return Accepted(duplicate=True)
            full = False
            if limit is not None and items:
                (depth,) = conn.execute("SELECT count(*) FROM slack_inbox WHERE state IN (?, ?)",
                                        (PENDING, RUNNING)).fetchone()
                full = depth >= limit
            queued = shed = late = 0
            for item in items:
                if full and item.work == SENTIMENT:
                    shed += 1
                    continue
                is_late = int(full and item.work == ANSWER)
                conn.execute(
                    "INSERT INTO slack_inbox (received, event_id, team, function, work, priority, mode, content_type,"
                    " body, state, late, attempts, not_before) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)",
                    (now, event_id, item.team, item.function, item.work, PRIORITY.get(item.work, 0), item.mode,
                     item.content_type, item.body, PENDING, is_late))
                queued += 1
                late += is_late
            return Accepted(duplicate=False, queued=queued, shed=shed, late=late)

    def event_claimed(self, event_id: str) -> bool:
        return bool(self.store._read(CLAIMED_SQL, (event_id,)))

    # ----- workers -----------------------------------------------------------------------------
    def register(self, owner: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.store._write() as conn:
            conn.execute("INSERT INTO slack_workers (owner, host, pid, started, heartbeat) VALUES (?, ?, ?, ?, ?)"
                         " ON CONFLICT (owner) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
                         " started = excluded.started, heartbeat = excluded.heartbeat",
                         (owner, socket.gethostname(), os.getpid(), now, now))

    def heartbeat(self, owner: str, now: float | None = None) -> None:
        """Renew `owner`'s lease. A process that others took for dead (its heartbeat lapsed while the
        database was out of reach, or it was paused) registers again: without its row every other
        process would take over each item it claims, over and over."""
        now = time.time() if now is None else now
        with self.store._write(serial=False) as conn:
            if conn.execute("UPDATE slack_workers SET heartbeat = ? WHERE owner = ?", (now, owner)).rowcount:
                return
        self.register(owner, now)

    def unregister(self, owner: str) -> None:
        with self.store._write() as conn:
            conn.execute("DELETE FROM slack_workers WHERE owner = ?", (owner,))

    def reclaim(self, *, stale_after: float, now: float | None = None) -> int:
        """Put the running items of dead serving processes back to pending; returns how many.

        A process is dead when it has no worker row, its heartbeat is older than `stale_after`
        seconds, or it ran on this host and its pid is gone (so a restart after kill -9 resumes at once)."""
        now = time.time() if now is None else now
        host = socket.gethostname()
        with self.store._write() as conn:
            owners = [r[0] for r in conn.execute("SELECT DISTINCT owner FROM slack_inbox WHERE state = ?", (RUNNING,))]
            workers = {r[0]: r for r in conn.execute("SELECT owner, host, pid, heartbeat FROM slack_workers")}
            dead = set()
            for owner, (_, w_host, pid, beat) in workers.items():
                if beat < now - stale_after or (w_host == host and pid and not pid_alive(pid)):
                    dead.add(owner)
            dead.update(o for o in owners if o not in workers)
            moved = 0
            for owner in dead:
                moved += conn.execute("UPDATE slack_inbox SET state = ?, owner = NULL WHERE state = ? AND owner IS ?",
                                      (PENDING, RUNNING, owner)).rowcount
                conn.execute("DELETE FROM slack_workers WHERE owner IS ?", (owner,))
            return moved

    def take(self, owner: str, now: float | None = None) -> dict | None:
        """The next item for `owner` (most urgent class first, then oldest), marked running."""
        now = time.time() if now is None else now
        if self.store.dialect == "sqlite" and not self.store._read(
                "SELECT 1 AS x FROM slack_inbox WHERE state = ? AND not_before <= ? LIMIT 1", (PENDING, now)):
            return None  # a read, without SQLite's write lock, while idle (PostgreSQL's claim locks rows only)
        with self.store._write(serial=False) as conn:
            cursor = conn.execute(
                "SELECT * FROM slack_inbox WHERE state = ? AND not_before <= ? ORDER BY priority, id LIMIT 1"
                + self.store._db.lock_rows, (PENDING, now))
            row = cursor.fetchone()
            if row is None:
                return None
            item = dict(zip([d[0] for d in cursor.description], row))
            conn.execute("UPDATE slack_inbox SET state = ?, owner = ?, attempts = attempts + 1 WHERE id = ?",
                         (RUNNING, owner, item["id"]))
            item["attempts"] += 1
            return item

    def finish(self, item_id: int) -> None:
        """The item's effect is durable: delete it (and its payload); scrub if the inbox is now idle."""
        with self.store._lock:  # nobody in this process sees the inbox idle before its scrub is done
            with self.store._write(serial=False) as conn:
                conn.execute("DELETE FROM slack_inbox WHERE id = ?", (item_id,))
                idle = self._idle(conn)
            self._payload_gone(idle)

    def retry(self, item_id: int, error: str, delay: float, now: float | None = None) -> None:
        """Try the item again after `delay` seconds (it keeps its payload for that)."""
        now = time.time() if now is None else now
        with self.store._write(serial=False) as conn:
            conn.execute("UPDATE slack_inbox SET state = ?, owner = NULL, not_before = ?, error = ? WHERE id = ?",
                         (PENDING, now + delay, self._error_text(error), item_id))

    def fail(self, item_id: int, error: str) -> None:
        """Give up on an item: it stays (without its payload) for /healthz and the log."""
        with self.store._lock:
            with self.store._write(serial=False) as conn:
                conn.execute("UPDATE slack_inbox SET state = ?, owner = NULL, body = NULL, error = ? WHERE id = ?",
                             (FAILED, self._error_text(error), item_id))
                idle = self._idle(conn)
            self._payload_gone(idle)

    def _error_text(self, error: str) -> str:
        # An exception's text can quote the payload (a message, an email address): redacted like answers.
        return (self.store.redact(str(error)) or "")[:500]

    @staticmethod
    def _idle(conn) -> bool:
        return conn.execute("SELECT 1 FROM slack_inbox WHERE state IN (?, ?) LIMIT 1",
                            (PENDING, RUNNING)).fetchone() is None

    def _payload_gone(self, idle: bool) -> None:
        self._unscrubbed = True
        if idle:
            self.scrub()

    def scrub(self, *, if_needed: bool = False) -> bool:
        """Checkpoint the WAL (TRUNCATE) so the page versions of finished payloads leave the disk.

        Returns whether it completed: another process's reader or writer can hold it up (then
        call it again later). `if_needed`: only if a payload left since the last completed scrub."""
        if if_needed and not self._unscrubbed:
            return True
        self._unscrubbed = False  # before the checkpoint: a payload leaving meanwhile marks it again
        done = self.store.checkpoint(wait=SCRUB_WAIT_SECONDS)
        if not done:
            self._unscrubbed = True
        return done

    def release(self, owner: str, item_id: int | None = None) -> int:
        """Hand `owner`'s running items back (a stop that ran out of grace), or only `item_id` when it is
        still `owner`'s (a worker that could not record an item's outcome: the database went away)."""
        only = " AND id = ?" if item_id is not None else ""
        with self.store._write() as conn:
            return conn.execute(f"UPDATE slack_inbox SET state = ?, owner = NULL WHERE state = ? AND owner = ?{only}",
                                (PENDING, RUNNING, owner, *(() if item_id is None else (item_id,)))).rowcount

    def depth(self) -> dict[str, int]:
        rows = self.store._read("SELECT state, count(*) AS n FROM slack_inbox GROUP BY state")
        counts = {PENDING: 0, RUNNING: 0, FAILED: 0}
        counts.update({r["state"]: r["n"] for r in rows})
        return counts

    def items(self, state: str | None = None) -> list[dict]:
        """Inbox rows (without payloads), oldest first."""
        sql = ("SELECT id, received, event_id, team, function, work, priority, state, late, owner, attempts, error"
               " FROM slack_inbox")
        return self.store._read(sql + (" WHERE state = ?" if state else "") + " ORDER BY id", (state,) if state else ())

    # ----- the reply ledger --------------------------------------------------------------------
    def post_record(self, key: str) -> dict | None:
        rows = self.store._read("SELECT * FROM slack_posts WHERE key = ?", (key,))
        return rows[0] if rows else None

    def post_begin(self, key: str, *, answer_id: str | None, channel: str, thread_ts: str | None,
                   question_ts: str | None, message: dict | None = None) -> None:
        """Note that a post is under way (before the Web API call), with the answer id it carries;
        `message` (chat.postMessage arguments) makes it a post owed until `post_done`."""
        with self.store._write() as conn:
            conn.execute(
                "INSERT INTO slack_posts (key, answer_id, channel, thread_ts, question_ts, ts, message, time)"
                " VALUES (?, ?, ?, ?, ?, NULL, ?, ?) ON CONFLICT (key) DO UPDATE SET answer_id = excluded.answer_id,"
                " message = excluded.message, time = excluded.time",
                (key, answer_id, channel, thread_ts, question_ts, None if message is None else json.dumps(message),
                 to_iso(utcnow())))

    def post_done(self, key: str, ts: str, answer_id: str | None = None) -> None:
        with self.store._write() as conn:
            conn.execute("UPDATE slack_posts SET ts = ?, answer_id = coalesce(?, answer_id), message = NULL, time = ?"
                         " WHERE key = ?", (ts, answer_id, to_iso(utcnow()), key))

    def owed(self, key: str) -> dict | None:
        """The chat.postMessage arguments of a post noted but not yet done, if any."""
        record = self.post_record(key)
        if record is None or record["ts"] or not record["message"]:
            return None
        return json.loads(record["message"])

    def answer_for_message(self, channel: str, ts: str) -> str | None:
        rows = self.store._read("SELECT answer_id FROM slack_posts WHERE channel = ? AND ts = ? AND answer_id IS NOT NULL",
                                (channel, ts))
        return rows[0]["answer_id"] if rows else None

    def thread_answered(self, channel: str, thread_ts: str) -> bool:
        return bool(self.store._read("SELECT 1 AS x FROM slack_posts WHERE channel = ? AND thread_ts = ?"
                                     " AND ts IS NOT NULL AND answer_id IS NOT NULL"
                                     " AND key LIKE 'answer:%' LIMIT 1", (channel, thread_ts)))

    # ----- revoked workspaces ------------------------------------------------------------------
    def revoke(self, team: str, reason: str) -> bool:
        """Stop posting to `team`; True the first time."""
        with self.store._write() as conn:
            return conn.execute(
                "INSERT INTO slack_workspaces (team, state, reason, time) VALUES (?, 'revoked', ?, ?)"
                " ON CONFLICT (team) DO UPDATE SET state = 'revoked', reason = excluded.reason, time = excluded.time"
                " WHERE slack_workspaces.state != 'revoked'", (team, reason, to_iso(utcnow()))).rowcount == 1

    def restore(self, team: str) -> bool:
        """The workspace works again (a valid token answered auth.test); True if it was revoked."""
        with self.store._write() as conn:
            return conn.execute("DELETE FROM slack_workspaces WHERE team = ? AND state = 'revoked'", (team,)).rowcount == 1

    def revoked(self) -> dict[str, dict[str, Any]]:
        return {r["team"]: {"reason": r["reason"], "since": r["time"]}
                for r in self.store._read("SELECT team, reason, time FROM slack_workspaces WHERE state = 'revoked'")}
