"""The spike detector on controlled data: the statistics, the online check against the store (with
its persisted cooldown), and the offline scan giving the same answer."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from bot.monitoring import spikes
from bot.monitoring.spikes import (
    ALERT,
    CALM,
    COOLDOWN,
    NO_BASELINE,
    TOO_FEW,
    Observation,
    SpikeConfig,
    check_channel,
    evaluate,
    scan,
    scan_store,
    wilson_lower,
    wilson_upper,
)
from store import Store
from tests.monitoring.conftest import utc

T0 = utc(2025, 3, 1, 0, 0)


def test_wilson_bounds_match_the_textbook_values():
    # Wilson score interval for 8/10 at 95% (two-sided, z = 1.96): (0.490, 0.943).
    assert wilson_lower(8, 10, 1.96) == pytest.approx(0.4902, abs=1e-3)
    assert wilson_upper(8, 10, 1.96) == pytest.approx(0.9433, abs=1e-3)
    assert wilson_lower(0, 10, 2.0) == 0.0 and wilson_upper(10, 10, 2.0) == pytest.approx(1.0)
    assert wilson_lower(5, 0, 2.0) == 0.0 and wilson_upper(0, 0, 2.0) == 1.0
    # Tighter with more data, always below the point estimate.
    assert wilson_lower(80, 100, 3.0) > wilson_lower(8, 10, 3.0)
    assert wilson_lower(800, 1000, 3.0) < 0.8 < wilson_upper(800, 1000, 3.0)


def test_evaluate_needs_counts_a_baseline_a_significant_and_a_large_enough_rise():
    cfg = SpikeConfig()
    assert evaluate("C", T0, 15, 19, 200, 1000, cfg).status == TOO_FEW  # 19 < min_messages
    assert evaluate("C", T0, 20, 20, 10, 99, cfg).status == NO_BASELINE  # 99 < min_baseline
    assert evaluate("C", T0, 18, 20, 200, 1000, cfg).status == ALERT  # 90% vs 20%
    # 40% vs 20% on 20 messages: a big rise, but 8/20 could be noise at 99.9%.
    assert evaluate("C", T0, 8, 20, 200, 1000, cfg).status == CALM
    # A huge channel: 23% vs 20% is certain, but below min_lift.
    big = evaluate("C", T0, 2300, 10000, 20000, 100000, cfg)
    assert big.lower_bound > big.baseline_upper and big.status == CALM
    assert evaluate("C", T0, 2300, 10000, 20000, 100000, SpikeConfig(min_lift=0.02)).status == ALERT
    # A thin baseline is uncertain itself: 60% vs 20% on 100 baseline messages is not enough...
    assert evaluate("C", T0, 12, 20, 20, 100, cfg).status == CALM
    # ...while the same recent share against a long baseline of 20% is.
    assert evaluate("C", T0, 15, 20, 2000, 10000, cfg).status == ALERT


def test_config_from_settings_reads_the_alert_settings(tmp_path):
    from core.settings import Settings

    def load(**fields):
        return SpikeConfig.from_settings(Settings.load(env={}, home=tmp_path, **fields))

    cfg = load(alert_window_minutes=30, alert_baseline_days=2, alert_min_messages="10", alert_cooldown_minutes=15,
               alert_z=2.0, alert_min_lift=0.2)
    assert cfg.window == dt.timedelta(minutes=30) and cfg.baseline == dt.timedelta(days=2)
    assert cfg.min_messages == 10 and cfg.cooldown == dt.timedelta(minutes=15) and cfg.min_lift == 0.2
    assert cfg.z == pytest.approx(2.0)
    assert load() == SpikeConfig()  # nothing set: the defaults, from core/settings/alerts.py
    assert load(alert_confidence=0.99).z == pytest.approx(2.326, abs=1e-3)
    env = {"CSBOT_ALERT_WINDOW_MINUTES": "15"}  # the environment names are unchanged
    assert SpikeConfig.from_settings(Settings.load(env=env, home=tmp_path)).window == dt.timedelta(minutes=15)


def synthetic(start=T0, n_base=150, base_share=0.2, n_surge=30, surge_share=0.8):
    """A channel: n_base messages over 2 days from `start` at base_share negative, an hour later n_surge
    messages over 30 minutes at surge_share negative. Negatives are spread evenly."""
    rows = []
    step = dt.timedelta(days=2) / n_base
    surge_start = start + dt.timedelta(days=2, hours=1)
    for i in range(n_base):
        negative = int((i + 1) * base_share) > int(i * base_share)
        rows.append((start + i * step, "negative" if negative else "neutral", "billing" if negative else None))
    step = dt.timedelta(minutes=30) / n_surge
    for i in range(n_surge):
        negative = int((i + 1) * surge_share) > int(i * surge_share)
        rows.append((surge_start + i * step, "negative" if negative else "positive", "late_delivery" if negative else None))
    return rows


def fill(store, rows, channel="CW"):
    for i, (when, sentiment, intent) in enumerate(rows):
        store.record_monitored_message(channel=channel, ts=f"{when.timestamp():.6f}", user=f"U{i % 7}",
                                       sentiment=sentiment, scores={sentiment: 1.0}, intent=intent,
                                       confidence=0.9, text=f"message {i} from alice@example.com")


def test_online_check_alerts_once_and_the_cooldown_survives_a_restart(tmp_path):
    path = tmp_path / "csbot.sqlite3"
    rows = synthetic()
    end = rows[-1][0]
    with Store(path, salt="s", store_message_text=True) as store:
        fill(store, rows)
        assert check_channel(store, "CW", rows[149][0]).status == TOO_FEW  # before the surge: nothing recent
        first = check_channel(store, "CW", end)
        assert first.status == ALERT and first.alert_id is not None
        assert (first.recent_n, first.recent_negative, first.baseline_n) == (30, 24, 150)
        assert first.baseline_share == pytest.approx(0.2) and first.topics == [("late_delivery", 24)]
        assert len(first.examples) == 3 and all("[EMAIL]" in e for e in first.examples)  # redacted text
        assert check_channel(store, "CW", end + dt.timedelta(minutes=1)).status == COOLDOWN
        assert check_channel(store, "OTHER", end).status == TOO_FEW  # per channel
        [stored] = store.monitoring_alerts("CW")
        assert stored["recent_negative"] == 24 and stored["details"]["baseline_n"] == 150
        assert "examples" not in stored["details"]  # message text stays in monitored_messages only
    with Store(path, salt="s") as store:  # a restarted bot
        assert check_channel(store, "CW", end + dt.timedelta(minutes=20)).status == COOLDOWN
        assert check_channel(store, "CW", end + dt.timedelta(minutes=20), claim=False).status == ALERT
        # After the cooldown a new surge alerts again.
        later = end + dt.timedelta(minutes=61)
        for i in range(30):
            when = later + dt.timedelta(seconds=i)
            store.record_monitored_message(channel="CW", ts=f"{when.timestamp():.6f}", user="U1", sentiment="negative",
                                           scores={}, intent=None, confidence=None, text=None)
        again = check_channel(store, "CW", later + dt.timedelta(seconds=29))
        assert again.status == ALERT and again.topics == [("other", 30)]
        assert len(store.monitoring_alerts("CW")) == 2


def test_concurrent_checks_raise_one_alert(store):
    rows = synthetic()
    fill(store, rows)
    results = []
    barrier = threading.Barrier(6)

    def worker():
        barrier.wait()
        results.append(check_channel(store, "CW", rows[-1][0]).status)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [ALERT] + [COOLDOWN] * 5


def test_offline_scan_finds_what_the_online_check_finds(store):
    rows = synthetic()
    observations = [Observation(t, s, spikes.topic_of(i)) for t, s, i in rows]
    offline = scan(observations, channel="CW")
    fill(store, rows[:150])
    online = []
    for when, sentiment, intent in rows[150:]:  # the bot: store each message, then check
        store.record_monitored_message(channel="CW", ts=f"{when.timestamp():.6f}", user="U1", sentiment=sentiment,
                                       scores={}, intent=intent, confidence=None, text=None)
        check = check_channel(store, "CW", when)
        if check.status == ALERT:
            online.append(check)
    assert len(offline) == len(online) == 1
    assert offline[0].now == online[0].now
    assert (offline[0].recent_n, offline[0].recent_negative, offline[0].baseline_n) == (
        online[0].recent_n, online[0].recent_negative, online[0].baseline_n)
    assert offline[0].topics == online[0].topics
    # The same from the stored history.
    [again] = scan_store(store, "CW", T0, rows[-1][0])
    assert again.now == offline[0].now
    # With every check, the rest of the surge is suppressed by the cooldown.
    statuses = [c.status for c in scan(observations, channel="CW", every_message=True)]
    assert statuses.count(ALERT) == 1 and statuses.count(COOLDOWN) >= 5


def test_the_clock_is_the_callers():
    """Nothing reads the wall clock: the same history gives the same answer whenever it is checked."""
    observations = [Observation(t, s) for t, s, _ in synthetic(start=utc(2015, 2, 19))]
    [alert] = scan(observations, channel="CW")
    assert alert.now.date() == dt.date(2015, 2, 21)
