"""Durable intake: nothing csbot acknowledged to Slack is lost on a crash or a restart.

`DurableApp` is slack-bolt's `App` with one change in `dispatch`: the lazy listeners a request
starts are not run in a thread pool but collected, and written to the store's inbox
(store/inbox.py) - together with the claim of the request's Events API event id, in one
transaction - before `dispatch` returns the response that becomes the HTTP 200 (or the Socket
Mode ack). The worker pool (bot/slack/workers.py) takes items from the inbox and replays each
through this same App with `lazy_only` set: the global middleware and listener matching run
again, the ack functions do not, and only the one lazy listener named in the item runs, inline,
so its outcome (done, or an exception to retry) is known.

This is generic over listeners: any `app.event/action/view/command/shortcut(...)` with `lazy=[...]`
is durable without more code. A lazy function may be given a shedding class with
`bot.slack.handlers.work(...)`, which notes it in `WORK` by its `function_key` (default:
interactive, never shed). Ack functions must stay cheap and must not need the lazy part to have run.

Replays: every request that queued work claims one id (`claim_key`) in the same transaction as its
items - an Events API event its event id, a slash command, button click, view submission or
shortcut its trigger id, anything else a hash of its body - so the same request delivered again
(Slack's retries, a replayed signed body) is acknowledged with 200 and runs once.

Responses: a well-formed signed request no listener handles gets 200 and one log line (Slack
counts a 404 as a failure and retries); so does one csbot handles but could not carry out because
it lacks a field that work needs (`missing_field`: a mention without its channel, a click without
its user...), before any ack or work runs - Slack must not retry it, and nothing is queued that
could only fail. A request whose ack or middleware raised gets 400 and one log line, never 500;
when the inbox write fails, or an ack or middleware could not reach the store (a database outage),
the request gets 503 and Slack retries events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from typing import Callable

from slack_bolt import App, BoltResponse
from slack_bolt.kwargs_injection import build_required_kwargs
from slack_bolt.lazy_listener import LazyListenerRunner
from slack_bolt.request import BoltRequest
from slack_bolt.util.utils import get_arg_names_of_callable, get_name_for_callable

from bot.slack.contracts import SlackStore
from store.inbox import INTERACTIVE, InboxItem
from store.schema import StoreError

log = logging.getLogger("csbot.slack.intake")
BATCH, REPLAY, LATE = "csbot_intake_batch", "csbot_replay", "csbot_late"
STORE_FAILED = "csbot_store_failed"  # a middleware or ack could not reach the store: 503, Slack retries
# Exceptions that come from what a payload holds, not from the moment: running the same payload
# again raises them again (the worker does not retry them; the HTTP server answers them 400).
CONTENT_ERRORS = (UnicodeError, ValueError, TypeError, LookupError, AttributeError, RecursionError)
# What the work of each request kind csbot handles reads from its payload ("a.b": b inside a).
_EVENT_NEEDS = {"message": ("channel", "ts"), "app_mention": ("channel", "ts"),
                "reaction_added": ("user", "item.channel", "item.ts"),
                "reaction_removed": ("user", "item.channel", "item.ts"), "app_home_opened": ("user",)}
_INTERACTION_NEEDS = {"block_actions": ("user.id",), "view_submission": ("user.id",), "shortcut": ("user.id",),
                      "message_action": ("user.id",)}
_COMMAND_NEEDS = ("user_id", "channel_id")
_FROM_A_PERSON = (None, "thread_broadcast", "file_share")  # message subtypes answered as a person's question
# The shedding class of each lazy listener that has one ({function_key: ANSWER | SENTIMENT}); any
# other is INTERACTIVE. Filled by `set_work` (bot.slack.handlers.work) when the handler classes load.
WORK: dict[str, str] = {}


def function_key(function: Callable) -> str:
    """The stable name an inbox item uses for a lazy listener: its qualified name
    ("MessageHandler.on_message"), unique where bolt's own lazy-function name ("on_message") is not."""
    return getattr(function, "__qualname__", None) or get_name_for_callable(function)


def set_work(function: Callable, kind: str) -> None:
    """Put lazy listener `function` (and the bound methods of it) in shedding class `kind`."""
    WORK[function_key(function)] = kind


def work_of(function: Callable) -> str:
    """The shedding class of lazy listener `function` (`set_work`; INTERACTIVE when none was set)."""
    return WORK.get(function_key(function), INTERACTIVE)


def request_kind(body: dict) -> str:
    if body.get("type") == "event_callback":
        return f"event {(body.get('event') or {}).get('type')}"
    if body.get("command"):
        return f"command {body.get('command')}"
    return str(body.get("type") or "request")


def claim_key(body: dict, raw: str | None = None) -> str:
    """The one id a request claims when it is accepted, so that it runs once however often it is
    delivered: an event's `event_id`; an interaction's or slash command's `trigger_id` (Slack gives
    each one its own) as "trigger:<id>"; else "body:<sha256>" of the raw body (`raw`, the signed
    text over HTTP) or of the payload's canonical JSON (Socket Mode)."""
    if body.get("type") == "event_callback":
        key = body.get("event_id")
    else:
        key = body.get("trigger_id")
        key = f"trigger:{key}" if isinstance(key, str) and key else None
    if isinstance(key, str) and key:
        return key
    text = raw if raw else json.dumps(body, sort_keys=True, default=str)
    return "body:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _field(payload: dict, path: str):
    for name in path.split("."):
        payload = payload.get(name) if isinstance(payload, dict) else None
    return payload


