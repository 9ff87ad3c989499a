"""`alert_*`: negative-spike alerts on watched channels (bot/monitoring/spikes.py, docs/monitoring.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AlertSettings:
    """`alert_*`: negative-spike alerts on watched channels (bot/monitoring/spikes.py)."""

    window_minutes: float = 60  # the recent window compared with the baseline
    baseline_days: float = 7  # the baseline: this long before the recent window
    min_messages: int = 20  # in the recent window
    min_baseline: int = 100  # in the baseline
    # One-sided confidence that the recent share beats the baseline (0.999: z = 3.09). High because
    # the check runs after every message, over overlapping windows: at 0.99 a week of a busy channel
    # sees a false alarm or two (measured on the airline replay, tests/monitoring/test_monitoring_replay.py).
    confidence: float = 0.999
    z: float | None = None  # a z-score; overrides confidence
    min_lift: float = 0.10  # the recent negative share must be at least this much higher
    cooldown_minutes: float = 60
