"""Sentiment monitoring in Slack: watched channels, spike alerts, the "Correct sentiment" shortcut.

* Every message in a watched channel (`slack_watched_channels`) is scored - sentiment and topic
  (the engine's intent) - and stored, without a reply (bot.monitoring.watch). After each message
  the channel is checked for a negative spike at the message's time; a new alert (not within the
  cooldown, which is kept in the store so a restart does not re-alert) is posted to
  `slack_alert_channel` with counts, recent vs baseline share, top topics and up to 3 redacted
  examples (only when `store_message_text` is on).
* The message shortcut "Correct sentiment" opens a modal to pick the message's right sentiment;
  the submission is stored (`Store.record_sentiment_correction`, event id `view:<view id>`) for the
  nightly retrain, and confirmed privately.

Listeners ack at once; everything here runs in lazy listeners. Scoring is the first work shed
when the inbox backs up (bot/slack/workers.py).
"""

from __future__ import annotations

import json

from bot.monitoring.spikes import SpikeConfig
from bot.monitoring.watch import alert_summary, watch_message
from bot.slack import blocks, ids
from bot.slack.handlers import SENTIMENT, Deps, log, work
from core.answer import SENTIMENT_LABELS
from core.errors import UserError
from core.text import clean_text

WATCHED_SUBTYPES = (None, "thread_broadcast", "file_share")


class Monitoring:
    def __init__(self, deps: Deps, config: SpikeConfig | None = None):
        self.deps = deps
        self.config = config or SpikeConfig()

    # ----- watched channels ------------------------------------------------------------------------
    @work(SENTIMENT)
    def on_message(self, body, event, client) -> None:
        """Lazy: score and store a watched channel's message; post an alert on a new spike."""
        channel = event.get("channel")
        if channel not in self.deps.options.watched_channels or event.get("subtype") not in WATCHED_SUBTYPES:
            return
        text = clean_text(event.get("text"))  # as the engine reads it, and storable
        if not event.get("ts") or not text.strip():  # e.g. a file without a comment
            return
        result = watch_message(self.deps.engine, self.deps.store, channel=channel, ts=event["ts"],
                               user=event.get("user"), text=text, workspace=body.get("team_id"),
                               config=self.config)
        if result.alert:
            self.post_alert(client, result.check)

    def post_alert(self, client, check) -> str | None:
        target = self.deps.options.alert_channel
        summary = alert_summary(check, text_stored=self.deps.store.store_message_text)
        if not target:
            log.warning("negative spike in %s (%d/%d negative) but no slack_alert_channel is set", check.channel,
                        check.recent_negative, check.recent_n)
            return None
        response = client.chat_postMessage(channel=target, text=blocks.spike_alert_text(summary),
                                           blocks=blocks.spike_alert_blocks(summary), unfurl_links=False,
                                           unfurl_media=False)
        return response.get("ts")

    # ----- "Correct sentiment" ---------------------------------------------------------------------
    def on_shortcut(self, body, client) -> None:
        """Lazy: open the correction modal for the message the shortcut was used on."""
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id")
        ts = message.get("ts") or body.get("message_ts")
        if not channel or not ts or not body.get("trigger_id"):
            return
        context = {"channel": channel, "ts": ts, "thread_ts": message.get("thread_ts") or ts}
        view = blocks.sentiment_correction_modal(text=message.get("text") or "",
                                                 current=self.stored_label(channel, ts), context=context)
        client.views_open(trigger_id=body["trigger_id"], view=view)

    def stored_label(self, channel: str, ts: str) -> str | None:
        """The sentiment csbot stored for the message, if it was watched."""
        row = self.deps.store.monitored_message(channel, ts)
        return row.get("sentiment") if row else None

    def ack_submission(self, ack, view) -> None:
        if read_label(view) is None:
            ack(response_action="errors", errors={ids.SENTIMENT_LABEL_BLOCK: "Pick the right sentiment."})
        else:
            ack()

    def on_submit(self, body, view, client) -> None:
        """Lazy: store the correction and thank the user privately."""
        label = read_label(view)
        try:
            context = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            context = {}
        user = (body.get("user") or {}).get("id")
        channel, ts = context.get("channel"), context.get("ts")
        if label is None or not channel or not ts:
            return
        try:
            stored = self.deps.store.record_sentiment_correction(
                channel, ts, user, label, context.get("text"), origin="modal", event_id=f"view:{view.get('id')}",
                workspace=(body.get("team") or {}).get("id"))
        except UserError as exc:
            log.info("sentiment correction for %s/%s rejected: %s", channel, ts, exc)
            return
        if stored and user:
            try:
                client.chat_postEphemeral(channel=channel, user=user, thread_ts=context.get("thread_ts"),
                                          text=f"Thanks! I've noted that this message is *{label}*; "
                                               "the next retrain will learn from it.")
            except Exception as exc:  # noqa: BLE001 - the correction is stored; the thank-you is optional
                log.info("could not confirm the sentiment correction to %s: %s", user, exc)


def read_label(view: dict) -> str | None:
    values = (view.get("state") or {}).get("values") or {}
    option = ((values.get(ids.SENTIMENT_LABEL_BLOCK) or {}).get(ids.SENTIMENT_LABEL) or {}).get("selected_option") or {}
    value = option.get("value")
    return value if value in SENTIMENT_LABELS else None


