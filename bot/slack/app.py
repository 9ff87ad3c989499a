"""The Slack app: a slack-bolt App with csbot's middleware and listeners (wiring only).

Every listener acks first and does its model or API work in a lazy listener afterwards, so Slack
gets its response within 3 seconds (`process_before_response=True` runs the acks and middleware
before responding, and only them). The app is a `DurableApp` (bot/slack/intake.py): the lazy work
of every acknowledged request is in the store's inbox before the response goes out, and
`app.workers` (bot/slack/workers.py, started by the server) runs it. The handlers live in
bot/slack/handlers/, one per interaction. Signatures are checked by the HTTP server
(bot/slack/server.py) before the app sees a request, so the App does not check them again (an
inbox replay, minutes later, would fail bolt's 5-minute window).
"""

from __future__ import annotations

import logging
import re

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.monitoring.spikes import SpikeConfig
from bot.slack import ids
from bot.slack.handlers import Deps, ack_now
from bot.slack.handlers.app_home import AppHome
from bot.slack.handlers.assistant import AgentSurface, legacy_assistant, messages_tab
from bot.slack.handlers.clarify import Clarify
from bot.slack.handlers.correction_modal import CorrectionModal
from bot.slack.handlers.feedback_buttons import FeedbackButtons
from bot.slack.handlers.lifecycle import Lifecycle
from bot.slack.handlers.messages import MessageHandler
from bot.slack.handlers.monitoring import Monitoring
from bot.slack.handlers.reactions import Reactions
from bot.slack.handlers.slash_command import SlashCommand
from bot.slack.intake import DurableApp
from bot.slack.middleware import build_middleware
from bot.slack.options import SlackOptions
from bot.slack.digest import WeeklyDigest
from bot.slack.workers import WorkerPool

RATE_LIMIT_RETRIES = 3


def make_client(settings, token: str | None = None) -> WebClient:
    """The Web API client: settings.slack.api_url as base URL; HTTP 429 waits Retry-After and retries."""
    client = WebClient(token=token or settings.slack.bot_token, base_url=settings.slack.api_url)
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES))
    return client


def build_app(settings, engine, store, client: WebClient | None = None, *,
              token_verification_enabled: bool = True, options: SlackOptions | None = None) -> DurableApp:
    """The app (the same for HTTP and Socket Mode), with its worker pool, not yet started, as `app.workers`."""
    deps = Deps(engine=engine, store=store, options=options or SlackOptions.from_settings(settings))
    intake = settings.slack
    app = DurableApp(
        store=store,
        inbox_limit=intake.inbox_limit,
        name="csbot",
        client=client or make_client(settings),
        signing_secret=settings.slack.signing_secret or "",
        request_verification_enabled=False,
        token_verification_enabled=token_verification_enabled,
        process_before_response=True,
        logger=logging.getLogger("csbot.slack.bolt"),
    )
    app.deps = deps
    app.workers = WorkerPool(app, store, intake, engine=engine)
    app.digest = None
    if intake.digest_channel:
        app.digest = WeeklyDigest(engine, store, app.client, channel=intake.digest_channel,
                                  weekday=intake.digest_weekday, hour=intake.digest_hour)
        app.workers.periodic.append(app.digest.maybe_post)
    for middleware in build_middleware(store, deps.options):
        app.middleware(middleware)
    agent = AgentSurface(deps)  # suggested prompts from the engine's catalogue of served articles
    app.middleware(legacy_assistant(agent))  # assistant_thread_started / _context_changed (bolt's Assistant)

    messages, buttons, modal = MessageHandler(deps), FeedbackButtons(deps), CorrectionModal(deps)
    spike_config = SpikeConfig.from_settings(settings)
    reactions, slash, home = Reactions(deps), SlashCommand(deps, spike_config=spike_config), AppHome(deps)
    monitoring, lifecycle, clarify = Monitoring(deps, spike_config), Lifecycle(deps), Clarify(deps)
    app.event("app_mention")(ack=ack_now, lazy=[messages.on_mention])
    app.event({"type": "message", "subtype": "message_changed"})(ack=ack_now, lazy=[messages.on_edit])
    app.event("message")(ack=ack_now, lazy=[messages.on_message, monitoring.on_message])
    app.action(ids.FEEDBACK)(ack=ack_now, lazy=[buttons.on_feedback])
    app.action(ids.VOTE_UP)(ack=ack_now, lazy=[buttons.on_up])
    app.action(ids.VOTE_DOWN)(ack=ack_now, lazy=[buttons.on_down])
    app.view(ids.CORRECTION_MODAL)(ack=modal.ack, lazy=[modal.on_submit])
    app.action(re.compile(ids.CLARIFY_PICK_PATTERN))(ack=ack_now, lazy=[clarify.on_pick])
    app.event("reaction_added")(ack=ack_now, lazy=[reactions.on_added])
    app.event("reaction_removed")(ack=ack_now, lazy=[reactions.on_removed])
    app.command(ids.SLASH_COMMAND)(ack=slash.ack, lazy=[slash.run])
    app.event("app_home_opened", matchers=[messages_tab])(ack=ack_now, lazy=[agent.on_messages_tab])
    app.event("app_home_opened")(ack=ack_now, lazy=[home.on_opened])
    app.shortcut(ids.CORRECT_SENTIMENT_SHORTCUT)(ack=ack_now, lazy=[monitoring.on_shortcut])
    app.view(ids.SENTIMENT_MODAL)(ack=monitoring.ack_submission, lazy=[monitoring.on_submit])
    app.event("app_uninstalled")(lifecycle.on_uninstalled)
    app.event("tokens_revoked")(lifecycle.on_tokens_revoked)
    return app
