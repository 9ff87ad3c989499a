"""The one answer policy (serving/policy.py) that Slack and the CLI both call: the engine selects,
the policy decides once whether to answer, whether it is a priority hand-off, whether to compose,
and in which words a hand-off is told.

Compositions are counted where they land: an OpenAI-compatible server scripted on loopback
(tests/compose/scripted_endpoint.py) behind the real `OpenAIChat` backend, the real engine on the
demo KB, the real slack-bolt App (tests/slack/conftest.py `make_bot`) and the real CLI entry point.
Every composed answer is exactly one request; select mode, and chatter the bot stays quiet on, none."""

from __future__ import annotations

import json
import re

import pytest

from bot.cli import main
from serving.policy import (HANDOFF_TEXT, PRIORITY_HANDOFF_TEXT, TERMINAL_HANDOFF_TEXT, AnswerPolicy,
                            Conversation)
from serving.versions import META_FILE, VersionStore
from tests.compose.scripted_endpoint import MODEL, ScriptedEndpoint
from tests.compose.test_compose_real import COMPOSED
from tests.conftest import copy_home
from tests.slack.conftest import make_bot, slack_mock  # noqa: F401 - the real Slack app's fixtures, reused

pytestmark = pytest.mark.slow

OFF_TOPIC = "what's the weather in Paris tomorrow"
MODES = ("select", "compose", "auto")


def grounded(messages: list[dict]) -> str:
    """What a faithful model writes: the first sentence of section [1] of the prompt, cited (the guard passes it)."""
    section = messages[-1]["content"].split("\n[1] ", 1)[1].split("\n", 1)[1].split("\n\n[2] ", 1)[0]
    first = next(line for line in (raw.strip().lstrip("-*#> ").strip() for raw in section.splitlines())
                 if len(line.split()) >= 4)
    return re.split(r"(?<=[.!?])\s+", first)[0].rstrip(".!?") + " [1]."


def approve_composer(home) -> None:
    """Mark the champion's composer approved, as the retrain's gate does (`answer_mode = auto` then composes)."""
    path = VersionStore(home / "models").champion().path / META_FILE
    meta = json.loads(path.read_text())
    meta["composer"] = {"approved": True}
    path.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def approved_home(demo_home, tmp_path_factory):
    home = tmp_path_factory.mktemp("approved") / "home"
    copy_home(demo_home, home)
    approve_composer(home)
    return home


@pytest.fixture(scope="module")
def scripted():
    """One scripted language-model server for the module (`requests` counts what reached it)."""
    endpoint = ScriptedEndpoint(grounded)
    with endpoint as url:
        endpoint.url = url
        yield endpoint


@pytest.fixture(scope="module")
def engines(approved_home, scripted):
    """An engine per global `answer_mode`, all on a home whose composer the gate approved."""
    from core.settings import Settings
    from serving.engine import Engine

    return {mode: Engine(Settings.load(env={}, home=approved_home, answer_mode=mode, compose_backend="openai",
                                       compose_endpoint_url=scripted.url, compose_model=MODEL,
                                       compose_first_token_budget_seconds=120, compose_latency_budget_seconds=240))
            for mode in MODES}


@pytest.fixture
def requests(scripted):
    """The requests reaching the scripted server during this test."""
    scripted.requests.clear()
    return scripted.requests


def stored_mode(bot, reply) -> str:
    return bot.store.get_answer(reply["metadata"]["event_payload"]["answer_id"])["answer_mode"]


@pytest.mark.parametrize("mode", MODES)
def test_slack_composes_each_answer_once_whatever_the_global_mode(make_bot, engines, requests, mode):
    bot = make_bot(engines[mode], answer_mode=mode)
    bot.message(COMPOSED, channel="D1", channel_type="im")  # a DM: the composition is streamed
    bot.mention(COMPOSED, channel="C1")  # a channel: the composition is posted whole
    bot.idle()
    [dm] = bot.mock.bot_replies("D1")
    [channel] = bot.mock.bot_replies("C1")
    composing = mode != "select"  # auto composes: the gate approved this composer
    assert len(requests) == (2 if composing else 0)
    expected = "compose" if composing else "select"
    assert (stored_mode(bot, dm), stored_mode(bot, channel)) == (expected, expected)


def test_a_channel_select_override_composes_nothing_under_a_global_compose(make_bot, engines, requests):
    bot = make_bot(engines["compose"], answer_mode="compose", answer_modes="C1:select")
    bot.mention(COMPOSED, channel="C1")
    bot.idle()
    [selected] = bot.mock.bot_replies("C1")
    assert requests == [] and stored_mode(bot, selected) == "select"
    bot.mention(COMPOSED, channel="C2")
    bot.idle()
    [composed] = bot.mock.bot_replies("C2")
    assert len(requests) == 1 and stored_mode(bot, composed) == "compose"


