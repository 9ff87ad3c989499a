"""Running the Slack app: HTTP mode (waitress serving slack-bolt's WSGI adapter: POST /slack/events,
GET /healthz) or Socket Mode, each with a graceful stop on SIGTERM / SIGINT.

HTTP mode checks the request signature (slack_sdk's `SignatureVerifier`) before anything else
reads the body: a bad or stale signature gets 401 (a body that is not even UTF-8, 400; over 1 MiB,
413), and a signed body that is not a Slack payload of a shape csbot reads (invalid JSON, JSON
nested deeper than MAX_DEPTH levels, not an object, no type, an event callback without an event
object, a wrong-typed id...) gets 400 with one log line; neither reaches the app. The nesting is
measured by a linear scan before any JSON parser recurses into it. Nothing a request contains
gets a 500: an exception the app raises on a payload is answered 400 with one log line too.

Why waitress (docs/slack.md): a pure-Python production WSGI server that reads each request
completely on its event loop before a worker thread sees it, so slow or half-sent requests hold
no thread and are closed after `channel_timeout`; a real listen backlog; a request body limit
(413); a fixed pool of threads; and a clean in-process stop, which the graceful stop needs.

The stop: stop accepting (the listening socket is closed, so a load balancer moves on), let the
requests already read get their response, then give the worker pool `slack_stop_grace_seconds`
to finish the items it is running; everything else stays in the inbox for the next start.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from itertools import accumulate
from urllib.parse import parse_qsl

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_response import WsgiHttpResponse
from slack_bolt.request import BoltRequest
from slack_bolt.request.internals import parse_body
from slack_sdk.signature import SignatureVerifier

from bot.slack.intake import CONTENT_ERRORS
from core.settings import SlackSettings

log = logging.getLogger("csbot.slack.server")
EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
MAX_BODY = 1 << 20  # Slack payloads are far smaller
BACKLOG = 1024  # pending connections the kernel queues (wsgiref's default of 5 reset bursts)
CHANNEL_TIMEOUT = 10  # seconds an idle or half-sent connection is kept
HTTP_THREADS = SlackSettings.http_threads  # the slack_http_threads setting's default
DRAIN_SECONDS = 5.0  # at a stop, how long requests already read may take to get their response

_STRING_IDS = ("event_id", "team_id", "api_app_id", "trigger_id", "callback_id", "command", "text", "user_id",
               "channel_id", "response_url")
_OBJECTS = ("event", "user", "team", "channel", "container", "message", "view")
HANDLED_EVENTS = ("message", "app_mention", "reaction_added", "reaction_removed", "app_home_opened")
# Slack's deepest payloads (rich-text blocks inside a message inside an interaction) nest about a dozen
# levels; Python's JSON parser, bolt's deep copies and the handlers recurse once per level.
MAX_DEPTH = 64
# A JSON string, escapes included; an unterminated one runs to the end of the text, so that every
# character is read once whatever the body holds.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count),
    in one linear pass and without parsing it."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def json_texts(body: str, content_type: str | None) -> list[str]:
    """The JSON texts bolt parses in a body (`parse_body`, whose rule this follows): the body itself, or
    a form's `payload=` field."""
    if content_type == "application/json" or body.startswith("{"):
        return [body]
    if "payload" in body:
        return [value for key, value in parse_qsl(body, keep_blank_values=True) if key == "payload"]
    return []


