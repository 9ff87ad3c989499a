"""Negative-spike detection per channel, against the channel's own baseline.

For a channel at time `now` (the lengths and bars are the `alert_*` settings, core/settings/alerts.py,
which also holds their defaults and why):

* recent window   = (now - window, now]                      (`alert_window_minutes`)
* baseline window = (now - window - baseline, now - window]  (`alert_baseline_days` before that)

A spike is declared when all of these hold:

1. the recent window has at least `min_messages` scored messages, and the baseline at least
   `min_baseline` - without a baseline there is nothing to compare with;
2. the Wilson lower confidence bound of the recent negative share is above the Wilson upper bound
   of the baseline share (both one-sided at `confidence`): the surge is very unlikely to be
   binomial noise around the channel's usual rate, and a thin baseline (a new channel) needs a
   bigger surge. The confidence is high because the check runs after every message, over
   overlapping windows;
3. the recent share is at least `min_lift` above the baseline share, so a statistically certain
   but tiny rise in a very busy channel does not page anyone.

An alert is raised for a spike unless the channel already had one within `cooldown` of `now`. The
same `evaluate` decides online (`check_channel`, once per stored message, counting from the store
and claiming the alert there, so a restart or a second process does not alert again) and offline
(`scan`, over a time-ordered history: replays, reports). No function here reads the clock: `now` is
always passed in (the Slack handler passes the message's own time).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist
from typing import Any

from core import clock
from core.answer import OUT_OF_SCOPE
from core.clock import to_iso
from core.settings import AlertSettings, Settings

NEGATIVE = "negative"
OTHER_TOPIC = "other"

# Statuses of a check.
ALERT = "alert"  # a spike, and a new alert was raised
COOLDOWN = "cooldown"  # a spike, but the channel was alerted less than `cooldown` ago
CALM = "calm"  # enough data, no spike
TOO_FEW = "too-few"  # fewer than min_messages in the recent window
NO_BASELINE = "no-baseline"  # fewer than min_baseline in the baseline window


def topic_of(intent: str | None) -> str:
    """The topic shown for a message: its KB intent; out-of-scope or unknown is "other"."""
    if not intent or intent == OUT_OF_SCOPE:
        return OTHER_TOPIC
    return str(intent)


def as_utc(value: Any) -> dt.datetime:
    """datetime (naive = UTC) / unix seconds / Slack ts / ISO string -> an aware UTC datetime:
    the store's parser (core.clock.as_utc), plus numeric strings read as unix seconds (Slack ts)."""
    if isinstance(value, str):
        try:
            return clock.as_utc(float(value.strip()))
        except ValueError:
            pass
    return clock.as_utc(value)


_ALERT = AlertSettings()  # the defaults (core/settings/alerts.py holds every one)


@dataclass(frozen=True)
class SpikeConfig:
    window: dt.timedelta = dt.timedelta(minutes=_ALERT.window_minutes)
    baseline: dt.timedelta = dt.timedelta(days=_ALERT.baseline_days)
    min_messages: int = _ALERT.min_messages
    min_baseline: int = _ALERT.min_baseline
    confidence: float = _ALERT.confidence
    min_lift: float = _ALERT.min_lift
    cooldown: dt.timedelta = dt.timedelta(minutes=_ALERT.cooldown_minutes)
    examples: int = 3
    top_topics: int = 3

    def __post_init__(self):
        if not 0.5 <= self.confidence < 1:
            raise ValueError("alert confidence must be in [0.5, 1)")
        if self.window <= dt.timedelta(0) or self.baseline <= dt.timedelta(0):
            raise ValueError("alert window and baseline must be positive")

    @property
    def z(self) -> float:
        return NormalDist().inv_cdf(self.confidence)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "SpikeConfig":
        """From `settings.alert` (alert_window_minutes, alert_baseline_days, alert_min_messages,
        alert_min_baseline, alert_confidence or alert_z (a z-score), alert_min_lift,
        alert_cooldown_minutes)."""
        alert = settings.alert
        confidence = alert.confidence if alert.z is None else NormalDist().cdf(alert.z)
        values = dict(
            window=dt.timedelta(minutes=alert.window_minutes),
            baseline=dt.timedelta(days=alert.baseline_days),
            min_messages=alert.min_messages,
            min_baseline=alert.min_baseline,
            confidence=confidence,
            min_lift=alert.min_lift,
            cooldown=dt.timedelta(minutes=alert.cooldown_minutes),
        )
        values.update(overrides)
        return cls(**values)


