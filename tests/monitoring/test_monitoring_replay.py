"""Replaying a real stream in time order raises the alert where the negative
surge is, and not elsewhere; the cooldown holds.

The stream is Twitter US Airline Sentiment (../shared/data/twitter_airline_sentiment/all.csv,
14,640 tweets to six US airlines, 16-24 Feb 2015, `tweet_created` kept - minute resolution, read
as UTC), one watched channel per airline. The detector runs with its defaults (last 60 min against
the 7 days before, at least 20 recent and 100 baseline messages, Wilson bounds at 99.9%, lift of at
least 10 points, 60-min cooldown) over the human sentiment labels - the test is about the detector
on a real time-ordered stream; `test_engine_scores_a_real_slice` runs the real engine on a slice.

Where the surges are (per-day negative share from the labels; see the module's asserts):
* Southwest, Sat 21 Feb: 69% negative (370 tweets) against 38%, 40%, 41% on the three days before;
  13:00-17:00 runs at 77-90% (Customer Service Issue and Cancelled Flight complaints).
* Delta, Sun 22 Feb: 62% negative (408 tweets) against 36-48% on the days before; 10:00 and
  14:00-18:00 are the worst hours (Late Flight complaints).
Two short bursts also alert, and are real when read: Delta 19 Feb 07:00-08:00 (29 of 38 negative:
customers whose flights were cancelled without notice - the "Delta" rows are @JetBlue tweets in
this data set) and Southwest 24 Feb 08:50-09:46 (31 of 39 negative, delays and a stuck flight at
Midway); and Delta 17 Feb 16:18-17:18 (19 of 25 against a first day's 32%).
Calm everywhere else: US Airways is always ~75% negative, United ~67%, Virgin America and American
have no baseline worth the name (American's tweets start on 22 Feb) - none of them alerts.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest

from bot.monitoring.spikes import ALERT, COOLDOWN, Observation, SpikeConfig, scan, topic_of
from bot.monitoring.watch import replay, slack_ts_for
from tests.monitoring.conftest import by_airline, utc

D = dt.date
HOUR = dt.timedelta(hours=1)


def observations(rows):
    """As the store keeps them: unique times (ts = the second + a microsecond counter)."""
    return [Observation(dt.datetime.fromtimestamp(float(ts), dt.timezone.utc), r.label, topic_of(r.topic))
            for r, ts in zip(rows, slack_ts_for(rows))]


@pytest.fixture(scope="module")
def alerts_by_airline(airline_rows):
    found = {}
    for airline in sorted({r.extra["airline"] for r in airline_rows}):
        found[airline] = scan(observations(by_airline(airline_rows, airline)), SpikeConfig(), channel=airline)
    return found


def test_the_surges_are_where_the_labels_say(airline_rows):
    """The ground truth the other tests rely on, computed from the data itself."""
    def share(airline, day):
        rows = [r for r in by_airline(airline_rows, airline) if r.time.date() == day]
        return sum(r.label == "negative" for r in rows) / len(rows)

    assert share("Southwest", D(2015, 2, 21)) > 0.65
    assert all(share("Southwest", D(2015, 2, d)) < 0.42 for d in (18, 19, 20))
    assert share("Delta", D(2015, 2, 22)) > 0.6
    assert all(share("Delta", D(2015, 2, d)) < 0.49 for d in (18, 19, 20, 21, 23))


def test_alerts_fire_in_the_surges(alerts_by_airline):
    southwest = [a.now for a in alerts_by_airline["Southwest"]]
    assert [t for t in southwest if utc(2015, 2, 21, 6) <= t < utc(2015, 2, 21, 22)]
    delta = [a.now for a in alerts_by_airline["Delta"]]
    assert [t for t in delta if t.date() == D(2015, 2, 22)]
    first = next(a for a in alerts_by_airline["Southwest"] if a.now.date() == D(2015, 2, 21))
    assert first.recent_n >= 20 and first.recent_share > 0.75 and first.baseline_share < 0.5
    assert first.lower_bound > first.baseline_upper
    assert "Cancelled Flight" in [t for t, _ in first.topics]  # the real complaint reasons as topics
    assert first.topics[0] == ("Customer Service Issue", 8)


def test_no_alerts_elsewhere(alerts_by_airline):
    days = {airline: {a.now.date() for a in alerts} for airline, alerts in alerts_by_airline.items()}
    assert days == {
        "American": set(),
        "Delta": {D(2015, 2, 17), D(2015, 2, 19), D(2015, 2, 22)},
        "Southwest": {D(2015, 2, 21), D(2015, 2, 24)},
        "US Airways": set(),
        "United": set(),
        "Virgin America": set(),
    }
    # Southwest's calm days before its surge, and Delta's calm day after its surge.
    southwest = [a.now for a in alerts_by_airline["Southwest"]]
    assert not [t for t in southwest if utc(2015, 2, 17, 12) <= t < utc(2015, 2, 21, 6)]
    assert not [a for a in alerts_by_airline["Delta"] if a.now.date() in (D(2015, 2, 20), D(2015, 2, 21), D(2015, 2, 23))]


def test_the_cooldown_holds(airline_rows, alerts_by_airline):
    for alerts in alerts_by_airline.values():
        for earlier, later in zip(alerts, alerts[1:]):
            assert later.now - earlier.now >= HOUR
    # Through Southwest's surge the detector sees a spike after message after message, and alerts
    # once per cooldown.
    checks = scan(observations(by_airline(airline_rows, "Southwest")), SpikeConfig(), channel="Southwest",
                  every_message=True)
    surge = [c for c in checks if utc(2015, 2, 21, 13) <= c.now < utc(2015, 2, 21, 17)]
    assert sum(c.status == COOLDOWN for c in surge) >= 20
    assert sum(c.status == ALERT for c in surge) == 2
    longer = scan(observations(by_airline(airline_rows, "Southwest")), SpikeConfig(cooldown=6 * HOUR),
                  channel="Southwest")
    assert [a.now.date() for a in longer] == [D(2015, 2, 21), D(2015, 2, 24)]


def test_online_replay_through_the_store_alerts_where_the_offline_scan_does(airline_rows, store):
    """The bot's path: store each tweet, check the channel at its time, alerts claimed in the store."""
    rows = by_airline(airline_rows, "Southwest", utc(2015, 2, 20), utc(2015, 2, 21, 15))
    config = SpikeConfig(baseline=dt.timedelta(days=1))
    online = replay(None, store, rows, "CSW", config=config)
    offline = scan(observations(rows), config, channel="CSW")
    assert [a.now for a in online] == [a.now for a in offline]
    assert [a.now for a in online if a.now >= utc(2015, 2, 21, 13)]
    assert [a["time"] for a in store.monitoring_alerts("CSW")] == [
        a.now.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for a in online]
    assert all(a.examples for a in online)  # this store keeps (redacted) text
    by_topic = defaultdict(int)
    for row in store.monitored_messages("CSW"):
        by_topic[row["intent"]] += row["sentiment"] == "negative"
    assert by_topic["Cancelled Flight"] > 0


