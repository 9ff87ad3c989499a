"""The Slack-specific settings, read once from `bot.config.Settings`.

Each is a `Settings` field (env `CSBOT_<NAME>`, or the TOML file); lists are comma-separated
strings. Fields missing from an older Settings take the defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_UP_REACTIONS = ("+1", "thumbsup")
DEFAULT_DOWN_REACTIONS = ("-1", "thumbsdown")
DEFAULT_SUPPORT_MIN_CONFIDENCE = 0.6


def csv_set(value) -> frozenset[str]:
    """'C1, C2' / ['C1', 'C2'] / "['C1', 'C2']" / None -> {'C1', 'C2'}; colons around emoji names
    are dropped."""
    if value is None:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else list(value)
    cleaned = (str(item).strip().strip("[]'\" ").strip(":") for item in items)
    return frozenset(item for item in cleaned if item)


@dataclass(frozen=True)
class SlackOptions:
    support_channels: frozenset[str] = frozenset()  # every message there may be answered
    allowed_channels: frozenset[str] = frozenset()  # empty: every channel the bot is in
    admin_users: frozenset[str] = frozenset()  # user ids allowed to run admin sub-commands
    oncall_usergroup: str | None = None  # subteam id (S…) mentioned on hand-offs
    escalation_channel: str | None = None  # channel id that gets a link to handed-off threads
    up_reactions: frozenset[str] = frozenset(DEFAULT_UP_REACTIONS)
    down_reactions: frozenset[str] = frozenset(DEFAULT_DOWN_REACTIONS)
    support_min_confidence: float = DEFAULT_SUPPORT_MIN_CONFIDENCE

    @classmethod
    def from_settings(cls, settings) -> "SlackOptions":
        def get(name, default=None):
            value = getattr(settings, name, None)
            return default if value is None or value == "" else value

        return cls(
            support_channels=csv_set(get("slack_support_channels")),
            allowed_channels=csv_set(get("slack_allowed_channels")),
            admin_users=csv_set(get("slack_admin_users")),
            oncall_usergroup=(str(get("slack_oncall_usergroup")).strip() or None) if get("slack_oncall_usergroup") else None,
            escalation_channel=(str(get("slack_escalation_channel")).strip() or None) if get("slack_escalation_channel") else None,
            up_reactions=csv_set(get("slack_up_reactions", DEFAULT_UP_REACTIONS)),
            down_reactions=csv_set(get("slack_down_reactions", DEFAULT_DOWN_REACTIONS)),
            support_min_confidence=float(get("slack_support_min_confidence", DEFAULT_SUPPORT_MIN_CONFIDENCE)),
        )

    def channel_allowed(self, channel: str | None, channel_type: str | None = None) -> bool:
        """Direct messages are always allowed; channels only when on the allowlist (if one is set)."""
        if not self.allowed_channels or not channel:
            return True
        if channel_type == "im" or channel.startswith("D"):
            return True
        return channel in self.allowed_channels or channel in self.support_channels

    def reaction_vote(self, name: str) -> str | None:
        """'+1::skin-tone-3' -> 'up'; unknown emoji -> None."""
        base = (name or "").split("::")[0]
        if base in self.up_reactions:
            return "up"
        if base in self.down_reactions:
            return "down"
        return None
