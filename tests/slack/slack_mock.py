"""A local stand-in for the Slack Web API on 127.0.0.1, recording every call (the other half,
sending signed events / interactions / slash commands to the app, is tests/slack/slack_sender.py).

Used by tests/slack and benchmarks/bench_slack_latency.py; nothing here talks to anything but
127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

TEAM, BOT_USER, BOT_ID, APP_ID = "T0TEST", "UBOT", "BBOT", "A0CSBOT"
SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"


@dataclass
class Call:
    method: str
    args: dict
    time: float
    status: int = 200
    headers: dict = field(default_factory=dict)


class MockSlack:
    """The Slack Web API: auth.test, chat.*, conversations.replies/history/list, views.*,
    reactions.*, files.* (files_upload_v2: getUploadURLExternal, the upload URL - its raw bytes are
    kept in `uploads[file_id]` - and completeUploadExternal) and response_url posts.
    `fail(method, status, headers, body, times)` queues error responses (e.g. 429 with
    Retry-After). `delay(method, seconds)` holds each response back after the call is recorded (a
    slow Slack; a process killed in that window has posted without learning the ts).
    `channels` is what conversations.list returns.

    Slack's AI-app methods, with the argument checks Slack documents: assistant.threads.setStatus /
    setTitle / setSuggestedPrompts (kept in `statuses`, `titles`, `prompts`), and text streaming,
    chat.startStream / appendStream / stopStream (the message is stored like a posted one and grows
    with each append; `streams[ts]` records its chunks and state). Set `streaming = False` for a
    workspace without streaming: chat.startStream then answers `unknown_method`."""

    def __init__(self):
        self.calls: list[Call] = []
        self.messages: dict[str, list[dict]] = {}
        self._failures: dict[str, list[tuple]] = {}
        self._cond = threading.Condition()
        self._ts = itertools.count(1)
        self._file_ids = itertools.count(1)
        self.uploads: dict[str, bytes] = {}  # file id -> the bytes POSTed to its upload URL
        self.channels: list[dict] = []  # conversations.list
        self.delays: dict[str, float] = {}
        self.socket_url: str | None = None  # what apps.connections.open hands out (tests/slack/socket_mock.py)
        self.streaming = True  # False: chat.startStream is refused (a workspace without streaming)
        self.streams: dict[str, dict] = {}  # stream ts -> {"channel", "state", "chunks": [text, ...]}
        self.statuses: list[dict] = []  # assistant.threads.setStatus calls that passed the checks
        self.titles: list[dict] = []
        self.prompts: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    # ----- test API ------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"http://127.0.0.1:{self.port}/response/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def next_ts(self) -> str:
        return f"{1700000000 + next(self._ts)}.000100"

    def add_message(self, channel: str, text: str, *, user: str = "U1", thread_ts: str | None = None,
                    ts: str | None = None, **extra) -> dict:
        """Store a message as Slack would (so conversations.replies sees it); returns it."""
        message = {"type": "message", "user": user, "text": text, "ts": ts or self.next_ts(), **extra}
        if thread_ts:
            message["thread_ts"] = thread_ts
        with self._cond:
            self.messages.setdefault(channel, []).append(message)
        return message

    def fail(self, method: str, *, status: int = 429, headers: dict | None = None, body: dict | None = None,
             times: int = 1) -> None:
        with self._cond:
            self._failures.setdefault(method, []).extend(
                [(status, headers or {}, body or {"ok": False, "error": "ratelimited"})] * times)

    def delay(self, method: str, seconds: float) -> None:
        self.delays[method] = seconds

    def calls_to(self, method: str, *, ok_only: bool = True) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.method == method and (c.status == 200 or not ok_only)]

    def wait_for(self, method: str, count: int = 1, timeout: float = 20.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self.calls if c.method == method and c.status == 200]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {count} x {method}; calls: "
                                         f"{[c.method for c in self.calls]}")
                self._cond.wait(remaining)

    def bot_replies(self, channel: str) -> list[dict]:
        """The bot's messages in a channel as they stand now (posted, updated or streamed)."""
        with self._cond:
            return [dict(m) for m in self.messages.get(channel, []) if m.get("user") == BOT_USER]

    # ----- the API -------------------------------------------------------------------------------
    def handle(self, method: str, args: dict, headers: dict) -> tuple[int, dict, object]:
        with self._cond:
            failures = self._failures.get(method)
            status, extra_headers, body = failures.pop(0) if failures else (200, {}, None)
            if body is None:
                body = self._respond(method, args)
            self.calls.append(Call(method, args, time.monotonic(), status, headers))
            self._cond.notify_all()
        return status, extra_headers, body

    def _respond(self, method: str, args: dict):
        if method.startswith("response:"):
            return "ok"
        channel = args.get("channel")
        if method == "auth.test":
            return {"ok": True, "url": "https://csbot-test.slack.com/", "team": "Test", "user": "csbot",
                    "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False}
        if method.startswith("assistant.threads.") or method in STREAM_METHODS:
            return self._agent(method, args)
        if method == "chat.postMessage":
            message = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": args.get("text", ""),
                       "blocks": args.get("blocks"), "ts": self.next_ts(), "metadata": args.get("metadata")}
            if args.get("thread_ts"):
                message["thread_ts"] = args["thread_ts"]
            self.messages.setdefault(channel, []).append(message)
            return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}
        if method == "chat.update":
            for message in self.messages.get(channel, []):
                if message["ts"] == args.get("ts"):
                    message.update({k: args[k] for k in ("text", "blocks", "metadata") if k in args})
                    return {"ok": True, "channel": channel, "ts": message["ts"], "text": message["text"]}
            return {"ok": False, "error": "message_not_found"}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self.next_ts()}
        if method == "chat.getPermalink":
            ts = str(args.get("message_ts", "")).replace(".", "")
            return {"ok": True, "channel": channel, "permalink": f"https://csbot-test.slack.com/archives/{channel}/p{ts}"}
        if method in ("conversations.replies", "conversations.history"):
            return {"ok": True, "has_more": False, "messages": self._history(method, args)}
        if method in ("views.open", "views.publish", "views.update", "views.push"):
            view = args.get("view")
            view = json.loads(view) if isinstance(view, str) else dict(view or {})
            return {"ok": True, "view": {"id": "V" + uuid.uuid4().hex[:10].upper(), **view}}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._file_ids):04d}"
            return {"ok": True, "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}", "file_id": file_id}
        if method == "upload":
            self.uploads[args["file_id"]] = args["data"]
            return f"OK - {len(args['data'])}"
        if method == "files.completeUploadExternal":
            files = args.get("files") or "[]"
            files = json.loads(files) if isinstance(files, str) else files
            return {"ok": True, "files": [{"id": f.get("id"), "title": f.get("title")} for f in files]}
        if method == "files.upload":
            return {"ok": True, "files": [{"id": "F0001"}]}
        if method == "apps.connections.open":
            return {"ok": True, "url": self.socket_url} if self.socket_url else {"ok": False, "error": "no_socket"}
        if method == "conversations.list":
            return {"ok": True, "channels": list(self.channels), "response_metadata": {"next_cursor": ""}}
        return {"ok": True}  # reactions.add/remove/get and anything else

    def _agent(self, method: str, args: dict) -> dict:
        """assistant.threads.* and chat.*Stream, checked as Slack documents them."""
        problem = _check_agent_args(method, args)
        if problem:
            return {"ok": False, "error": problem}
        channel = args.get("channel") or args.get("channel_id")
        if method == "assistant.threads.setStatus":
            self.statuses.append(dict(args))
            return {"ok": True}
        if method == "assistant.threads.setTitle":
            self.titles.append(dict(args))
            return {"ok": True}
        if method == "assistant.threads.setSuggestedPrompts":
            self.prompts.append(dict(args))
            return {"ok": True}
        if method == "chat.startStream":
            if not self.streaming:
                return {"ok": False, "error": "unknown_method"}
            message = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": "", "ts": self.next_ts(),
                       "thread_ts": args["thread_ts"], "streaming": True}
            self.messages.setdefault(channel, []).append(message)
            self.streams[message["ts"]] = {"channel": channel, "state": "in_progress", "chunks": [],
                                           "recipient": (args.get("recipient_team_id"), args.get("recipient_user_id"))}
            self._stream_text(message, args)
            return {"ok": True, "channel": channel, "ts": message["ts"]}
        stream = self.streams.get(args["ts"])
        message = next((m for m in self.messages.get(channel, []) if m["ts"] == args["ts"]), None)
        if stream is None or message is None or stream["channel"] != channel:
            return {"ok": False, "error": "message_not_found"}
        if stream["state"] != "in_progress":
            return {"ok": False, "error": "message_not_in_streaming_state"}
        self._stream_text(message, args)
        if method == "chat.stopStream":
            stream["state"] = "completed"
            message.pop("streaming", None)
            for key in ("blocks", "metadata"):
                if args.get(key) is not None:
                    value = args[key]
                    message[key] = json.loads(value) if isinstance(value, str) else value
        return {"ok": True, "channel": channel, "ts": message["ts"]}

    def _stream_text(self, message: dict, args: dict) -> None:
        pieces = [args["markdown_text"]] if args.get("markdown_text") else []
        pieces += [c.get("text") or "" for c in _chunks(args) if c.get("type") == "markdown_text"]
        if pieces:
            self.streams[message["ts"]]["chunks"].extend(pieces)
            message["text"] = message.get("text", "") + "".join(pieces)

    def _history(self, method: str, args: dict) -> list[dict]:
        ts = args.get("ts")
        inclusive = str(args.get("inclusive", "")).lower() in ("1", "true")
        lo, hi = args.get("oldest"), args.get("latest")
        found = []
        for message in sorted(self.messages.get(args.get("channel"), []), key=lambda m: float(m["ts"])):
            if method == "conversations.replies" and ts not in (message["ts"], message.get("thread_ts")):
                continue
            if method == "conversations.history" and message.get("thread_ts") not in (None, message["ts"]):
                continue
            t = float(message["ts"])
            if lo is not None and (t < float(lo) or (t == float(lo) and not inclusive)):
                continue
            if hi is not None and (t > float(hi) or (t == float(hi) and not inclusive)):
                continue
            shown = dict(message)
            if str(args.get("include_all_metadata", "")).lower() not in ("1", "true"):
                shown.pop("metadata", None)
            found.append(shown)
        return found


STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")
MARKDOWN_LIMIT = 12_000  # markdown_text per call (and a markdown block's text)
MAX_PROMPTS = 4  # assistant.threads.setSuggestedPrompts
MAX_LOADING_MESSAGES = 10  # assistant.threads.setStatus


def _chunks(args: dict) -> list[dict]:
    chunks = args.get("chunks") or []
    chunks = json.loads(chunks) if isinstance(chunks, str) else chunks
    return [c for c in chunks if isinstance(c, dict)]


def _check_agent_args(method: str, args: dict) -> str | None:
    """The error Slack answers for these arguments, or None when they are acceptable."""
    def blank(name):
        return not isinstance(args.get(name), str) or not args[name].strip()

    if method.startswith("assistant.threads."):
        if blank("channel_id"):
            return "channel_not_found"
        if method == "assistant.threads.setSuggestedPrompts":
            prompts = args.get("prompts")
            prompts = json.loads(prompts) if isinstance(prompts, str) else prompts
            if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_PROMPTS:
                return "invalid_arguments"
            if any(not isinstance(p, dict) or not p.get("title") or not p.get("message") for p in prompts):
                return "invalid_arguments"
            return None
        if blank("thread_ts"):
            return "invalid_arguments"
        if method == "assistant.threads.setTitle" and blank("title"):
            return "invalid_arguments"
        if method == "assistant.threads.setStatus":
            if not isinstance(args.get("status"), str):  # "" clears the status
                return "invalid_arguments"
            loading = args.get("loading_messages")
            if loading is not None and (not isinstance(loading, list) or len(loading) > MAX_LOADING_MESSAGES):
                return "invalid_arguments"
        return None
    if blank("channel"):
        return "channel_not_found"
    if method == "chat.startStream":
        if blank("thread_ts"):
            return "invalid_arguments"  # a stream always answers a user's message in its thread
        if not args["channel"].startswith("D"):  # outside DMs Slack needs to know who receives it
            if blank("recipient_team_id"):
                return "missing_recipient_team_id"
            if blank("recipient_user_id"):
                return "missing_recipient_user_id"
    elif blank("ts"):
        return "invalid_arguments"
    texts = ([args["markdown_text"]] if args.get("markdown_text") is not None else []) + [
        c.get("text") or "" for c in _chunks(args) if c.get("type") == "markdown_text"]
    if any(len(t) > MARKDOWN_LIMIT for t in texts):
        return "msg_too_long"
    if method == "chat.appendStream" and not "".join(texts):
        return "no_text"
    return None


def _handler_for(mock: MockSlack):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self._serve(b"")

        def do_POST(self):
            self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def _serve(self, raw: bytes):
            url = urlsplit(self.path)
            args = dict(parse_qsl(url.query))
            if url.path.startswith("/upload/"):  # a file's bytes (files_upload_v2 step 2): not text
                args.update(file_id=url.path[len("/upload/"):], data=raw)
                raw = b""
            text = raw.decode("utf-8") if raw else ""
            if "json" in (self.headers.get("Content-Type") or "") and text:
                args.update(json.loads(text))
            elif text:
                args.update(dict(parse_qsl(text)))
            if url.path.startswith("/upload/"):
                method = "upload"
            elif url.path.startswith("/api/"):
                method = url.path[len("/api/"):]
            elif url.path.startswith("/response/"):
                method = "response:" + url.path[len("/response/"):]
            else:
                method = url.path
            status, headers, body = mock.handle(method, args, dict(self.headers))
            if mock.delays.get(method):
                time.sleep(mock.delays[method])
            data = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            for key, value in headers.items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