def malformed(body: str, content_type: str | None) -> str | None:
    """Why a (signed) body is not a Slack payload csbot can read, or None if it looks like one."""
    for text in json_texts(body, content_type):
        if json_depth(text) > MAX_DEPTH:
            return f"the JSON nests deeper than {MAX_DEPTH} levels"
    try:
        payload = parse_body(body, content_type)
    except (ValueError, TypeError, RecursionError) as exc:
        return f"cannot parse the body: {exc}"
    if not isinstance(payload, dict) or not payload:
        return "the payload is not an object"
    kind = payload.get("type")
    if not (kind or payload.get("command")):
        return "the payload has no type"
    if not isinstance(kind or payload.get("command"), str):
        return "the payload's type is not a string"
    for key in _STRING_IDS:
        if payload.get(key) is not None and not isinstance(payload[key], str):
            return f"{key} is not a string"
    for key in _OBJECTS:
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            return f"{key} is not an object"
    if kind == "event_callback":
        event = payload.get("event")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return "an event callback without an event object and its type"
        if event["type"] not in HANDLED_EVENTS:  # other event types carry other shapes
            return None
        for key in ("message", "previous_message", "item"):
            if key in event and event[key] is not None and not isinstance(event[key], dict):
                return f"event.{key} is not an object"
        for key in ("channel", "user", "ts", "thread_ts", "text", "subtype", "reaction"):
            if event.get(key) is not None and not isinstance(event[key], str):
                return f"event.{key} is not a string"
    if kind == "block_actions":
        actions = payload.get("actions")
        if not isinstance(actions, list) or not actions or not all(isinstance(a, dict) for a in actions):
            return "block_actions without actions"
    if kind in ("view_submission", "view_closed"):
        view = payload.get("view")
        if not isinstance(view, dict) or not isinstance(view.get("type"), str):
            return f"{kind} without a view and its type"
    return None


class CsbotRequestHandler(SlackRequestHandler):
    """slack-bolt's WSGI adapter, with a health check and signature/payload checks in front.

    `health`: a callable giving /healthz's JSON (default: `health_status(app)`)."""

    def __init__(self, app: App, *, signing_secret: str, health=None, path: str = EVENTS_PATH):
        super().__init__(app, path=path)
        self.verifier = SignatureVerifier(signing_secret or "")
        self.signing_secret = signing_secret
        self.health = health or (lambda: health_status(app))

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") == HEALTH_PATH:
            response = WsgiHttpResponse(status=200, headers={"content-type": ["application/json"]},
                                        body=json.dumps(self.health()))
            start_response(response.status, response.get_headers())
            return response.get_body()
        return super().__call__(environ, start_response)

    def dispatch(self, request) -> BoltResponse:
        environ = request.environ
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return BoltResponse(status=400, body="bad content length")
        if length > MAX_BODY:
            return BoltResponse(status=413, body="payload too large")
        raw = environ["wsgi.input"].read(length) if length else b""
        headers = request.get_headers()
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:  # Slack sends UTF-8 only (and SignatureVerifier reads text)
            return BoltResponse(status=400, body="the body is not UTF-8")
        if not self.signing_secret or not self.verifier.is_valid_request(body, {k: str(v) for k, v in headers.items()}):
            return BoltResponse(status=401, body="invalid or stale signature")
        problem = malformed(body, headers.get("content-type"))
        if problem is None:
            try:
                bolt_request = BoltRequest(body=body, query=request.query_string, headers=headers)
            except Exception as exc:  # noqa: BLE001 - bolt could not read it: the payload's shape
                problem = f"{type(exc).__name__}: {exc}"
        if problem:
            log.warning("rejected a signed request: %s", problem)
            return BoltResponse(status=400, body=problem)
        try:
            return self.app.dispatch(bolt_request)
        except CONTENT_ERRORS as exc:  # the payload's content, past the checks above: never a 500
            log.warning("rejected a signed request: %s: %s", type(exc).__name__, exc)
            return BoltResponse(status=400, body="csbot cannot handle this request")


def health_status(app) -> dict:
    """/healthz: the served model version (kept current by the worker pool's housekeeping, without
    waiting for traffic), the model store (where versions come from, how the last check went), the
    database (reached, which one, its schema), the inbox depth, shedding counts and revoked workspaces."""
    status = {"ok": True, "model_version": app.deps.engine.model_version,
              "model_store": app.deps.engine.store_status()}
    try:
        status["database"] = app.workers.store.database_status()
        status.update(app.workers.status())
    except Exception as exc:  # noqa: BLE001 - the health check itself must answer
        status.update(ok=False, error=f"store unavailable: {exc}")
        status.setdefault("database", {"ok": False, "error": str(exc)})
    return status


