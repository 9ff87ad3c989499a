"""The weekly digest: the team's week (bot/monitoring/weekly.py) posted to `slack_digest_channel` with
its chart, once a week.

Every serving process checks from its housekeeping thread whether a digest is due: the latest
scheduled moment (`slack_digest_weekday` at `slack_digest_hour`, UTC) at or before now. The first
process to claim that moment in the store (the same claim that makes Slack's retried events run
once: store/events.py, key `digest:<date>`) posts it; the others, and the same process later, see the
claim and do nothing. A process that was down at the scheduled moment posts when it comes up, within
the same week. A failed post is logged, not retried: the next week's digest covers the weeks before.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from slack_sdk.errors import SlackApiError

from bot.slack import blocks
from bot.slack.contracts import AnswerEngine, SlackStore

log = logging.getLogger("csbot.slack")

WEEKS_SHOWN = 4


def scheduled_moment(now: dt.datetime, weekday: int, hour: int) -> dt.datetime:
    """The latest `weekday` `hour`:00 UTC at or before `now`."""
    moment = now.replace(hour=hour, minute=0, second=0, microsecond=0) - dt.timedelta(days=(now.weekday() - weekday) % 7)
    return moment if moment <= now else moment - dt.timedelta(days=7)


class WeeklyDigest:
    def __init__(self, engine: AnswerEngine, store: SlackStore, client, *, channel: str, weekday: int, hour: int,
                 clock: Callable[[], dt.datetime] | None = None):
        self.engine, self.store, self.client = engine, store, client
        self.channel, self.weekday, self.hour = channel, weekday, hour
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._done: str | None = None  # the moment this process saw claimed (no store read until the next)

    def maybe_post(self) -> bool:
        """Post this week's digest if it is due and no process has yet; True when this call posted it."""
        now = self.clock()
        moment = scheduled_moment(now, self.weekday, self.hour)
        key = f"digest:{moment:%Y-%m-%dT%H}"
        if key == self._done:
            return False
        self._done = key
        if not self.store.claim_event(key):
            return False
        self.post(moment)
        return True

    def post(self, until: dt.datetime) -> None:
        from bot.monitoring.weekly import collect_gaps, render_weekly_chart, weekly_view

        titles = dict(self.engine.catalogue().titles())
        view = weekly_view(self.store, until, weeks=WEEKS_SHOWN, titles=titles)
        gaps, _ = collect_gaps(self.store, self.engine, until - dt.timedelta(days=7), until)
        png = render_weekly_chart(view, gaps)
        try:
            post = self.client.chat_postMessage(channel=self.channel, text=blocks.weekly_text(view),
                                                blocks=blocks.weekly_blocks(view, gaps), unfurl_links=False)
            self.client.files_upload_v2(channel=self.channel, thread_ts=post["ts"], content=png,
                                        filename=f"csbot-week-{until:%Y-%m-%d}.png",
                                        title=f"The help centre, week ending {until:%Y-%m-%d}",
                                        alt_txt="Questions per week, answered and handed off, the 👍 share, "
                                                "and this week's largest content gaps")
        except SlackApiError as exc:
            log.warning("posting the weekly digest to %s failed: %s", self.channel,
                        exc.response.get("error") if exc.response is not None else exc)
