"""Small pieces of the Slack app: settings, noise rules, signatures, Block Kit, manifest, `csbot serve`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
from slack_sdk.signature import SignatureVerifier

from bot.slack import blocks
from bot.slack.middleware import is_noise, request_channel
from bot.slack.options import SlackOptions, csv_set
from bot.slack.server import malformed
from core.answer import Answer, Source
from core.errors import UserError
from tests.slack.slack_sender import sign

REPO = Path(__file__).resolve().parents[2]


def test_options_read_comma_separated_settings_with_defaults(tmp_path):
    from core.settings import Settings

    opts = SlackOptions.from_settings(Settings.load(
        env={}, home=tmp_path, slack_support_channels="C1, C2", slack_admin_users=["U1"],
        slack_up_reactions=":white_check_mark:,+1", slack_support_min_confidence="0.7", slack_oncall_usergroup=" S123 "))
    assert opts.support_channels == {"C1", "C2"} and opts.admin_users == {"U1"}
    assert opts.support_min_confidence == 0.7 and opts.oncall_usergroup == "S123"
    assert opts.reaction_vote("white_check_mark") == "up" and opts.reaction_vote("-1::skin-tone-2") == "down"
    assert opts.reaction_vote("tada") is None
    defaults = SlackOptions.from_settings(Settings.load(env={}, home=tmp_path))
    assert defaults == SlackOptions()  # one default per knob: the settings' and the options' agree
    assert defaults.allowed_channels == frozenset() and defaults.reaction_vote("thumbsup") == "up"
    assert csv_set(None) == frozenset() and csv_set(" , ") == frozenset()
    assert csv_set(str(["C1", "C2"])) == {"C1", "C2"}  # a TOML list read as a string


def test_allowlist_keeps_dms_and_support_channels():
    opts = SlackOptions(allowed_channels=frozenset({"C1"}), support_channels=frozenset({"CS"}))
    assert opts.channel_allowed("C1") and opts.channel_allowed("CS") and opts.channel_allowed("D9", "im")
    assert not opts.channel_allowed("C2")
    assert SlackOptions().channel_allowed("C2")


@pytest.mark.parametrize("event, noise", [
    ({"type": "message", "user": "U1", "text": "hi"}, False),
    ({"type": "message", "user": "U1", "subtype": "thread_broadcast"}, False),
    ({"type": "message", "user": "UBOT", "text": "my own answer"}, True),
    ({"type": "message", "bot_id": "B2", "text": "another bot"}, True),
    ({"type": "message", "subtype": "channel_join", "user": "U1"}, True),
    ({"type": "message", "subtype": "channel_leave", "user": "U1"}, True),
    ({"type": "message", "subtype": "message_deleted"}, True),
    ({"type": "message", "subtype": "message_changed", "message": {"user": "U1", "text": "x"}}, False),
    ({"type": "message", "subtype": "message_changed", "message": {"bot_id": "BBOT", "text": "x"}}, True),
    ({"type": "reaction_added", "user": "U1"}, False),
    ({"type": "reaction_added", "user": "UBOT"}, True),
])
def test_noise_rules(event, noise):
    assert is_noise({"type": "event_callback", "event": event}, "UBOT") is noise


def test_request_channel_of_events_commands_and_actions():
    assert request_channel({"type": "event_callback", "event": {"channel": "C1", "channel_type": "im"}}) == ("C1", "im")
    assert request_channel({"type": "event_callback", "event": {"item": {"channel": "C2"}}}) == ("C2", None)
    assert request_channel({"command": "/csbot", "channel_id": "C3"}) == ("C3", None)
    assert request_channel({"type": "block_actions", "channel": {"id": "C4"}}) == ("C4", None)
    assert request_channel({"type": "view_submission"}) == (None, None)


def test_the_test_senders_signatures_are_slack_sdks():
    body, now = '{"type":"event_callback"}', int(time.time())
    expected = SignatureVerifier("s3cret").generate_signature(timestamp=str(now), body=body)
    assert sign("s3cret", now, body.encode()) == expected


def test_malformed_payloads_are_named():
    assert malformed("{", "application/json").startswith("cannot parse")
    assert malformed("command=%2Fcsbot&text=help", "application/x-www-form-urlencoded") is None
    assert malformed('{"type": "event_callback", "event": {"type": "app_mention"}}', "application/json") is None
    assert malformed('{"type": "event_callback", "event": {}}', "application/json").startswith("an event callback")
    assert malformed('{"type": "event_callback", "event_id": ["E1"], "event": {"type": "x"}}',
                     "application/json") == "event_id is not a string"
    assert malformed('{"type": "event_callback", "event": {"type": "message", "message": "hi"}}',
                     "application/json") == "event.message is not an object"
    assert malformed('{"type": "block_actions", "actions": []}', "application/json") == "block_actions without actions"
    assert malformed('{"type": "view_submission", "view": {"id": "V1"}}',
                     "application/json") == "view_submission without a view and its type"
    # Event types csbot does not read keep their own shapes (a channel object, a user object): 200 later.
    assert malformed('{"type": "event_callback", "event": {"type": "channel_rename", "channel": {"id": "C1"}}}',
                     "application/json") is None


def _answer(**kw):
    base = dict(answer_id="a1", question="q", text="An <answer> & more", intent="x", confidence=0.5,
                sentiment="neutral", sentiment_scores={}, sources=[Source("d1", "Title <1>", None, 0.5)],
                model_version="v1")
    return Answer(**{**base, **kw})


def test_answer_blocks_escape_clip_and_validate():
    long = _answer(text="word " * 3000)
    dicts = [b.to_dict() for b in blocks.answer_blocks(long)]  # to_dict() runs slack_sdk's validation
    assert dicts[0]["type"] == "markdown" and 11_000 < len(dicts[0]["text"]) <= 12_000  # a markdown block's limit
    assert len(blocks.answer_text(long)) <= 3000  # the notification fallback
    dicts = [b.to_dict() for b in blocks.answer_blocks(_answer(text="1. **Open** [Settings](https://x.example)\n2. `reset`"))]
    assert dicts[0] == {"type": "markdown", "text": "1. **Open** [Settings](https://x.example)\n2. `reset`"}  # as written
    assert "Title &lt;1&gt;" in str(dicts)  # mrkdwn context blocks stay escaped
    assert dicts[-1]["type"] == "context_actions" and dicts[-1]["elements"][0]["type"] == "feedback_buttons"
    assert blocks.read_feedback_value(dicts[-1]["elements"][0]["negative_button"]["value"]) == ("down", "a1")
    assert blocks.read_feedback_value("a1") == (None, None) and blocks.read_feedback_value("up:") == (None, None)
    handoff_text = [b.to_dict() for b in blocks.answer_blocks(_answer(text="An <answer> & more", handoff=True))]
    assert "An &lt;answer&gt; &amp; more" in handoff_text[0]["text"]["text"]
    handoff = [b.to_dict() for b in blocks.answer_blocks(_answer(handoff=True), oncall_usergroup="S1")]
    assert "<!subteam^S1>" in handoff[0]["text"]["text"]
    modal = blocks.correction_modal(answer_id="a1", question="q", answer="a", context={"channel": "C1"},
                                    articles=[(f"d{i}", "t" * 100) for i in range(150)], intents=["i"])
    data = modal.to_dict()
    assert len(data["blocks"][2]["element"]["options"]) == 100 and len(data["title"]["text"]) <= 24
    assert blocks.home_view({"model_version": "v1", "last_training_run": {"metrics": {"f1": 0.9}}}).to_dict()


def test_manifest_has_exactly_the_events_and_scopes_the_app_uses():
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((REPO / "slack" / "manifest.yml").read_text())
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert events == {"app_mention", "message.channels", "message.groups", "message.im", "reaction_added",
                      "reaction_removed", "app_home_opened",
                      "assistant_thread_started", "assistant_thread_context_changed"}  # the legacy assistant_view
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "app_mentions:read", "channels:history", "groups:history", "im:history", "chat:write", "reactions:read",
        "commands", "assistant:write",  # the agent surface: status, titles, suggested prompts
        # sentiment monitoring: chart uploads, and `/csbot sentiment #name` looking the channel up
        "files:write", "channels:read", "groups:read"}
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/csbot"]
    assert manifest["settings"]["interactivity"]["is_enabled"] and manifest["features"]["app_home"]["home_tab_enabled"]
    assert manifest["features"]["app_home"]["messages_tab_enabled"] and manifest["features"]["agent_view"]["agent_description"]


def test_serve_command_parses_modes_and_checks_credentials():
    from bot.commands import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["serve", "--http", "3000"]).http == 3000
    assert parser.parse_args(["serve", "--socket"]).socket
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--socket", "--http", "1"])
    from core.settings import Settings

    creds = Settings.load(env={}, slack_bot_token="xoxb-1")
    with pytest.raises(UserError, match="SLACK_APP_TOKEN"):
        serve.check_credentials(creds, socket_mode=True)
    with pytest.raises(UserError, match="SLACK_SIGNING_SECRET"):
        serve.check_credentials(creds, socket_mode=False)
    with pytest.raises(UserError, match="xapp-"):
        serve.check_credentials(Settings.load(env={}, slack_bot_token="xoxb-1", slack_app_token="xoxb-2"),
                                socket_mode=True)
