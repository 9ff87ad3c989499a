"""Cross-cutting rules, applied to every request after Bolt's signature check and authorization:

1. ignore_noise: events from bots (including the bot itself), message subtypes other than plain
   messages, thread broadcasts, file shares and edits (channel_join/leave, deletions, topic
   changes...) are acknowledged and dropped.
2. channel_allowlist: with `slack_allowed_channels` set, events and actions from other channels
   are dropped and the slash command says it is not enabled there (DMs are always allowed).
3. skip_revoked: nothing is handled for a workspace that uninstalled the app or revoked its bot
   token (bot/slack/handlers/lifecycle.py) - neither new requests nor pending inbox items.
4. dedupe_events: each Events API event id is processed once. The claim itself is written with
   the inbox items, in one transaction, when the request is acknowledged (bot/slack/intake.py);
   this only skips, early, an event id already claimed (Slack's retries, X-Slack-Retry-Num, and
   replays get a 200 and nothing else). Inbox replays are not checked.
"""

from __future__ import annotations

import json
import logging

from slack_bolt import BoltResponse

from bot.slack.intake import REPLAY
from bot.slack.options import SlackOptions

log = logging.getLogger("csbot.slack")
ANSWERABLE_SUBTYPES = (None, "thread_broadcast", "file_share", "message_changed")


def _done() -> BoltResponse:
    return BoltResponse(status=200, body="")


def _from_bot(message: dict, bot_user_id: str | None) -> bool:
    return bool(message.get("bot_id") or message.get("subtype") == "bot_message"
                or (bot_user_id and message.get("user") == bot_user_id))


def is_noise(body: dict, bot_user_id: str | None) -> bool:
    if body.get("type") != "event_callback":
        return False
    event = body.get("event") or {}
    if bot_user_id and event.get("user") == bot_user_id:
        return True
    if event.get("type") not in ("message", "app_mention"):
        return False
    if event.get("subtype") not in ANSWERABLE_SUBTYPES:
        return True
    if event.get("subtype") == "message_changed":
        return _from_bot(event.get("message") or {}, bot_user_id)
    return _from_bot(event, bot_user_id)


def request_channel(body: dict) -> tuple[str | None, str | None]:
    """(channel id, channel type) of an event, command or action, where there is one."""
    if body.get("type") == "event_callback":
        event = body.get("event") or {}
        channel = event.get("channel") or (event.get("item") or {}).get("channel")
        return (channel if isinstance(channel, str) else None), event.get("channel_type")
    if body.get("command"):
        return body.get("channel_id"), None
    channel = body.get("channel")
    if isinstance(channel, dict):
        return channel.get("id"), None
    return None, None


def build_middleware(store, options: SlackOptions) -> list:
    def ignore_noise(body, context, next):
        if is_noise(body, context.bot_user_id):
            return _done()
        return next()

    def channel_allowlist(body, next):
        channel, channel_type = request_channel(body)
        if options.channel_allowed(channel, channel_type):
            return next()
        if body.get("command"):
            return BoltResponse(status=200, headers={"content-type": "application/json"},
                                body=json.dumps({"response_type": "ephemeral",
                                                 "text": "csbot is not enabled in this channel."}))
        return _done()

    def skip_revoked(context, next):
        if context.team_id and context.team_id in store.inbox.revoked():
            log.debug("workspace %s is revoked: request ignored", context.team_id)
            return _done()
        return next()

    def dedupe_events(body, context, request, next):
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if context.get(REPLAY) is not None or not isinstance(event_id, str):
            return next()
        if store.inbox.event_claimed(event_id):
            retry = (request.headers.get("x-slack-retry-num") or [None])[0]
            log.info("event %s already processed (retry %s): skipped", event_id, retry)
            return _done()
        return next()

    return [ignore_noise, skip_revoked, channel_allowlist, dedupe_events]
