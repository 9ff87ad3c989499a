"""The Slack-specific settings, read once from `core.settings.Settings`.

Each is a `Settings` field (env `CSBOT_<NAME>`, or the TOML file); lists are comma-separated
strings. Fields missing from an older Settings take the defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_UP_REACTIONS = ("+1", "thumbsup")
DEFAULT_DOWN_REACTIONS = ("-1", "thumbsdown")
DEFAULT_SUPPORT_MIN_CONFIDENCE = 0.6
DEFAULT_PRIORITY_NEGATIVE_THRESHOLD = 0.85
DEFAULT_SUGGESTED_PROMPTS = 4
MAX_SUGGESTED_PROMPTS = 4  # Slack's limit (assistant.threads.setSuggestedPrompts)


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
    watched_channels: frozenset[str] = frozenset()  # every message there is scored and stored, no reply
    alert_channel: str | None = None  # channel id that gets negative-spike alerts
    # A support-channel message at least this negative gets a priority hand-off (None: off).
    priority_negative_threshold: float | None = DEFAULT_PRIORITY_NEGATIVE_THRESHOLD
    status: bool = True  # the "Searching the help centre…" status in DMs and agent threads
    stream: bool = True  # stream answers in DMs and agent threads (bot/slack/streaming.py)
    stream_channels: bool = False  # also in channels (with the recipient ids Slack requires there)
    suggested_prompts: int = DEFAULT_SUGGESTED_PROMPTS  # 0: none

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
            watched_channels=csv_set(get("slack_watched_channels")),
            alert_channel=(str(get("slack_alert_channel")).strip() or None) if get("slack_alert_channel") else None,
            priority_negative_threshold=_threshold(get("priority_negative_threshold",
                                                       DEFAULT_PRIORITY_NEGATIVE_THRESHOLD)),
            status=_flag(get("slack_status", True)),
            stream=_flag(get("slack_stream", True)),
            stream_channels=_flag(get("slack_stream_channels", False)),
            suggested_prompts=max(0, min(MAX_SUGGESTED_PROMPTS, int(get("slack_suggested_prompts",
                                                                        DEFAULT_SUGGESTED_PROMPTS)))),
        )

    def channel_allowed(self, channel: str | None, channel_type: str | None = None) -> bool:
        """Direct messages are always allowed; channels only when on the allowlist (if one is set)."""
        if not self.allowed_channels or not channel:
            return True
        if channel_type == "im" or channel.startswith("D"):
            return True
        return channel in self.allowed_channels or channel in self.support_channels or channel in self.watched_channels

    def priority(self, channel: str | None, sentiment_scores: dict | None) -> bool:
        """A strongly negative message in a support channel: it gets a priority hand-off."""
        if self.priority_negative_threshold is None or channel not in self.support_channels:
            return False
        return float((sentiment_scores or {}).get("negative", 0.0)) >= self.priority_negative_threshold

    def reaction_vote(self, name: str) -> str | None:
        """'+1::skin-tone-3' -> 'up'; unknown emoji -> None."""
        base = (name or "").split("::")[0]
        if base in self.up_reactions:
            return "up"
        if base in self.down_reactions:
            return "down"
        return None


def _threshold(value) -> float | None:
    """A probability threshold; "off"/"none" (or > 1) turns the feature off."""
    if isinstance(value, str) and value.strip().lower() in ("off", "none", "false"):
        return None
    value = float(value)
    return None if value > 1 else value


def _flag(value) -> bool:
    """True/False, or a string such as "true", "0", "off"."""
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "off", "no", "")
    return bool(value)
