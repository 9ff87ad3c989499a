"""The Slack app: a slack-bolt App with csbot's middleware and listeners (wiring only).

Every listener acks first and does its model or API work in a lazy listener afterwards, so Slack
gets its response within 3 seconds (`process_before_response=True` runs the acks and middleware
before responding, and only them). The handlers live in bot/slack/handlers/, one per interaction.
"""

from __future__ import annotations

import logging
import re

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.monitoring.spikes import SpikeConfig
from bot.slack import ids
from bot.slack.handlers import Deps, ack_now
from bot.slack.handlers.app_home import AppHome
from bot.slack.handlers.clarify import Clarify
from bot.slack.handlers.correction_modal import CorrectionModal
from bot.slack.handlers.feedback_buttons import FeedbackButtons
from bot.slack.handlers.messages import MessageHandler
from bot.slack.handlers.monitoring import Monitoring
from bot.slack.handlers.reactions import Reactions
from bot.slack.handlers.slash_command import SlashCommand
from bot.slack.middleware import build_middleware
from bot.slack.options import SlackOptions

RATE_LIMIT_RETRIES = 3


def make_client(settings, token: str | None = None) -> WebClient:
    """The Web API client: settings.slack_api_url as base URL; HTTP 429 waits Retry-After and retries."""
    client = WebClient(token=token or settings.slack_bot_token, base_url=settings.slack_api_url)
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES))
    return client


def build_app(settings, engine, store, client: WebClient | None = None, *, socket_mode: bool = False,
              token_verification_enabled: bool = True, options: SlackOptions | None = None,
              listener_executor=None) -> App:
    """`listener_executor` runs the lazy listeners (default: slack-bolt's thread pool)."""
    deps = Deps(engine=engine, store=store, options=options or SlackOptions.from_settings(settings))
    app = App(
        name="csbot",
        client=client or make_client(settings),
        signing_secret=settings.slack_signing_secret or "",
        request_verification_enabled=not socket_mode,
        token_verification_enabled=token_verification_enabled,
        process_before_response=True,
        logger=logging.getLogger("csbot.slack.bolt"),
        listener_executor=listener_executor,
    )
    app.deps = deps
    for middleware in build_middleware(store, deps.options):
        app.middleware(middleware)

    messages, buttons, modal = MessageHandler(deps), FeedbackButtons(deps), CorrectionModal(deps)
    spike_config = SpikeConfig.from_settings(settings)
    reactions, slash, home = Reactions(deps), SlashCommand(deps, spike_config=spike_config), AppHome(deps)
    monitoring, clarify = Monitoring(deps, spike_config), Clarify(deps)
    app.event("app_mention")(ack=ack_now, lazy=[messages.on_mention])
    app.event({"type": "message", "subtype": "message_changed"})(ack=ack_now, lazy=[messages.on_edit])
    app.event("message")(ack=ack_now, lazy=[messages.on_message, monitoring.on_message])
    app.action(ids.VOTE_UP)(ack=ack_now, lazy=[buttons.on_up])
    app.action(ids.VOTE_DOWN)(ack=ack_now, lazy=[buttons.on_down])
    app.view(ids.CORRECTION_MODAL)(ack=modal.ack, lazy=[modal.on_submit])
    app.action(re.compile(ids.CLARIFY_PICK_PATTERN))(ack=ack_now, lazy=[clarify.on_pick])
    app.event("reaction_added")(ack=ack_now, lazy=[reactions.on_added])
    app.event("reaction_removed")(ack=ack_now, lazy=[reactions.on_removed])
    app.command(ids.SLASH_COMMAND)(ack=slash.ack, lazy=[slash.run])
    app.event("app_home_opened")(ack=ack_now, lazy=[home.on_opened])
    app.shortcut(ids.CORRECT_SENTIMENT_SHORTCUT)(ack=ack_now, lazy=[monitoring.on_shortcut])
    app.view(ids.SENTIMENT_MODAL)(ack=monitoring.ack_submission, lazy=[monitoring.on_submit])
    return app
