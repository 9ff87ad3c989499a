"""The app's own life cycle: `app_uninstalled` and `tokens_revoked` (of the bot token).

Either marks the workspace revoked in the store at once (in the ack, so the mark is durable when
Slack gets its 200): from then on no request from that workspace is handled and no pending inbox
item for it runs (bot/slack/middleware.py), which the log says once and /healthz lists under
`revoked_workspaces`. A restart whose bot token passes auth.test for that workspace clears the
mark (the app was reinstalled). Revoked user tokens alone change nothing: csbot uses none.
"""

from __future__ import annotations

from bot.slack.handlers import Deps, log


class Lifecycle:
    def __init__(self, deps: Deps):
        self.deps = deps

    def on_uninstalled(self, ack, body) -> None:
        self.revoke(body, "app_uninstalled")
        ack()

    def on_tokens_revoked(self, ack, body, event) -> None:
        if (event.get("tokens") or {}).get("bot"):
            self.revoke(body, "tokens_revoked")
        else:
            log.info("tokens_revoked for user tokens only in %s: csbot uses none, nothing changes", body.get("team_id"))
        ack()

    def revoke(self, body: dict, reason: str) -> None:
        team = body.get("team_id")
        if not team:
            return
        if self.deps.store.inbox.revoke(team, reason):
            log.warning("workspace %s: %s - csbot no longer posts there (restart with a valid token after "
                        "reinstalling)", team, reason)
