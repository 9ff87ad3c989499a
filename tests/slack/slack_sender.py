"""What Slack sends to the app: signed events, interactions and slash commands POSTed to its
/slack/events endpoint on 127.0.0.1, and the block_actions / view_submission payload shapes."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import json
import time
import uuid
from urllib.parse import urlencode, urlsplit

from bot.slack import ids
from tests.slack.slack_mock import APP_ID, BOT_USER, SIGNING_SECRET, TEAM


def sign(secret: str, timestamp: int, raw: bytes) -> str:
    """X-Slack-Signature: v0= + HMAC-SHA256(secret, b"v0:{timestamp}:{body}") (as SignatureVerifier)."""
    base = b"v0:" + str(timestamp).encode() + b":" + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackSender:
    """Signs and POSTs what Slack would send to the app's /slack/events endpoint."""

    def __init__(self, base_url: str, secret: str = SIGNING_SECRET):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.secret = secret
        self._ids = itertools.count(1)

    def post(self, body: str | bytes, content_type: str = "application/json", *, headers: dict | None = None,
             timestamp: int | None = None, signature: str | None = None, path: str = "/slack/events"):
        raw = body.encode("utf-8") if isinstance(body, str) else body
        timestamp = int(time.time()) if timestamp is None else timestamp
        if signature is None:
            signature = sign(self.secret, timestamp, raw)
        all_headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(timestamp),
                       "X-Slack-Signature": signature, **(headers or {})}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("POST", path, body=raw, headers=all_headers)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8")
        finally:
            conn.close()

    def get(self, path: str):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8")
        finally:
            conn.close()

    def event(self, event: dict, *, event_id: str | None = None, retry_num: int | None = None):
        envelope = {"token": "legacy", "team_id": TEAM, "api_app_id": APP_ID, "type": "event_callback",
                    "event": event, "event_id": event_id or f"Ev{uuid.uuid4().hex[:12].upper()}",
                    "event_time": int(time.time()),
                    "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}]}
        headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"} if retry_num else None
        return self.post(json.dumps(envelope), headers=headers)

    def interaction(self, payload: dict):
        return self.post(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")

    def command_body(self, text: str, *, user: str | None = "U1", channel: str | None = "C1",
                     response_url: str) -> str:
        """The form body of one slash command (its own trigger id, as Slack gives each); None leaves a field out."""
        form = {"token": "legacy", "team_id": TEAM, "team_domain": "csbot-test", "channel_id": channel,
                "channel_name": "general", "user_id": user, "user_name": "someone", "command": "/csbot",
                "text": text, "api_app_id": APP_ID, "response_url": response_url,
                "trigger_id": f"{next(self._ids)}.1.abc"}
        return urlencode({k: v for k, v in form.items() if v is not None})

    def command(self, text: str, *, user: str = "U1", channel: str = "C1", response_url: str):
        return self.form(self.command_body(text, user=user, channel=channel, response_url=response_url))

    def form(self, body: str):
        """POST a form body (a slash command's, or an interaction's `payload=`) exactly as given."""
        return self.post(body, "application/x-www-form-urlencoded")


# ----- interaction payloads (Slack's documented block_actions / view_submission shapes) -----------

def button_payload(bot, action_id, answer_id, message_ts, *, user="U1", channel="C1", trigger="111.222.abc",
                   block_id=ids.FEEDBACK_BLOCK, response="vote"):
    """A click on a button whose value is `answer_id` (the feedback buttons; or any other block's)."""
    return {
        "type": "block_actions", "team": {"id": TEAM, "domain": "csbot-test"},
        "user": {"id": user, "team_id": TEAM}, "api_app_id": "A0CSBOT", "token": "legacy",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger, "channel": {"id": channel, "name": "general"},
        "message": {"type": "message", "ts": message_ts, "user": BOT_USER, "thread_ts": "1.0"},
        "response_url": bot.mock.response_url(response),
        "actions": [{"action_id": action_id, "block_id": block_id, "value": answer_id, "type": "button",
                     "action_ts": "1700000100.000200"}],
    }


def feedback_payload(bot, vote, answer_id, message_ts, *, user="U1", channel="C1", trigger="111.222.fb",
                     response="vote", value=None):
    """A click on the native feedback buttons (a `feedback_buttons` element in a `context_actions`
    block): Slack sends the clicked button's value as the action's value."""
    value = value if value is not None else (ids.FEEDBACK_UP_PREFIX if vote == "up" else ids.FEEDBACK_DOWN_PREFIX) + answer_id
    payload = button_payload(bot, ids.FEEDBACK, value, message_ts, user=user, channel=channel, trigger=trigger,
                             block_id=ids.FEEDBACK_ACTIONS_BLOCK, response=response)
    payload["actions"][0]["type"] = "feedback_buttons"
    return payload


def feedback_values(blocks: list) -> dict:
    """{"up": value, "down": value} of the native feedback buttons in a message's blocks."""
    [block] = [b for b in blocks if b["type"] == "context_actions"]
    [element] = block["elements"]
    assert element["type"] == "feedback_buttons" and element["action_id"] == ids.FEEDBACK
    return {"up": element["positive_button"]["value"], "down": element["negative_button"]["value"]}


def feedback_answer_id(blocks: list) -> str:
    """The answer id the feedback buttons under a message carry."""
    values = feedback_values(blocks)
    assert values["up"].startswith(ids.FEEDBACK_UP_PREFIX) and values["down"].startswith(ids.FEEDBACK_DOWN_PREFIX)
    answer_id = values["up"][len(ids.FEEDBACK_UP_PREFIX):]
    assert values["down"] == ids.FEEDBACK_DOWN_PREFIX + answer_id
    return answer_id


def submission(view: dict, *, doc_id=None, intent=None, text=None, user="U1", view_id="VCORR1", trigger=None,
               section=None):
    """A submission of the correction modal; each its own trigger id unless `trigger` (Slack gives each
    interaction one; the intake claims it, so two submissions with one trigger id count once)."""
    values = {
        ids.CORRECTION_ARTICLE_BLOCK: {ids.CORRECTION_ARTICLE: {
            "type": "static_select", "selected_option": {"value": doc_id} if doc_id else None}},
        ids.CORRECTION_SECTION_BLOCK: {ids.CORRECTION_SECTION: {
            "type": "static_select", "selected_option": {"value": section} if section else None}},
        ids.CORRECTION_INTENT_BLOCK: {ids.CORRECTION_INTENT: {
            "type": "static_select", "selected_option": {"value": intent} if intent else None}},
        ids.CORRECTION_TEXT_BLOCK: {ids.CORRECTION_TEXT: {"type": "plain_text_input", "value": text}},
    }
    payload = {"type": "view_submission", "team": {"id": TEAM}, "user": {"id": user, "team_id": TEAM},
               "api_app_id": "A0CSBOT", "token": "legacy", "trigger_id": trigger or f"333.444.{uuid.uuid4().hex[:8]}",
               "view": {**view, "id": view_id, "team_id": TEAM, "state": {"values": values}}}
    if user is None:
        del payload["user"]
    return payload
