"""Slack test fixtures: the mock Slack Web API (tests/slack/slack_mock.py), and `make_bot`, which
serves the real slack-bolt App over HTTP on 127.0.0.1 pointed at the mock, with a real store.

`make_bot(engine, **slack_settings)` sets `slack_<name>` settings (e.g. support_channels="C9").
Every Slack test runs on the real engine: `recorded_engine` is the session's `engine`
(tests/conftest.py: built once per session from the demo KB, real MiniLM, real FAISS) behind a
recorder of the calls the app made to it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import pytest

from core.answer import OUT_OF_SCOPE, Answer, Source
from tests.slack.serve_process import ServeProcess
from tests.slack.slack_mock import BOT_TOKEN, SIGNING_SECRET, MockSlack
from tests.slack.slack_sender import SlackSender

# Nothing may leave the machine: no proxy may capture loopback traffic.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


class StubEngine:
    """A tiny deterministic engine: questions about passwords are answered, others handed off.

    Not used by the Slack tests (they run on the real engine, `recorded_engine`); kept as the base of
    tests/monitoring's label-scripted LabelEngine."""

    model_version = "stub-v1"

    def __init__(self):
        from retrieval.kb import Document
        from serving.engine import Catalogue

        docs = {
            "reset-password": Document("reset-password", "Resetting a forgotten password", "Click Forgot password?",
                                       intent="reset_password", url="https://help.example/reset"),
            "track-order": Document("track-order", "Tracking an order", "Open Orders.", intent="track_order",
                                    url="https://help.example/track"),
        }
        self._catalogue = Catalogue(self.model_version, docs, ["reset_password", "track_order"])
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()
        self.counter = 0

    def answer(self, text, context=None):
        with self.lock:
            self.calls.append((text, list(context or [])))
            self.counter += 1
            answer_id = f"stub{self.counter:012d}"
        sentiment = {"negative": 0.1, "neutral": 0.8, "positive": 0.1}
        if "password" in text.lower():
            return Answer(answer_id, text, "Click Forgot password? on the sign-in page.", "reset_password", 0.91,
                          "neutral", sentiment, [Source("reset-password", "Resetting a forgotten password",
                                                        "https://help.example/reset", 0.8)],
                          False, self.model_version, "reset-password", bool(context))
        return Answer(answer_id, text, "A colleague will follow up here.", OUT_OF_SCOPE, 0.12, "neutral", sentiment,
                      [], True, self.model_version, None, False)

    def answer_batch(self, texts, contexts=None):
        return [self.answer(t, c) for t, c in zip(texts, contexts or [None] * len(texts))]

    def mode_for(self, requested=None):
        return "select"  # the stub never composes (tests/slack/test_slack_compose.py runs the real composer)

    def sentiment(self, texts):
        return [("negative", {"negative": 0.7, "neutral": 0.2, "positive": 0.1}) for _ in texts]

    def catalogue(self):
        return self._catalogue

    def reload(self, force=False):
        return False

    def maybe_reload(self):
        return False


@dataclass
class Bot:
    app: object
    server: object
    sender: SlackSender
    mock: MockSlack
    store: object
    settings: object

    def idle(self) -> None:
        """Until the inbox is drained: every acknowledged request's work is done."""
        self.app.workers.wait_idle()

    def mention(self, text: str, *, channel: str = "C1", user: str = "U1", thread_ts: str | None = None,
                event_id: str | None = None, retry_num: int | None = None):
        """A user message mentioning the bot: stored in the mock, then delivered as app_mention."""
        message = self.mock.add_message(channel, f"<@UBOT> {text}", user=user, thread_ts=thread_ts)
        event = {"type": "app_mention", "user": user, "text": message["text"], "ts": message["ts"],
                 "channel": channel, "event_ts": message["ts"]}
        if thread_ts:
            event["thread_ts"] = thread_ts
        status, _ = self.sender.event(event, event_id=event_id, retry_num=retry_num)
        assert status == 200
        return event

    def message(self, text: str, *, channel: str = "C1", user: str = "U1", channel_type: str = "channel",
                thread_ts: str | None = None, **extra):
        message = self.mock.add_message(channel, text, user=user, thread_ts=thread_ts, **extra)
        event = {"type": "message", "channel_type": channel_type, "channel": channel, "event_ts": message["ts"],
                 **message}
        status, _ = self.sender.event(event)
        assert status == 200
        return event


@pytest.fixture
def slack_mock():
    mock = MockSlack()
    yield mock
    mock.stop()


class RecordingEngine:
    """The real engine (demo KB, real MiniLM, real FAISS), recording what the app asked it."""

    def __init__(self, engine):
        self._engine = engine
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def answer(self, text, context=None):
        with self.lock:
            self.calls.append((text, list(context or [])))
        return self._engine.answer(text, context)

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.fixture
def recorded_engine(engine):
    """The session's real engine (demo KB) behind a fresh call recorder (`.calls`)."""
    return RecordingEngine(engine)


@pytest.fixture
def make_bot(tmp_path, slack_mock):
    from bot.slack.app import build_app
    from bot.slack.server import CsbotRequestHandler
    from core.settings import Settings
    from store import Store
    from tests.slack.running_server import RunningServer

    started, stores = [], []

    def make(engine, *, store=None, answer_mode="select", **slack_settings) -> Bot:
        settings = Settings.load(env={}, home=tmp_path / "home", slack_api_url=slack_mock.api_url,
                                 slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                                 answer_mode=answer_mode,
                                 **{f"slack_{name}": value for name, value in slack_settings.items()})
        if store is None:
            store = Store.from_settings(settings)
            stores.append(store)
        app = build_app(settings, engine, store)
        server = RunningServer(CsbotRequestHandler(app, signing_secret=SIGNING_SECRET))
        bot = Bot(app, server, SlackSender(server.url), slack_mock, store, settings)
        started.append(bot)
        return bot

    yield make
    for bot in started:
        bot.server.stop()
    for store in stores:
        store.close()


@pytest.fixture
def serve(home, slack_mock, tmp_path):
    """Start `csbot serve --http` subprocesses on `home` against the mock Slack; all closed at the end."""
    started = []

    def start(**settings) -> ServeProcess:
        process = ServeProcess(home, slack_mock.api_url, tmp_path / f"serve-{len(started)}.log", **settings)
        started.append(process)
        process.wait_healthy()
        return process

    yield start
    for process in started:
        process.close()