def wilson_lower(k: int, n: int, z: float) -> float:
    """The Wilson score lower bound of a binomial proportion k/n (one-sided, z standard errors)."""
    if n <= 0:
        return 0.0
    p = k / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / denom)


def wilson_upper(k: int, n: int, z: float) -> float:
    """The Wilson score upper bound of k/n."""
    if n <= 0:
        return 1.0
    return 1.0 - wilson_lower(n - k, n, z)


@dataclass(frozen=True)
class SpikeCheck:
    """One evaluation of one channel at one time (see the module docstring)."""

    channel: str
    now: dt.datetime
    status: str
    recent_n: int
    recent_negative: int
    baseline_n: int
    baseline_negative: int
    lower_bound: float  # Wilson lower bound of the recent share
    baseline_upper: float  # Wilson upper bound of the baseline share
    config: SpikeConfig = field(repr=False, compare=False, default_factory=SpikeConfig)
    topics: list[tuple[str, int]] = field(default_factory=list)  # top topics of the recent negatives
    examples: list[str] = field(default_factory=list)  # redacted recent negative texts (when stored)
    alert_id: int | None = None

    @property
    def alert(self) -> bool:
        return self.status == ALERT

    @property
    def recent_share(self) -> float:
        return self.recent_negative / self.recent_n if self.recent_n else 0.0

    @property
    def baseline_share(self) -> float:
        return self.baseline_negative / self.baseline_n if self.baseline_n else 0.0

    @property
    def window_start(self) -> dt.datetime:
        return self.now - self.config.window

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("config")
        data["now"] = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        data["window_start"] = self.window_start.strftime("%Y-%m-%dT%H:%M:%SZ")
        data["recent_share"] = round(self.recent_share, 4)
        data["baseline_share"] = round(self.baseline_share, 4)
        data["lower_bound"] = round(self.lower_bound, 4)
        data["baseline_upper"] = round(self.baseline_upper, 4)
        data["window_minutes"] = self.config.window.total_seconds() / 60
        data["baseline_days"] = self.config.baseline.total_seconds() / 86400
        data["topics"] = [{"topic": t, "count": c} for t, c in self.topics]
        return data


def evaluate(channel: str, now: Any, recent_negative: int, recent_n: int, baseline_negative: int,
             baseline_n: int, config: SpikeConfig) -> SpikeCheck:
    """The decision from counts alone (no cooldown): status CALM, TOO_FEW, NO_BASELINE or ALERT."""
    z = config.z
    check = SpikeCheck(channel, as_utc(now), CALM, recent_n, recent_negative, baseline_n, baseline_negative,
                       wilson_lower(recent_negative, recent_n, z), wilson_upper(baseline_negative, baseline_n, z),
                       config)
    if recent_n < config.min_messages:
        return replace(check, status=TOO_FEW)
    if baseline_n < config.min_baseline:
        return replace(check, status=NO_BASELINE)
    if check.lower_bound > check.baseline_upper and check.recent_share - check.baseline_share >= config.min_lift:
        return replace(check, status=ALERT)
    return check


def _top(counter: Counter, n: int) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


# ----- online: one channel, from the store ---------------------------------------------------------

