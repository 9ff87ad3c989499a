"""The worker pool: takes acknowledged work from the store's inbox and runs it (docs/slack.md).

Each serving process runs `slack_workers` threads. A worker takes the most urgent pending item
(interactive work - votes, modals, commands, shortcuts - first, then questions, then
watched-channel sentiment; oldest first within a class), replays it through the DurableApp
(bot/slack/intake.py) and deletes it once the lazy listener returned, i.e. once its effect is
durable (a vote stored; an answer posted and its ts in the reply ledger). An exception retries
the item with back-off, up to MAX_ATTEMPTS, then marks it failed - except one that comes from the
payload's content (bot/slack/intake.py CONTENT_ERRORS: a text a tokenizer cannot read, a missing
key...): running it again would raise it again and only make a question late (the busy note, for a
message that was never a matter of load), so the item fails at once, with one log line saying so.

Shedding, decided when a worker takes an item (the wait is the time since the ack):
* interactive items are never shed;
* a question that waited longer than `slack_busy_after_seconds` (or was queued while the inbox was
  full) is replayed "late": a mention or DM gets the ephemeral busy note instead of a model
  answer, support-channel chatter stays unanswered;
* watched-channel sentiment that waited longer than `slack_sentiment_max_wait_seconds` is dropped.
Items received before this process started (a restart) are judged against
`slack_inbox_max_age_seconds` instead: a pending question younger than that is still answered.

A housekeeping thread keeps this process's heartbeat, gives the running items of dead processes
back (reclaim), and reloads a newly promoted model so /healthz is current without traffic.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

from slack_bolt.request import BoltRequest

from bot.slack.contracts import AnswerEngine, SlackStore
from bot.slack.intake import CONTENT_ERRORS, LATE, REPLAY, DurableApp, Replay
from core.settings import SlackSettings
from store.inbox import ANSWER, INTERACTIVE, SENTIMENT

log = logging.getLogger("csbot.slack.workers")
MAX_ATTEMPTS = 5
HOUSEKEEPING_SECONDS = 2.0
STALE_AFTER_SECONDS = 15.0  # a process whose heartbeat is older is dead: its running items are reclaimed
POLL_SECONDS = 0.25  # how often an idle worker looks for work queued by another process


class WorkerPool:
    def __init__(self, app: DurableApp, store: SlackStore, config: SlackSettings | None = None, *,
                 engine: AnswerEngine | None = None):
        self.app, self.store, self.engine = app, store, engine
        self.config = config or SlackSettings()  # the intake knobs: workers, inbox_limit, ...
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started_at: float | None = None
        self.stats: Counter = Counter()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._orphans: set[int] = set()  # items whose outcome could not be recorded: handed back by housekeeping
        # Jobs the housekeeping thread runs every round (the weekly digest); each must return quickly
        # when it has nothing to do.
        self.periodic: list[Callable[[], object]] = []

    # ----- life cycle --------------------------------------------------------------------------
    def start(self) -> "WorkerPool":
        with self._lock:
            if self.started_at is not None:
                return self
            self.started_at = time.time()
        inbox = self.store.inbox
        inbox.register(self.owner)
        resumed = inbox.reclaim(stale_after=STALE_AFTER_SECONDS)
        inbox.scrub()  # payloads a killed process had finished may still sit in the WAL
        depth = inbox.depth()
        if resumed or depth["pending"]:
            log.info("resuming the inbox: %d pending item(s) (%d taken back from a stopped process)",
                     depth["pending"], resumed)
        for i in range(max(1, self.config.workers)):
            self._spawn(self._work_loop, f"csbot-worker-{i}")
        self._spawn(self._housekeeping, "csbot-housekeeping")
        return self

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self._stop.is_set()

    def stop(self, grace: float | None = None) -> dict:
        """Stop taking items; wait up to `grace` seconds for the running ones; leave the rest pending."""
        grace = self.config.stop_grace_seconds if grace is None else grace
        if self.started_at is None or self._stop.is_set():
            return {"finished_in_time": True, "released": 0}
        self._stop.set()
        with self.app.queued:
            self.app.queued.notify_all()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = [t.name for t in self._threads if t.is_alive()]
        released = 0
        try:
            released = self.store.inbox.release(self.owner) if late else 0
            self.store.inbox.unregister(self.owner)
            self.store.inbox.scrub()
        except Exception as exc:  # noqa: BLE001 - a dead owner's items are reclaimed by the next start anyway
            log.warning("could not hand back the running items: %s", exc)
        if late:
            log.warning("stop grace (%.0f s) ran out: %d item(s) still running were left in the inbox", grace, released)
        return {"finished_in_time": not late, "released": released}

    # ----- work --------------------------------------------------------------------------------
    def _work_loop(self) -> None:
        inbox = self.store.inbox
        while not self._stop.is_set():
            try:
                item = inbox.take(self.owner)
            except Exception as exc:  # noqa: BLE001 - e.g. the database is busy: try again shortly
                log.warning("could not take an inbox item: %s", exc)
                self._stop.wait(1.0)
                continue
            if item is None:
                with self.app.queued:
                    self.app.queued.wait(POLL_SECONDS)
                continue
            with self._lock:
                self._in_flight += 1
            try:
                self._run(item)
            except Exception as exc:  # noqa: BLE001 - the store failed while recording the outcome
                # The database went away mid-item: the item stays "running" under this live process,
                # whose heartbeat keeps others off it. Hand it back once the store answers again
                # (housekeeping); the reply ledger keeps a second run from posting twice.
                log.warning("inbox item %s: could not record its outcome (%s); it goes back to the queue "
                            "once the store answers", item["id"], exc)
                with self._lock:
                    self._orphans.add(item["id"])
                self._stop.wait(1.0)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def is_late(self, item: dict, now: float) -> bool:
        if item["work"] == INTERACTIVE:
            return False
        if item["late"]:
            return True
        waited = now - item["received"]
        if item["received"] < (self.started_at or now):
            return waited > self.config.inbox_max_age_seconds
        limit = self.config.sentiment_max_wait_seconds if item["work"] == SENTIMENT else self.config.busy_after_seconds
        return waited > limit

    def _run(self, item: dict) -> None:
        inbox = self.store.inbox
        late = self.is_late(item, time.time())
        if late and item["work"] == SENTIMENT:
            self.stats["shed"] += 1
            inbox.finish(item["id"])
            return
        replay = Replay(item["function"])
        error: BaseException | None = None
        status = None
        try:
            body = item["body"] if item["mode"] == "http" else json.loads(item["body"])
            request = BoltRequest(body=body, headers={"content-type": item["content_type"] or ""}, mode=item["mode"],
                                  context={REPLAY: replay, LATE: late})
            request.lazy_only = True
            status = self.app.dispatch(request).status
        except Exception as exc:  # noqa: BLE001 - the item is retried
            error = exc
        error = error or replay.error
        if error is None and status is not None and status >= 500:
            error = RuntimeError(f"the app answered {status} on replay")
        if error is None:
            inbox.finish(item["id"])
            self.stats["late" if late and item["work"] == ANSWER else ("done" if replay.ran else "skipped")] += 1
            return
        text = f"{type(error).__name__}: {error}"
        if isinstance(error, CONTENT_ERRORS):
            self.stats["failed"] += 1
            inbox.fail(item["id"], text)
            log.error("inbox item %s (%s) cannot be carried out, its content raised (not retried): %s", item["id"],
                      item["function"], text)
        elif item["attempts"] >= MAX_ATTEMPTS:
            self.stats["failed"] += 1
            inbox.fail(item["id"], text)
            log.error("inbox item %s (%s) failed %d times, giving up: %s", item["id"], item["function"],
                      item["attempts"], text)
        else:
            self.stats["retried"] += 1
            inbox.retry(item["id"], text, delay=min(60.0, 2.0 ** item["attempts"]))
            log.warning("inbox item %s (%s) failed (attempt %d), will retry: %s", item["id"], item["function"],
                        item["attempts"], text)

    def _housekeeping(self) -> None:
        inbox = self.store.inbox
        while not self._stop.wait(HOUSEKEEPING_SECONDS):
            try:
                inbox.heartbeat(self.owner)
                with self._lock:
                    orphans = sorted(self._orphans)
                for item_id in orphans:
                    inbox.release(self.owner, item_id)
                    with self._lock:
                        self._orphans.discard(item_id)
                if orphans:
                    with self.app.queued:
                        self.app.queued.notify_all()
                taken = inbox.reclaim(stale_after=STALE_AFTER_SECONDS)
                if taken:
                    # Another process (on any host sharing the database) stopped beating: its claimed
                    # items go back to the queue and this pool's workers take them over.
                    log.info("took over %d running item(s) of a stopped process", taken)
                    with self.app.queued:
                        self.app.queued.notify_all()
                inbox.scrub(if_needed=True)  # a busy inbox is never idle: finished payloads leave the WAL here
            except Exception as exc:  # noqa: BLE001 - try again at the next round
                log.warning("inbox housekeeping failed: %s", exc)
            if self.engine is not None:
                try:
                    self.engine.maybe_reload()
                except Exception as exc:  # noqa: BLE001 - keep serving the loaded model
                    log.warning("checking for a newly promoted model failed: %s", exc)
            for job in self.periodic:
                try:
                    job()
                except Exception as exc:  # noqa: BLE001 - try again at the next round
                    log.warning("periodic job %r failed: %s", job, exc)

    # ----- status ------------------------------------------------------------------------------
    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until the inbox has nothing pending or running (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while True:
            depth = self.store.inbox.depth()
            with self._lock:
                busy = self._in_flight
            if not depth["pending"] and not depth["running"] and not busy:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the inbox is still busy: {depth}")
            time.sleep(0.02)

    def status(self) -> dict:
        depth = self.store.inbox.depth()
        return {"inbox": {"pending": depth["pending"], "running": depth["running"], "failed": depth["failed"]},
                "workers": self.config.workers if self.running else 0,
                "shed": self.stats["shed"] + self.app.shed_total, "late": self.stats["late"],
                "revoked_workspaces": self.store.inbox.revoked()}
