"""Composed answers in Slack at the compose deadlines (serving/compose.py; docs/compose.md): a
language-model server that is slow to start, or stalls mid-answer, does not hold the reply back
past its budget. The real slack-bolt App over signed HTTP, the real engine (demo KB), the real
OpenAI backend against a scripted slow server on loopback (tests/compose/scripted_endpoint.py),
the mock Slack Web API. The times asserted are deadlines with margin for a loaded 2-core machine:
without the deadline the reply would wait for the server's full 5 seconds."""

from __future__ import annotations

import json
import time

import pytest

from tests.compose.scripted_endpoint import MODEL as SCRIPTED_MODEL
from tests.compose.scripted_endpoint import ScriptedEndpoint
from tests.compose.test_compose_deadline import DRAFT, MARGIN, SLOW, generation_ended
from tests.compose.test_compose_real import COMPOSED

pytestmark = pytest.mark.slow


def slow_composing(demo_home, url: str, **knobs):
    from core.settings import Settings
    from serving.engine import Engine

    engine = Engine(Settings.load(env={}, home=demo_home, compose_backend="openai", compose_endpoint_url=url,
                                  compose_model=SCRIPTED_MODEL, **knobs))
    engine.answer(COMPOSED)  # the served models loaded, and the composer, before the clock starts
    engine.composer()
    return engine


def stored_composition(bot, message: dict) -> tuple[dict, dict]:
    stored = bot.store.get_answer(message["metadata"]["event_payload"]["answer_id"])
    return stored, json.loads(stored["composition"])


def test_past_the_first_token_budget_the_select_answer_is_posted_at_the_deadline(make_bot, demo_home, engine):
    endpoint = ScriptedEndpoint(DRAFT, first_delay=SLOW)
    with endpoint as url:
        bot = make_bot(slow_composing(demo_home, url, compose_first_token_budget_seconds=1), answer_modes="im:compose")
        sent = time.monotonic()
        bot.message(COMPOSED, channel="D1", channel_type="im")
        [post] = bot.mock.wait_for("chat.postMessage", timeout=SLOW + 5)
        bot.idle()
        assert endpoint.hung_up.wait(2.0)
    assert post.time - sent < 1 + MARGIN, post.time - sent
    assert bot.mock.calls_to("chat.startStream") == []  # nothing was streamed: the select answer is posted
    stored, composition = stored_composition(bot, post.args)
    assert stored["answer_mode"] == "select" and stored["answer_text"] == engine.answer(COMPOSED).text
    assert composition["reason"] == "first token not within 1s budget"
    assert generation_ended()


def test_a_stream_that_stalls_is_replaced_by_the_select_answer_at_the_deadline(make_bot, demo_home, engine):
    text = "Two-factor authentication protects your account [1]. " + DRAFT
    endpoint = ScriptedEndpoint(text, delay=lambda i: SLOW if i == 7 else 0.0)  # stalls after the first sentence
    with endpoint as url:
        composing = slow_composing(demo_home, url, compose_first_token_budget_seconds=1,
                                   compose_latency_budget_seconds=1.5)
        bot = make_bot(composing, answer_modes="im:compose")
        sent = time.monotonic()
        bot.message(COMPOSED, channel="D1", channel_type="im")
        [update] = bot.mock.wait_for("chat.update", timeout=SLOW + 5)
        bot.idle()
        assert endpoint.hung_up.wait(2.0)
    assert update.time - sent < 1.5 + MARGIN, update.time - sent
    [start] = bot.mock.calls_to("chat.startStream")
    assert start.args["chunks"][0]["text"].strip() == "Two-factor authentication protects your account [1]."
    [reply] = bot.mock.bot_replies("D1")
    assert update.args["ts"] == reply["ts"] and bot.mock.calls_to("chat.postMessage") == []
    stored, composition = stored_composition(bot, reply)
    assert stored["answer_mode"] == "select" and stored["answer_text"] == engine.answer(COMPOSED).text
    assert composition["reason"] == "still writing after the 1.5s budget"
    assert generation_ended()