def missing_field(body: dict) -> str | None:
    """The field a request of a kind csbot handles lacks that its work needs (as "event.channel"),
    or None. A message or mention needs its user too when csbot would answer it as a person's
    question (not a bot's, not an edit, join, deletion...: the middleware drops those, and an edit
    carries its user inside `message`)."""
    if body.get("type") == "event_callback":
        event = body.get("event") if isinstance(body.get("event"), dict) else {}
        needs = list(_EVENT_NEEDS.get(event.get("type"), ()))
        if (event.get("type") in ("message", "app_mention") and event.get("subtype") in _FROM_A_PERSON
                and not event.get("bot_id")):
            needs.append("user")
        where, payload = "event.", event
    elif body.get("command"):
        needs, where, payload = _COMMAND_NEEDS, "", body
    else:
        needs, where, payload = _INTERACTION_NEEDS.get(body.get("type"), ()), "", body
    for path in needs:
        value = _field(payload, path)
        if not (isinstance(value, str) and value.strip()):
            return where + path
    return None


class _Shared:
    """A context value shared (not deep-copied) between a request and its lazy-listener copies."""

    def __deepcopy__(self, memo):
        return self


class Batch(_Shared):
    """The lazy work one request started, written to the inbox before the response goes out."""

    def __init__(self):
        self.items: list[InboxItem] = []


class Replay(_Shared):
    """One inbox item being replayed: which lazy listener to run, and how it went."""

    def __init__(self, function: str):
        self.function = function
        self.ran = False
        self.error: BaseException | None = None


class InboxRunner(LazyListenerRunner):
    """bolt's lazy-listener runner, replaced: collects at intake, runs one function inline on replay."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def start(self, function: Callable[..., None], request: BoltRequest) -> None:
        key = function_key(function)
        replay = request.context.get(REPLAY)
        if replay is not None:
            if key == replay.function and not replay.ran:
                replay.ran = True
                try:
                    self.run(function, request)
                except Exception as exc:  # noqa: BLE001 - handed to the worker, which retries
                    replay.error = exc
            return
        batch = request.context.get(BATCH)
        if batch is None:
            raise RuntimeError("a lazy listener was started outside DurableApp.dispatch")
        body = request.raw_body if request.mode == "http" else json.dumps(request.body)
        batch.items.append(InboxItem(function=key, work=work_of(function), body=body,
                                     mode=request.mode, content_type=request.content_type,
                                     team=request.context.team_id))

    def run(self, function: Callable[..., None], request: BoltRequest) -> None:
        """Run inline and let exceptions through (bolt's own `run` logs and swallows them)."""
        function(**build_required_kwargs(logger=self.logger, required_arg_names=get_arg_names_of_callable(function),
                                         request=request, response=None, this_func=function))


class DurableApp(App):
    """slack-bolt's App whose lazy work goes through the store's inbox (see the module docstring)."""

    def __init__(self, *, store: SlackStore, inbox_limit: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.store = store
        self.inbox_limit = inbox_limit
        self.queued = threading.Condition()  # notified when this process queued work
        self.shed_total = 0
        # The one place csbot changes bolt's machinery: the lazy-listener runner of its listener runner.
        self.listener_runner.lazy_listener_runner = InboxRunner(self.logger)
        self.error(self._on_error)

    def dispatch(self, req: BoltRequest) -> BoltResponse:
        if req.context.get(REPLAY) is not None:
            return super().dispatch(req)
        batch = Batch()
        req.context[BATCH] = batch
        body = req.body if isinstance(req.body, dict) else {}
        missing = missing_field(body)
        if missing:
            log.warning("ignored a %s request without %s: csbot could not carry it out", request_kind(body), missing)
            return BoltResponse(status=200, body="")
        resp = super().dispatch(req)
        if resp.status == 404:
            log.info("ignored a %s request: csbot has no listener for it", request_kind(body))
            return BoltResponse(status=200, body="")
        if resp.status >= 500:  # our ack or middleware raised (logged by _on_error)
            if req.context.get(STORE_FAILED):  # the store, not the payload: nothing acknowledged, Slack retries
                return BoltResponse(status=503, body="try again")
            return BoltResponse(status=400, body="csbot cannot handle this request")
        if resp.status != 200 or not (batch.items or body.get("type") == "event_callback"):
            return resp
        key = claim_key(body, req.raw_body if req.mode == "http" else None)
        try:
            accepted = self.store.inbox.accept(batch.items, event_id=key, limit=self.inbox_limit)
        except (StoreError, sqlite3.Error) as exc:
            log.error("could not write a %s request to the inbox (%s): answering 503 so Slack retries",
                      request_kind(body), exc)
            return BoltResponse(status=503, body="try again")
        if accepted.duplicate:
            log.info("%s request %s already accepted: skipped (delivered again)", request_kind(body), key)
            return BoltResponse(status=200, body="")
        if accepted.shed or accepted.late:
            self.shed_total += accepted.shed
            log.warning("inbox full (limit %s): %d sentiment item(s) shed, %d question(s) get the busy note",
                        self.inbox_limit, accepted.shed, accepted.late)
        if accepted.queued:
            with self.queued:
                self.queued.notify_all()
        return resp

    def _handle_unmatched_requests(self, req: BoltRequest, resp: BoltResponse) -> BoltResponse:
        return resp  # dispatch logs one line and answers 200 (bolt would log a page of advice)

    @staticmethod
    def _on_error(error, body, request):
        if isinstance(error, (StoreError, sqlite3.Error)) and request is not None:
            request.context[STORE_FAILED] = True
        kind = request_kind(body if isinstance(body, dict) else {})
        log.warning("cannot handle a %s request: %s: %s", kind, type(error).__name__, error)
