"""The retrain's shared rules: one rule for what is new (votes and sentiment corrections alike), one
held-out set (the sentiment update is judged on its sentiment rows), and the run state's declared
fields."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from conftest import fast_config, record

from training.feedback_data import new_feedback, normalize
from training.gate import HeldoutSet, is_sentiment_heldout
from training.sentiment_update import FALLBACK_HELDOUT, RUN_HELDOUT, update_sentiment_head


@pytest.fixture
def ticking(monkeypatch):
    """The store's clock, one second further on every call (strictly increasing times)."""
    now = [dt.datetime(2025, 3, 10, 12, 0, 0, tzinfo=dt.timezone.utc)]

    def tick() -> dt.datetime:
        now[0] += dt.timedelta(seconds=1)
        return now[0]

    monkeypatch.setattr("core.clock.utcnow", tick)


@pytest.fixture
def store(tmp_path, ticking):
    from store import Store

    with Store(tmp_path / "csbot.sqlite3", salt="test") as s:
        yield s


def test_one_rule_decides_what_is_new_votes_and_corrections_are_all_read(store):
    store.record_sentiment_correction("C1", "1.0001", "u1", "negative", "old complaint")
    record(store, "old question", "refund", "u1", "up")
    [old_vote] = store.feedback_since(None)
    store.record_training_run(status="promoted", data_until=old_vote["time"])
    record(store, "new question", "refund", "u2", "up")
    store.record_sentiment_correction("C1", "2.0001", "u2", "positive", "new praise")

    new = new_feedback(store)
    assert new.since == old_vote["time"] == store.feedback_watermark()
    assert [r["question"] for r in new.votes] == ["new question"]
    # corrections have no replay file: every run reads them all, so a trickle adds up
    assert [r["text"] for r in new.corrections] == ["old complaint", "new praise"] and new.corrections_error is None

    everything = new_feedback(store, "2000-01-01")  # --since reads further back, for every model alike
    assert [r["question"] for r in everything.votes] == ["old question", "new question"]
    assert [r["text"] for r in everything.corrections] == ["old complaint", "new praise"]
    assert new_feedback(store, corrections=False).corrections is None


def test_the_heldout_set_freezes_a_deterministic_share_of_sentiment_corrections(tmp_path):
    pairs = [(f"the RMA for ticket {i} got approved", "positive") for i in range(60)]
    heldout = HeldoutSet.load(tmp_path)
    added = heldout.add_sentiment(pairs)
    expected = [p for p in pairs if is_sentiment_heldout(p[0])]
    assert 0 < added == len(expected) < len(pairs) and heldout.sentiment_pairs() == expected
    assert heldout.add_sentiment(pairs) == 0  # frozen once
    heldout.save()
    again = HeldoutSet.load(tmp_path)
    assert again.sentiment_pairs() == expected
    assert {normalize(t) for t, _ in expected} <= again.texts()  # never trained on, by any model
    assert again.eval_rows([], builtin_oos=False) == []  # not rows of the classifier's gate


def test_the_sentiment_update_is_judged_on_the_runs_heldout_rows(store):
    rows = [{"text": f"RMA approved for order {i}", "label": "positive", "user_hash": f"u{i % 5}",
             "time": f"2025-03-10T12:00:{i:02d}Z"} for i in range(30)]
    heldout = [("RMA approved for order 3", "positive"), ("an older frozen text", "negative")]
    config = fast_config(sentiment_min_corrections=1000)  # the split is reported, nothing is trained
    judged = update_sentiment_head(store, None, None, [], store.path.with_name("x.npz"), config, corrections=rows,
                                   heldout=heldout, exclude={normalize("RMA approved for order 4")})
    assert judged["status"] == "skipped" and judged["heldout_from"] == RUN_HELDOUT
    assert judged["heldout"] == 2 and judged["train"] == 28  # neither held-out nor excluded texts are trained on

    fallback = update_sentiment_head(store, None, None, [], store.path.with_name("x.npz"), config, corrections=rows)
    held = sum(is_sentiment_heldout(r["text"]) for r in rows)
    assert fallback["heldout_from"] == FALLBACK_HELDOUT
    assert (fallback["heldout"], fallback["train"]) == (held, 30 - held)


def test_the_run_state_declares_every_field_up_front():
    from core.settings import RetrainSettings, Settings
    from training.run_state import RunState

    state = RunState.begin(Settings.load(env={}, home="/nonexistent-home"), RetrainSettings(), dry_run=True)
    assert state.rows == [] and state.report["dry_run"] is True and state.champion is None
    with pytest.raises(AttributeError):
        state.exclude_texts = set()  # a field nobody declared cannot appear part-way through a run
    assert "exclude" in {f.name for f in dataclasses.fields(RunState)}
