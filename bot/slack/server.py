"""Running the Slack app: HTTP mode (a WSGI app: POST /slack/events, GET /healthz) or Socket Mode.

HTTP mode checks the request signature before anything else reads the body: a bad or stale
signature gets 401, and a body that is not a Slack payload (invalid JSON, not an object, no
type, an event callback without an event) gets 400; neither reaches the app.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_response import WsgiHttpResponse
from slack_bolt.request import BoltRequest
from slack_bolt.request.internals import parse_body

log = logging.getLogger("csbot.slack.server")
EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
MAX_BODY = 1 << 20  # Slack payloads are far smaller
MAX_AGE = 60 * 5  # seconds a signed request stays valid (as slack_sdk's SignatureVerifier)


def valid_signature(secret: str, raw: bytes, headers: dict, now: float | None = None) -> bool:
    """Slack's v0 signature (HMAC-SHA256 of b"v0:{timestamp}:{body}") over the raw bytes, with the
    timestamp no more than 5 minutes off; same rules as slack_sdk.signature.SignatureVerifier."""
    timestamp, signature = headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
    if not secret or not timestamp or not signature:
        return False
    try:
        if abs((time.time() if now is None else now) - int(timestamp)) > MAX_AGE:
            return False
    except ValueError:
        return False
    digest = hmac.new(secret.encode("utf-8"), b"v0:" + timestamp.encode("utf-8") + b":" + raw, hashlib.sha256)
    return hmac.compare_digest("v0=" + digest.hexdigest(), str(signature))


def malformed(body: str, content_type: str | None) -> str | None:
    """Why a (signed) body is not a Slack payload, or None if it looks like one."""
    try:
        payload = parse_body(body, content_type)
    except (ValueError, TypeError) as exc:
        return f"cannot parse the body: {exc}"
    if not isinstance(payload, dict) or not payload:
        return "the payload is not an object"
    if not (payload.get("type") or payload.get("command")):
        return "the payload has no type"
    if payload.get("type") == "event_callback" and not isinstance(payload.get("event"), dict):
        return "an event callback without an event"
    return None


class CsbotRequestHandler(SlackRequestHandler):
    """slack-bolt's WSGI adapter, with a health check and signature/payload checks in front."""

    def __init__(self, app: App, *, signing_secret: str, health=None, path: str = EVENTS_PATH):
        super().__init__(app, path=path)
        self.signing_secret = signing_secret
        self.health = health or (lambda: {"ok": True})

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
        if not valid_signature(self.signing_secret, raw, {k: str(v) for k, v in headers.items()}):
            return BoltResponse(status=401, body="invalid or stale signature")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return BoltResponse(status=400, body="the body is not UTF-8")
        problem = malformed(body, headers.get("content-type"))
        if problem:
            log.warning("rejected a signed request: %s", problem)
            return BoltResponse(status=400, body=problem)
        return self.app.dispatch(BoltRequest(body=body, query=request.query_string, headers=headers))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class RunningServer:
    """A WSGI server running in a background thread (tests, benchmarks) until `stop()`."""

    def __init__(self, wsgi_app, host: str = "127.0.0.1", port: int = 0):
        self.httpd = make_server(host, port, wsgi_app, server_class=_ThreadingWSGIServer,
                                 handler_class=_QuietHandler)
        self.url = f"http://{host}:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="csbot-http", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve_http(app: App, *, port: int, signing_secret: str, host: str = "0.0.0.0", health=None) -> None:
    """Serve until interrupted (Ctrl-C). Put a TLS-terminating proxy in front: Slack needs HTTPS."""
    handler = CsbotRequestHandler(app, signing_secret=signing_secret, health=health)
    httpd = make_server(host, port, handler, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    log.info("csbot listening on http://%s:%d%s (health: %s)", host, httpd.server_port, EVENTS_PATH, HEALTH_PATH)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


def serve_socket_mode(app: App, *, app_token: str) -> None:
    """Connect to Slack over a WebSocket (no public URL needed) and serve until interrupted."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    SocketModeHandler(app, app_token).start()
