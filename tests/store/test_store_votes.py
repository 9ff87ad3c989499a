"""Votes: last write wins, retraction, the daily cap, replayed Slack events, unknown answer ids,
corrections and the feedback the retrain reads."""

from __future__ import annotations

import datetime as dt

import pytest

from core.errors import UserError
from store import InvalidVoteError, UnknownAnswerError, parse_vote


@pytest.fixture
def answered(store, answer_factory):
    a = answer_factory()
    store.record_answer(a, user="U_ASKER", channel="C1", thread="1700000000.1")
    return a.answer_id


def test_last_write_wins_per_answer_and_user(store, answered):
    first = store.record_vote(answered, "up", user="U1", origin="button")
    second = store.record_vote(answered, "down", user="U1", origin="reaction", intent="billing")
    assert first.stored and second.stored
    assert second.feedback_id == first.feedback_id and second.previous == "up"
    store.record_vote(answered, "up", user="U2", origin="button")
    rows = store.feedback_since()
    assert [(r["vote"], r["origin"], r["correct_intent"]) for r in rows] == [
        ("down", "reaction", "billing"),
        ("up", "button", None),
    ]
    assert store.get_answer(answered)["votes"] == {"up": 1, "down": 1}


def test_retraction_removes_the_vote(store, answered):
    store.record_vote(answered, "down", user="U1", origin="button", doc_id="kb-7")
    result = store.record_vote(answered, "retract", user="U1", origin="button")
    assert result.stored and result.previous == "down"
    assert store.feedback_since() == []
    assert store.get_answer(answered)["votes"] == {"up": 0, "down": 0}
    (row,) = store.feedback_since(include_retracted=True)
    assert row["vote"] == "retracted" and row["correct_doc_id"] is None
    # Voting again after a retraction counts again.
    assert store.record_vote(answered, "up", user="U1", origin="button").stored
    assert [r["vote"] for r in store.feedback_since()] == ["up"]


def test_retracting_nothing_is_reported_not_stored(store, answered):
    assert store.record_vote(answered, "retract", user="U1", origin="button").status == "no-vote"
    assert store.counts()["feedback"] == 0
    with pytest.raises(InvalidVoteError, match="needs the user"):
        store.record_vote(answered, "retract", user=None, origin="cli")
    with pytest.raises(InvalidVoteError, match="cannot carry a correction"):
        store.record_vote(answered, "retract", user="U1", origin="cli", intent="x")


def test_anonymous_votes_share_one_identity_per_answer(store, answered):
    store.record_vote(answered, "up", user=None, origin="cli")
    store.record_vote(answered, "down", user=None, origin="cli")
    (row,) = store.feedback_since()
    assert row["vote"] == "down" and row["user_hash"] is None


def test_daily_cap_per_user(make_store, answer_factory, clock):
    store = make_store(salt="s", daily_vote_cap=3)
    ids = [answer_factory().answer_id for _ in range(6)]
    for i in ids:
        store.record_answer(answer_factory(i))
    statuses = [store.record_vote(i, "up", user="U_FLOOD", origin="button").status for i in ids[:5]]
    assert statuses == ["stored", "stored", "stored", "capped", "capped"]
    # Changing or retracting an existing vote is not a new vote: always allowed.
    assert store.record_vote(ids[0], "down", user="U_FLOOD", origin="reaction").stored
    assert store.record_vote(ids[1], "retract", user="U_FLOOD", origin="reaction").stored
    # Other users, anonymous CLI votes and bulk imports are not affected.
    assert store.record_vote(ids[4], "up", user="U_OTHER", origin="button").stored
    assert store.record_vote(ids[4], "up", user=None, origin="cli").stored
    assert store.record_vote(ids[5], "up", user="U_FLOOD", origin="import").stored
    # A new UTC day resets the cap.
    clock.advance(dt.timedelta(days=1))
    assert store.record_vote(ids[3], "up", user="U_FLOOD", origin="button").stored
    store.close()


def test_cap_can_be_disabled(make_store, answer_factory):
    with make_store(salt="s", daily_vote_cap=0) as store:
        for _ in range(5):
            a = answer_factory()
            store.record_answer(a)
            assert store.record_vote(a.answer_id, "up", user="U1", origin="button").stored