def test_support_channel_chatter_below_the_bar_composes_nothing(make_bot, engines, requests):
    bot = make_bot(engines["compose"], answer_mode="compose", support_channels="C9")
    bot.message(OFF_TOPIC, channel="C9")
    bot.idle()
    assert bot.mock.bot_replies("C9") == [] and requests == []
    bot.message(COMPOSED, channel="C9")  # a question the bot is sure of clears the bar: composed once
    bot.idle()
    [reply] = bot.mock.bot_replies("C9")
    assert len(requests) == 1 and stored_mode(bot, reply) == "compose"


@pytest.fixture
def cli_home(home, scripted, monkeypatch):
    """The private demo home, its composer approved, composing through the scripted server."""
    approve_composer(home)
    for name, value in {"BACKEND": "openai", "ENDPOINT_URL": scripted.url, "MODEL": MODEL,
                        "FIRST_TOKEN_BUDGET_SECONDS": "120", "LATENCY_BUDGET_SECONDS": "240"}.items():
        monkeypatch.setenv(f"CSBOT_COMPOSE_{name}", value)
    return home


def ask(capsys, *argv) -> dict:
    assert main(["ask", "--json", *argv]) == 0
    [line] = capsys.readouterr().out.splitlines()
    return json.loads(line)


@pytest.mark.parametrize("mode", MODES)
def test_the_cli_composes_each_answer_once_whatever_the_global_mode(cli_home, requests, capsys, monkeypatch, mode):
    monkeypatch.setenv("CSBOT_ANSWER_MODE", mode)
    answer = ask(capsys, COMPOSED)
    composing = mode != "select"
    assert len(requests) == (1 if composing else 0)
    assert answer["mode"] == ("compose" if composing else "select")
    assert ask(capsys, "--mode", "select", COMPOSED)["mode"] == "select"  # the flag beats the setting
    assert len(requests) == (1 if composing else 0)


def test_the_cli_hand_off_is_told_in_the_terminal_words(cli_home, requests, capsys, monkeypatch):
    monkeypatch.setenv("CSBOT_ANSWER_MODE", "compose")
    unsure = ask(capsys, OFF_TOPIC)
    assert unsure["handoff"] and unsure["answer"] == TERMINAL_HANDOFF_TEXT and requests == []  # hand-offs: no composing
    assert main(["ask", OFF_TOPIC]) == 0
    out = capsys.readouterr().out
    assert TERMINAL_HANDOFF_TEXT in out and "follow up here" not in out


def test_an_abstaining_composer_is_a_hand_off_in_each_front_end_words(engines, scripted, requests):
    policy = AnswerPolicy(engines["compose"])
    scripted.reply = "NO_ANSWER"
    try:
        select = engines["compose"].answer(COMPOSED)
        cli = policy.reply(select, Conversation("cli"))
        slack = policy.reply(select, Conversation("slack", channel="C1"))
    finally:
        scripted.reply = grounded
    assert len(requests) == 2  # one composition per reply
    assert (cli.handoff_reason, cli.answer.handoff, cli.answer.text) == ("abstained", True, TERMINAL_HANDOFF_TEXT)
    assert (slack.handoff_reason, slack.answer.handoff, slack.answer.text) == ("abstained", True, HANDOFF_TEXT)


def test_the_priority_rule_and_the_bar(engines, requests):
    engine = engines["compose"]
    policy = AnswerPolicy(engine)
    unsure = engine.answer(OFF_TOPIC)
    assert unsure.handoff
    support = Conversation("slack", channel="C9", bar=0.6, priority_threshold=0.0)  # every message "negative enough"
    priority = policy.reply(unsure, support)
    assert (priority.quiet, priority.priority, priority.handoff_reason) == (False, True, "priority")
    assert priority.answer.text == PRIORITY_HANDOFF_TEXT and not priority.compose
    quiet = policy.reply(unsure, Conversation("slack", channel="C9", bar=0.6))  # no priority rule: stays quiet
    assert quiet.quiet and quiet.answer is None
    sure = policy.reply(engine.answer(COMPOSED), support)  # a priority with a confident answer: still answered
    assert sure.priority and not sure.answer.handoff and sure.compose and sure.answer.mode == "compose"
    edit = policy.reply(engine.answer(COMPOSED), Conversation("slack", channel="C9", bar=0.6, priority_threshold=0.0,
                                                             replaces_reply=True))
    assert not edit.priority and not edit.compose and edit.answer.mode == "select"
    assert len(requests) == 1  # only the confident answer was composed
    with pytest.raises(ValueError, match="unknown front end 'email'"):
        Conversation("email")
