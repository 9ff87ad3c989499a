"""`slack_*`: the Slack app (docs/slack.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import ConfigError

SLACK_API_URL = "https://slack.com/api/"
# Slack shows at most this many suggested prompts (assistant.threads.setSuggestedPrompts); the
# default asks for all of them and bot/slack/options.py caps the setting at it.
SLACK_MAX_SUGGESTED_PROMPTS = 4


@dataclass
class SlackSettings:
    """`slack_*`: the Slack app (docs/slack.md)."""

    api_url: str = SLACK_API_URL
    bot_token: str | None = field(default=None, repr=False)  # also SLACK_BOT_TOKEN
    app_token: str | None = field(default=None, repr=False)  # also SLACK_APP_TOKEN (Socket Mode)
    signing_secret: str | None = field(default=None, repr=False)  # also SLACK_SIGNING_SECRET (HTTP mode)
    support_channels: str = ""  # comma-separated channel ids answered without a mention
    allowed_channels: str = ""  # when set, the bot answers only there (and in DMs)
    admin_users: str = ""  # user ids allowed to run admin commands (and trusted by the retrain)
    oncall_usergroup: str | None = None  # mentioned on hand-off (S0123...)
    escalation_channel: str | None = None  # hand-offs are posted there with a thread link
    up_reactions: str = "+1,thumbsup"
    down_reactions: str = "-1,thumbsdown"
    support_min_confidence: float = 0.6  # the bar for un-mentioned answers in support channels
    # Sentiment monitoring (bot/monitoring, docs/monitoring.md).
    watched_channels: str = ""  # comma-separated channel ids scored without a reply
    alert_channel: str | None = None  # where negative-spike alerts go
    # Durable intake (docs/slack.md "Inbox, stop and shedding").
    workers: int = 4  # threads per serving process taking work from the inbox
    http_threads: int = 8  # waitress threads acknowledging requests (HTTP mode)
    stop_grace_seconds: float = 20  # SIGTERM/SIGINT: time to finish running items; the rest stay queued
    busy_after_seconds: float = 3  # a question that waited longer gets the busy note, not an answer
    sentiment_max_wait_seconds: float = 120  # watched-channel scoring that waited longer is dropped
    inbox_max_age_seconds: float = 900  # after a restart, queued work younger than this is still done
    inbox_limit: int = 2000  # queued items at which new sentiment work is shed and questions get the busy note
    # Slack's AI-app surface (docs/slack.md "The agent surface").
    status: bool = True  # show "Searching the help centre…" in DMs / agent threads while the engine works
    stream: bool = True  # stream answers (chat.startStream) in DMs and agent threads; off: post them whole
    stream_channels: bool = False  # also stream answers to mentions in channels (Slack needs the recipient ids)
    # Suggested prompts on the messages tab / a new agent thread (0: none).
    suggested_prompts: int = SLACK_MAX_SUGGESTED_PROMPTS
    # Per-channel answer modes over `answer_mode`: "C0123:compose,C0456:select" (DMs: "im:compose").
    answer_modes: str = ""
    # The team's weekly digest (answer rate, hand-offs, 👍 share, top articles, content gaps, with its
    # chart) is posted to this channel once a week, at the first moment after `digest_weekday`
    # (0 = Monday … 6 = Sunday) `digest_hour` (UTC) that a serving process is up; None: no digest.
    digest_channel: str | None = None
    digest_weekday: int = 0
    digest_hour: int = 9

    def __post_init__(self):
        if not 0 <= self.digest_weekday <= 6:
            raise ConfigError(f"setting slack_digest_weekday must be 0 (Monday) to 6 (Sunday), not {self.digest_weekday}")
        if not 0 <= self.digest_hour <= 23:
            raise ConfigError(f"setting slack_digest_hour must be 0 to 23 (UTC), not {self.digest_hour}")