def test_replayed_slack_event_is_a_duplicate(store, answered, make_store):
    assert store.record_vote(answered, "up", user="U1", origin="button", event_id="Ev001").stored
    replay = store.record_vote(answered, "down", user="U1", origin="button", event_id="Ev001")
    assert replay.status == "duplicate"
    assert store.feedback_since()[0]["vote"] == "up"
    store.close()
    with make_store() as reopened:  # survives a restart
        assert reopened.record_vote(answered, "down", user="U1", origin="button", event_id="Ev001").status == "duplicate"


def test_capped_vote_still_claims_its_event(make_store, answer_factory):
    with make_store(salt="s", daily_vote_cap=1) as store:
        a, b = answer_factory(), answer_factory()
        store.record_answer(a)
        store.record_answer(b)
        store.record_vote(a.answer_id, "up", user="U1", origin="button", event_id="E1")
        assert store.record_vote(b.answer_id, "up", user="U1", origin="button", event_id="E2").status == "capped"
        assert store.record_vote(b.answer_id, "up", user="U1", origin="button", event_id="E2").status == "duplicate"


def test_claim_event_is_true_once(store):
    assert store.claim_event("Ev42") is True
    assert store.claim_event("Ev42") is False
    assert store.claim_event("Ev43") is True


def test_claim_event_and_vote_event_ids_do_not_collide(store, answered):
    assert store.claim_event("Ev7")  # e.g. the app claimed the block_actions event
    assert store.record_vote(answered, "up", user="U1", origin="button", event_id="Ev7").stored


def test_unknown_answer_is_a_clear_user_error(store):
    with pytest.raises(UnknownAnswerError) as info:
        store.record_vote("no-such-answer", "up", user="U1", origin="button", event_id="Ev9")
    assert isinstance(info.value, UserError)
    assert "no-such-answer" in str(info.value) and str(store.path) in str(info.value)
    assert store.counts()["processed_events"] == 0  # the failed vote claimed nothing


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vote": "maybe"}, "vote must be one of"),
        ({"vote": "up", "origin": "email"}, "origin must be one of"),
        ({"vote": "up", "intent": 3}, "must be text"),
    ],
)
def test_invalid_votes_are_rejected(store, answered, kwargs, message):
    kwargs = {"origin": "button", **kwargs}
    with pytest.raises(InvalidVoteError, match=message):
        store.record_vote(answered, user="U1", **kwargs)


def test_corrections_are_kept_and_redacted(store, answered):
    store.record_vote(answered, "down", user="U1", origin="modal", intent="refund_request")
    store.record_vote(answered, "down", user="U2", origin="modal", doc_id="kb-99")
    store.record_vote(answered, "down", user="U3", origin="modal", answer_text="Email refunds@shop.example, we refund in 5 days")
    store.record_vote(answered, "down", user="U4", origin="modal", intent="  ")  # blank = no correction
    rows = {r["user_hash"]: r for r in store.feedback_since()}
    assert rows[store.hash_user("U1")]["correct_intent"] == "refund_request"
    assert rows[store.hash_user("U2")]["correct_doc_id"] == "kb-99"
    assert rows[store.hash_user("U3")]["correct_answer"] == "Email [EMAIL], we refund in 5 days"
    assert rows[store.hash_user("U4")]["correct_intent"] is None


def test_feedback_since_joins_the_answer(store, answer_factory):
    a = answer_factory(question="refund to jane@x.io?", intent="refund", confidence=0.42, handoff=True)
    store.record_answer(a, user="U_ASK")
    store.record_vote(a.answer_id, "down", user="U1", origin="reaction", event_id="E1", intent="billing")
    (row,) = store.feedback_since()
    assert row["answer_id"] == a.answer_id
    assert row["question"] == "refund to [EMAIL]?"
    assert row["answer_intent"] == "refund" and row["answer_doc_id"] == "kb-12"
    assert row["confidence"] == pytest.approx(0.42) and row["handoff"] is True
    assert row["model_version"] == "intent-v3"
    assert row["user_hash"] == store.hash_user("U1") and row["origin"] == "reaction"
    assert row["time"].endswith("Z") and row["event_id"] == "E1"


