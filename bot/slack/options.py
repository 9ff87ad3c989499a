"""The Slack options the handlers read: `settings.slack` (core/settings/, which holds every
default) parsed once into sets and thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import ANSWER_MODES, SLACK_MAX_SUGGESTED_PROMPTS, ServingSettings, Settings, SlackSettings

_DEFAULTS = SlackSettings()


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
    up_reactions: frozenset[str] = csv_set(_DEFAULTS.up_reactions)
    down_reactions: frozenset[str] = csv_set(_DEFAULTS.down_reactions)
    support_min_confidence: float = _DEFAULTS.support_min_confidence
    watched_channels: frozenset[str] = frozenset()  # every message there is scored and stored, no reply
    alert_channel: str | None = None  # channel id that gets negative-spike alerts
    # A support-channel message at least this negative gets a priority hand-off (None: off).
    priority_negative_threshold: float | None = ServingSettings.priority_negative_threshold
    status: bool = _DEFAULTS.status  # the "Searching the help centre…" status in DMs and agent threads
    stream: bool = _DEFAULTS.stream  # stream answers in DMs and agent threads (bot/slack/streaming.py)
    stream_channels: bool = _DEFAULTS.stream_channels  # also in channels (with the recipient ids Slack requires)
    suggested_prompts: int = _DEFAULTS.suggested_prompts  # 0: none
    answer_mode: str = ServingSettings.answer_mode  # the answer_mode setting: one of ANSWER_MODES
    answer_modes: tuple[tuple[str, str], ...] = ()  # per channel ("im" for DMs): (channel, mode)

    @classmethod
    def from_settings(cls, settings: Settings) -> "SlackOptions":
        slack = settings.slack
        return cls(
            support_channels=csv_set(slack.support_channels),
            allowed_channels=csv_set(slack.allowed_channels),
            admin_users=csv_set(slack.admin_users),
            oncall_usergroup=_blank_none(slack.oncall_usergroup),
            escalation_channel=_blank_none(slack.escalation_channel),
            up_reactions=csv_set(slack.up_reactions),
            down_reactions=csv_set(slack.down_reactions),
            support_min_confidence=float(slack.support_min_confidence),
            watched_channels=csv_set(slack.watched_channels),
            alert_channel=_blank_none(slack.alert_channel),
            priority_negative_threshold=_threshold(settings.priority_negative_threshold),
            status=bool(slack.status),
            stream=bool(slack.stream),
            stream_channels=bool(slack.stream_channels),
            suggested_prompts=max(0, min(SLACK_MAX_SUGGESTED_PROMPTS, int(slack.suggested_prompts))),
            answer_mode=settings.answer_mode,
            answer_modes=channel_modes(slack.answer_modes),
        )

    def mode_for(self, channel: str | None, dm: bool = False) -> str:
        """The answer mode of a channel: its own (slack_answer_modes; "im" for DMs), else answer_mode."""
        modes = dict(self.answer_modes)
        return modes.get(channel or "", modes.get("im") if dm else None) or self.answer_mode

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


def channel_modes(value: str | None) -> tuple[tuple[str, str], ...]:
    """"C1:compose, im:select" -> (("C1", "compose"), ("im", "select")); a bad entry is a ConfigError."""
    from core.errors import ConfigError

    pairs = []
    for item in csv_set(value):
        channel, sep, mode = item.partition(":")
        if not sep or mode.strip() not in ANSWER_MODES or not channel.strip():
            raise ConfigError(f"setting slack_answer_modes: {item!r} is not CHANNEL:{'|'.join(ANSWER_MODES)}")
        pairs.append((channel.strip(), mode.strip()))
    return tuple(sorted(pairs))


def _blank_none(value: str | None) -> str | None:
    return (str(value).strip() or None) if value else None


def _threshold(value) -> float | None:
    """A probability threshold; "off"/"none" (or > 1) turns the feature off."""
    if isinstance(value, str) and value.strip().lower() in ("off", "none", "false"):
        return None
    value = float(value)
    return None if value > 1 else value