class HttpServer:
    """waitress serving one WSGI app, with a stop that drains what it already read."""

    def __init__(self, wsgi_app, host: str = "127.0.0.1", port: int = 0, *, threads: int = HTTP_THREADS,
                 backlog: int = BACKLOG, channel_timeout: int = CHANNEL_TIMEOUT, max_body: int = MAX_BODY):
        from waitress.server import create_server

        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # a line per queued request in bursts
        self.server = create_server(wsgi_app, host=host, port=port, threads=threads, backlog=backlog,
                                    channel_timeout=channel_timeout, cleanup_interval=max(1, channel_timeout // 2),
                                    max_request_body_size=max_body, max_request_header_size=64 * 1024,
                                    connection_limit=max(100, backlog), ident="csbot", expose_tracebacks=False,
                                    asyncore_use_poll=True)
        self.port = int(self.server.effective_port)
        self.url = f"http://{host}:{self.port}"
        self._loop_done = threading.Event()

    def run(self) -> None:
        try:
            self.server.run()
        finally:
            self._loop_done.set()

    def _in_loop(self, thunk) -> None:
        self.server.trigger.pull_trigger(thunk)

    def stop(self, drain: float = DRAIN_SECONDS) -> None:
        """Stop accepting, let requests already read get their response (up to `drain` s), close."""
        from waitress import wasyncore

        closed = threading.Event()

        def close_listener():
            wasyncore.dispatcher.close(self.server)  # the listening socket; the trigger stays
            closed.set()

        self._in_loop(close_listener)
        closed.wait(2.0)
        deadline = time.monotonic() + drain
        tasks = self.server.task_dispatcher
        while time.monotonic() < deadline:
            busy = tasks.active_count or tasks.queue or any(
                getattr(ch, "requests", None) or getattr(ch, "total_outbufs_len", 0)
                for ch in list(self.server._map.values()))
            if not busy:
                break
            time.sleep(0.02)

        def close_all():
            for channel in list(self.server._map.values()):
                channel.close()

        self._in_loop(close_all)
        self._loop_done.wait(2.0)
        tasks.shutdown(cancel_pending=True, timeout=1)


class StopSignal:
    """SIGTERM / SIGINT set an event the main thread waits on (the handlers run in the main thread)."""

    def __init__(self):
        self.event = threading.Event()
        self.signal_name: str | None = None

    def install(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    def wait(self) -> None:
        while not self.event.wait(0.5):
            pass


def serve_http(app: App, *, port: int, signing_secret: str, host: str = "0.0.0.0", health=None,
               threads: int = HTTP_THREADS, grace: float | None = None, on_ready=None) -> None:
    """Serve until SIGTERM / SIGINT, then stop gracefully. Put a TLS-terminating proxy in front:
    Slack needs HTTPS."""
    stop = StopSignal().install()
    workers = app.workers.start()
    handler = CsbotRequestHandler(app, signing_secret=signing_secret, health=health)
    http = HttpServer(handler, host, port, threads=threads)
    thread = threading.Thread(target=http.run, name="csbot-http", daemon=True)
    thread.start()
    log.info("csbot listening on http://%s:%d%s (health: %s)", host, http.port, EVENTS_PATH, HEALTH_PATH)
    if on_ready is not None:
        on_ready(http.port)
    stop.wait()
    log.info("%s: no new requests; finishing the work in progress (grace %.0f s)", stop.signal_name,
             workers.config.stop_grace_seconds if grace is None else grace)
    http.stop()
    thread.join(timeout=5)
    _report_stop(workers, workers.stop(grace))


def serve_socket_mode(app: App, *, app_token: str, grace: float | None = None) -> None:
    """Connect to Slack over a WebSocket (no public URL needed); SIGTERM / SIGINT stop it the same way:
    disconnect (Slack delivers to the app's other connections, or retries), finish, leave the rest."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    stop = StopSignal().install()
    workers = app.workers.start()
    handler = SocketModeHandler(app, app_token)
    handler.connect()
    log.info("csbot connected over Socket Mode")
    stop.wait()
    log.info("%s: disconnecting; finishing the work in progress", stop.signal_name)
    handler.close()
    _report_stop(workers, workers.stop(grace))


def _report_stop(workers, report: dict) -> None:
    depth = workers.store.inbox.depth()
    log.info("stopped%s; %d item(s) left in the inbox for the next start",
             "" if report["finished_in_time"] else f" ({report['released']} unfinished)", depth["pending"])