@pytest.mark.slow  # builds the demo model once per session (about a minute on 2 cores)
def test_engine_scores_a_real_slice(demo_home, airline_rows):
    """The real engine (the demo model's sentiment head) on held-out tweets only - the dev and test
    splits, since the head was trained on the airline train split: Southwest from noon on 17 Feb to
    the end of its surge day, 21 Feb (312 tweets). With a fifth of the traffic the windows are wider
    (12 hours against 3 days, 99% bounds); on the human labels this alerts on 21 Feb only. The
    engine's own labels must carry the surge the same way.

    On the torch runtime, which the head was trained on. The demo version serves ONNX int8, whose
    sentiment labels agree with torch on 96 % of this slice (98.5 % of Southwest's tweets with the
    base encoder, with the same negative share); on this thin slice that is enough to keep the int8
    labels under the 99 % bound (docs/benchmarks.md "Encoder runtimes"), so the int8 engine is checked
    for the surge itself."""
    from core.settings import Settings
    from serving.engine import Engine

    held_out = [r for r in by_airline(airline_rows, "Southwest", utc(2015, 2, 17, 12), utc(2015, 2, 22))
                if r.extra["suggested_split"] != "train"]
    texts = [r.text for r in held_out]
    int8 = Engine(Settings.load(env={}, home=demo_home))
    assert int8.runtime == "onnx-int8"
    int8_labels = [a.sentiment for a in int8.answer_batch(texts)]
    engine = Engine(Settings.load(env={}, home=demo_home, runtime="torch"))
    answers = engine.answer_batch(texts)
    assert sum(a.sentiment == b for a, b in zip(answers, int8_labels)) / len(texts) >= 0.95
    surge_day = [r.time.date() == D(2015, 2, 21) for r in held_out]

    def negative_share(on_surge_day: bool, labels) -> float:
        picked = [label for label, s in zip(labels, surge_day) if s == on_surge_day]
        return picked.count("negative") / len(picked)

    for labels in ([a.sentiment for a in answers], int8_labels):
        assert negative_share(True, labels) > negative_share(False, labels) + 0.15
    observed = [Observation(r.time, a.sentiment, topic_of(a.intent)) for r, a in zip(held_out, answers)]
    config = SpikeConfig(window=12 * HOUR, baseline=dt.timedelta(days=3), confidence=0.99)
    gold = scan([Observation(r.time, r.label) for r in held_out], config, channel="CSW")
    assert gold and all(a.now.date() == D(2015, 2, 21) for a in gold)
    alerts = scan(observed, config, channel="CSW")
    assert alerts and all(a.now.date() == D(2015, 2, 21) for a in alerts)