def check_channel(store, channel: str, now: Any, config: SpikeConfig | None = None, *,
                  claim: bool = True) -> SpikeCheck:
    """Evaluate `channel` at `now` from the monitored messages in the store.

    With `claim` (the default) a spike becomes a persisted alert in the store's monitoring_alerts
    table - atomically, only if the channel had none within `config.cooldown` of `now` - and the
    result's status is ALERT (new, `alert_id` set) or COOLDOWN. With claim=False nothing is written
    and a spike is reported as ALERT.
    """
    config = config or SpikeConfig()
    now = as_utc(now)
    start = now - config.window
    recent = store.monitored_sentiment_counts(channel, start, now)
    baseline = store.monitored_sentiment_counts(channel, start - config.baseline, start)
    check = evaluate(channel, now, recent.get(NEGATIVE, 0), sum(recent.values()),
                     baseline.get(NEGATIVE, 0), sum(baseline.values()), config)
    if not check.alert:
        return check
    topics, examples = Counter(), []
    end = to_iso(now)
    for row in store.monitored_messages(channel, since=start):
        if row["time"] > end or row.get("sentiment") != NEGATIVE:
            continue
        topics[topic_of(row.get("intent"))] += 1
        if row.get("text"):
            examples.append(row["text"])
    check = replace(check, topics=_top(topics, config.top_topics),
                    examples=examples[-config.examples:][::-1] if config.examples else [])
    if not claim:
        return check
    details = check.to_json()
    details.pop("examples", None)  # message text stays in monitored_messages only (purge / forget)
    alert_id = store.claim_monitoring_alert(channel, now, config.cooldown, details)
    if alert_id is None:
        return replace(check, status=COOLDOWN)
    return replace(check, alert_id=alert_id)


# ----- offline: a time-ordered history -------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    """One scored message of a history to scan."""

    time: dt.datetime
    sentiment: str
    topic: str = OTHER_TOPIC
    text: str | None = None


def observations(rows: Iterable[dict]) -> list[Observation]:
    """Store rows (monitored_messages) -> observations, in time order."""
    found = [Observation(as_utc(r["time"]), r.get("sentiment") or "", topic_of(r.get("intent")), r.get("text"))
             for r in rows]
    found.sort(key=lambda o: o.time)
    return found


def scan(history: Iterable[Observation], config: SpikeConfig | None = None, *, channel: str = "",
         every_message: bool = False, start: Any = None) -> list[SpikeCheck]:
    """Replay a channel's time-ordered history and evaluate after each message, exactly as the bot
    does online (same windows, same decision, same cooldown). Returns the alerts raised (status
    ALERT), or with `every_message` every check (COOLDOWN for spikes suppressed by the cooldown).
    Checks before `start` are not evaluated (their messages still fill the windows).

    Messages with the same time are all counted before the check at that time, as in the store.
    """
    config = config or SpikeConfig()
    items = list(history)
    if any(b.time < a.time for a, b in zip(items, items[1:])):
        items.sort(key=lambda o: o.time)
    start = as_utc(start) if start is not None else None
    recent: deque[Observation] = deque()
    base: deque[Observation] = deque()
    recent_neg = base_neg = 0
    last_alert: dt.datetime | None = None
    results: list[SpikeCheck] = []
    i = 0
    while i < len(items):
        now = items[i].time
        while i < len(items) and items[i].time == now:  # everything stored up to `now`
            recent.append(items[i])
            recent_neg += items[i].sentiment == NEGATIVE
            i += 1
        window_start = now - config.window
        while recent and recent[0].time <= window_start:  # (now - window, now]
            moved = recent.popleft()
            recent_neg -= moved.sentiment == NEGATIVE
            base.append(moved)
            base_neg += moved.sentiment == NEGATIVE
        while base and base[0].time <= window_start - config.baseline:
            base_neg -= base.popleft().sentiment == NEGATIVE
        if start is not None and now < start:
            continue
        check = evaluate(channel, now, recent_neg, len(recent), base_neg, len(base), config)
        if check.alert:
            if last_alert is not None and abs(now - last_alert) < config.cooldown:
                check = replace(check, status=COOLDOWN)
            else:
                last_alert = now
                negatives = [o for o in recent if o.sentiment == NEGATIVE]
                topics = _top(Counter(o.topic for o in negatives), config.top_topics)
                texts = [o.text for o in negatives if o.text][-config.examples:][::-1] if config.examples else []
                check = replace(check, topics=topics, examples=texts)
        if every_message or check.alert:
            results.append(check)
    return results


def scan_store(store, channel: str, since: Any, until: Any, config: SpikeConfig | None = None) -> list[SpikeCheck]:
    """The alerts `scan` finds in the stored history of `channel` between `since` and `until`
    (the baseline before `since` is read too)."""
    config = config or SpikeConfig()
    since, until = as_utc(since), as_utc(until)
    end = to_iso(until)
    rows = [r for r in store.monitored_messages(channel, since=since - config.window - config.baseline)
            if r["time"] <= end]
    return scan(observations(rows), config, channel=channel, start=since)
