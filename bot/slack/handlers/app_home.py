"""The App Home tab: the same status as `/csbot status`, plus the sentiment-monitoring summary of
the watched channels (last 7 days) and, for admins, the team's week with its content gaps
(bot/monitoring/weekly.py), refreshed each time the tab is opened."""

from __future__ import annotations

import datetime as dt

from bot.slack import blocks
from bot.slack.handlers import Deps, log


def collect_status(engine, store) -> dict:
    """Model version, KB size, last retrain (with metrics) and feedback counts."""
    catalogue = engine.catalogue()
    status = {
        "model_version": catalogue.model_version,
        "articles": len(catalogue.articles),
        "intents": len(catalogue.intents),
        "last_training_run": None,
        "counts": {},
    }
    try:
        status["last_training_run"] = store.last_training_run(any_status=True)  # promoted or rejected: both worth seeing
        status["counts"] = store.counts()
    except Exception as exc:  # noqa: BLE001 - show the model part even if the store is unavailable
        log.warning("store status unavailable: %s", exc)
    return status


class AppHome:
    def __init__(self, deps: Deps):
        self.deps = deps

    def on_opened(self, event, client) -> None:
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        status = collect_status(self.deps.engine, self.deps.store)
        status["monitoring"] = self.monitoring_summary()
        if event["user"] in self.deps.options.admin_users:
            status["weekly"] = self.weekly_summary()
        client.views_publish(user_id=event["user"], view=blocks.home_view(status))

    def weekly_summary(self, now: dt.datetime | None = None) -> tuple[dict, list] | None:
        """This week and the one before, and this week's content gaps (admins see them on the Home tab)."""
        from bot.monitoring.weekly import collect_gaps, weekly_view

        now = now or dt.datetime.now(dt.timezone.utc)
        try:
            titles = dict(self.deps.engine.catalogue().titles())
            view = weekly_view(self.deps.store, now, weeks=2, titles=titles)
            gaps, _ = collect_gaps(self.deps.store, self.deps.engine, now - dt.timedelta(days=7), now)
            return view, gaps
        except Exception as exc:  # noqa: BLE001 - the Home tab still shows the rest
            log.warning("weekly summary unavailable: %s", exc)
            return None

    def monitoring_summary(self, now: dt.datetime | None = None) -> list[dict] | None:
        from bot.monitoring.report import channel_summaries

        try:
            return channel_summaries(self.deps.store, self.deps.options.watched_channels,
                                     now or dt.datetime.now(dt.timezone.utc))
        except Exception as exc:  # noqa: BLE001 - the Home tab still shows the rest
            log.warning("monitoring summary unavailable: %s", exc)
            return None
