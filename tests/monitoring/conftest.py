"""Monitoring test fixtures: the airline tweet stream (read from the shared data, never copied), a
stub engine that scores texts with given labels, and `monitor_bot`, the real slack-bolt App over
HTTP on 127.0.0.1 against the mock Slack API (tests/slack), with monitoring settings."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from core.answer import OUT_OF_SCOPE, Answer
from tests.conftest import shared_data
from tests.slack.conftest import Bot, StubEngine, slack_mock  # noqa: F401 (fixture)
from tests.slack.slack_mock import BOT_TOKEN, SIGNING_SECRET
from tests.slack.slack_sender import SlackSender

AIRLINE_CSV = ("twitter_airline_sentiment", "all.csv")
UTC = dt.timezone.utc


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="session")
def airline_rows():
    """All 14,640 airline tweets as StreamRows (gold sentiment, negativereason as topic), time-ordered.
    tweet_created has minute resolution and no offset; it is read as UTC."""
    from bot.monitoring.watch import read_stream

    return read_stream(shared_data(*AIRLINE_CSV), time_column="tweet_created", label_column="airline_sentiment",
                       topic_column="negativereason")


def by_airline(rows, airline: str, start=None, end=None):
    return [r for r in rows if r.extra["airline"] == airline and (start is None or r.time >= start)
            and (end is None or r.time < end)]


class LabelEngine(StubEngine):
    """Scores texts with known labels: `labels[text] = (sentiment, intent)`; "furious"/"angry" texts are
    strongly negative, anything else neutral. Intents other than the stub's KB answer nothing
    (out_of_scope, low confidence), like chatter in a watched channel."""

    def __init__(self, labels: dict[str, tuple[str, str | None]] | None = None, negative: float = 0.95):
        super().__init__()
        self.labels = dict(labels or {})
        self.negative = negative
        self.scored: list[str] = []
        self._lock = threading.Lock()

    def label(self, text: str) -> tuple[str, dict, str | None]:
        if text in self.labels:
            sentiment, intent = self.labels[text]
        elif any(w in text.lower() for w in ("furious", "angry", "worst")):
            sentiment, intent = "negative", None
        else:
            sentiment, intent = "neutral", None
        if sentiment == "negative":
            rest = (1 - self.negative) / 2
            scores = {"negative": self.negative, "neutral": rest, "positive": rest}
        else:
            scores = {k: (0.8 if k == sentiment else 0.1) for k in ("negative", "neutral", "positive")}
        return sentiment, scores, intent

    def answer(self, text, context=None):
        with self._lock:
            self.scored.append(text)
        base = super().answer(text, context)
        sentiment, scores, intent = self.label(text)
        if base.intent != OUT_OF_SCOPE:
            intent = base.intent
        return Answer(base.answer_id, text, base.text, intent or OUT_OF_SCOPE, base.confidence, sentiment, scores,
                      base.sources, base.handoff, base.model_version, base.doc_id, base.used_context)

    def sentiment(self, texts):
        return [self.label(t)[:2] for t in texts]


@pytest.fixture
def label_engine():
    return LabelEngine()


@pytest.fixture
def monitor_bot(tmp_path, slack_mock):  # noqa: F811 (the slack_mock fixture)
    """`monitor_bot(engine, store_message_text=False, slack={...}, **settings)`: a running bot with
    the given Settings fields (e.g. alert_min_messages=5) and slack_<name> fields from `slack`."""
    from bot.slack.app import build_app
    from bot.slack.server import CsbotRequestHandler
    from core.settings import Settings
    from store import Store
    from tests.slack.running_server import RunningServer

    started, stores = [], []

    def make(engine, *, store_message_text: bool = False, slack: dict | None = None, **fields) -> Bot:
        settings = Settings.load(env={}, home=tmp_path / "home", slack_api_url=slack_mock.api_url,
                                 slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                                 store_message_text=store_message_text,
                                 **{f"slack_{name}": value for name, value in (slack or {}).items()}, **fields)
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
def store(tmp_path):
    from store import Store

    s = Store(tmp_path / "db" / "csbot.sqlite3", salt="test-salt", store_message_text=True)
    yield s
    s.close()