def test_feedback_since_a_time_and_the_last_training_run(store, answer_factory, clock):
    a = answer_factory()
    store.record_answer(a)
    store.record_vote(a.answer_id, "up", user="U1", origin="button")
    first_batch = store.feedback_since()
    watermark = first_batch[-1]["time"]
    store.record_training_run(model_version="m2", data_until=watermark, n_feedback=len(first_batch))
    clock.advance(dt.timedelta(hours=1))
    store.record_vote(a.answer_id, "up", user="U2", origin="button")
    store.record_vote(a.answer_id, "down", user="U1", origin="button")  # a changed vote is new again
    assert [r["user_hash"] for r in store.feedback_since(watermark)] == [store.hash_user("U2"), store.hash_user("U1")]
    assert len(store.feedback_since_last_run()) == 2
    assert store.feedback_since(store.last_training_run()) == store.feedback_since_last_run()
    assert store.feedback_since(clock.now + dt.timedelta(seconds=1)) == []
    assert len(store.feedback_since("2000-01-01")) == 2
    assert len(store.feedback_since(dt.date(2000, 1, 1))) == 2


def _vote(store, answer_factory, user):
    a = answer_factory()
    store.record_answer(a)
    store.record_vote(a.answer_id, "up", user=user, origin="button")
    return store.feedback_since()[-1]["time"]


@pytest.mark.parametrize("status", ["promoted", "rejected", "ok"])
def test_a_run_that_used_its_feedback_moves_the_watermark(store, answer_factory, clock, status):
    # The statuses training/retrain.py records for runs that read feedback (and legacy "ok").
    learned = _vote(store, answer_factory, "U1")
    assert store.feedback_watermark() is None and len(store.feedback_since_last_run()) == 1
    store.record_training_run(status=status, model_version="v2", data_until=learned, n_feedback=1)
    clock.advance(dt.timedelta(minutes=5))
    _vote(store, answer_factory, "U2")
    assert store.feedback_watermark() == learned
    assert [r["user_hash"] for r in store.feedback_since_last_run()] == [store.hash_user("U2")]
    assert store.last_training_run()["status"] == status


@pytest.mark.parametrize("status", ["nothing-to-do", "error", "failed"])
def test_a_run_that_did_not_use_its_feedback_leaves_the_watermark(store, answer_factory, clock, status):
    first = _vote(store, answer_factory, "U1")
    store.record_training_run(status="promoted", model_version="v2", data_until=first, n_feedback=1)
    clock.advance(dt.timedelta(minutes=5))
    pending = _vote(store, answer_factory, "U2")
    # Even with a data_until (retrain records none for these), the feedback stays new.
    store.record_training_run(status=status, model_version="v2", data_until=pending, notes="too little new data")
    assert store.feedback_watermark() == first
    assert [r["user_hash"] for r in store.feedback_since_last_run()] == [store.hash_user("U2")]
    assert store.last_training_run()["status"] == "promoted"
    assert store.last_training_run(any_status=True)["status"] == status


def test_the_watermark_is_the_newest_data_until_and_a_run_without_one_keeps_it(store, answer_factory, clock):
    early = _vote(store, answer_factory, "U1")
    clock.advance(dt.timedelta(minutes=5))
    late = _vote(store, answer_factory, "U2")
    store.record_training_run(status="promoted", data_until=late)
    store.record_training_run(status="rejected", data_until=early)  # e.g. a run with --since
    store.record_training_run(status="promoted")  # a forced run that read no feedback
    assert store.feedback_watermark() == late and store.feedback_since_last_run() == []



@pytest.mark.parametrize(
    "token, vote",
    [("👍", "up"), (":+1:", "up"), ("+1", "up"), ("thumbsup", "up"), ("+1::skin-tone-3", "up"), ("UP", "up"),
     ("👎", "down"), ("-1", "down"), ("thumbsdown", "down"), ("down", "down"),
     ("retract", "retract"), ("undo", "retract"), ("heart", None), ("", None), (None, None)],
)
def test_parse_vote(token, vote):
    assert parse_vote(token) == vote


def test_votes_from_many_threads_all_land(store, answer_factory):
    import threading

    a = answer_factory()
    store.record_answer(a)
    errors = []

    def voter(k):
        try:
            for i in range(25):
                store.record_vote(a.answer_id, "up", user=f"T{k}-{i}", origin="button", event_id=f"T{k}-{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=voter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.counts()["feedback"] == 100
