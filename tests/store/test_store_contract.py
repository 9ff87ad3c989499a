"""The store's contract, run against both backends (`store` is parametrized: SQLite and PostgreSQL):
the Slack inbox and its leases, the reply ledger, revoked workspaces, training runs and the feedback
watermark, alerts, purge / forget / export, and the read-backs the weekly view uses."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from store.inbox import ANSWER, FAILED, INTERACTIVE, PENDING, RUNNING, SENTIMENT, InboxItem


def item(work: str = ANSWER, body: dict | None = None, team: str = "T1") -> InboxItem:
    return InboxItem(function="handlers.answer", work=work, body=json.dumps(body or {"text": "hi"}), team=team)


# --- the inbox ----------------------------------------------------------------------------------


def test_accept_claims_the_event_with_its_items_once(store):
    first = store.inbox.accept([item(), item(SENTIMENT)], event_id="Ev1", now=100.0)
    assert (first.duplicate, first.queued) == (False, 2)
    again = store.inbox.accept([item()], event_id="Ev1", now=101.0)
    assert again.duplicate and again.queued == 0
    assert store.inbox.event_claimed("Ev1") and not store.inbox.event_claimed("Ev2")
    assert store.inbox.depth() == {PENDING: 2, RUNNING: 0, FAILED: 0}


def test_a_full_inbox_sheds_sentiment_and_queues_questions_late(store):
    store.inbox.accept([item()], event_id="E0", now=1.0)
    accepted = store.inbox.accept([item(SENTIMENT), item(ANSWER), item(INTERACTIVE)], event_id="E1", limit=1, now=2.0)
    assert (accepted.queued, accepted.shed, accepted.late) == (2, 1, 1)
    late = [row["late"] for row in store.inbox.items() if row["work"] == ANSWER]
    assert sorted(late) == [0, 1]


def test_take_hands_the_most_urgent_then_oldest_item_to_one_owner(store):
    store.inbox.accept([item(SENTIMENT)], event_id="E1", now=1.0)
    store.inbox.accept([item(ANSWER)], event_id="E2", now=2.0)
    store.inbox.accept([item(INTERACTIVE)], event_id="E3", now=3.0)
    order = [store.inbox.take("w1", now=10.0)["work"] for _ in range(3)]
    assert order == [INTERACTIVE, ANSWER, SENTIMENT]
    assert store.inbox.take("w1", now=10.0) is None
    running = store.inbox.items(RUNNING)
    assert len(running) == 3 and {r["owner"] for r in running} == {"w1"} and {r["attempts"] for r in running} == {1}


def test_finish_deletes_retry_waits_fail_keeps_no_payload(store):
    store.inbox.accept([item(body={"text": "card 4111 1111 1111 1111"}) for _ in range(3)], event_id="E1", now=1.0)
    a, b, c = (store.inbox.take("w", now=2.0) for _ in range(3))
    store.inbox.finish(a["id"])
    store.inbox.retry(b["id"], "timeout", delay=30, now=2.0)
    assert store.inbox.take("w", now=3.0) is None  # backing off
    assert store.inbox.take("w", now=40.0)["id"] == b["id"]
    store.inbox.fail(c["id"], "bad payload 4111 1111 1111 1111")
    rows = {r["id"]: r for r in store.inbox.items()}
    assert a["id"] not in rows and rows[b["id"]]["attempts"] == 2
    assert rows[c["id"]]["state"] == FAILED and "4111" not in rows[c["id"]]["error"]
    assert store._read("SELECT body FROM slack_inbox WHERE id = ?", (c["id"],)) == [{"body": None}]


def test_a_lapsed_lease_hands_a_dead_workers_items_over(store):
    store.inbox.register("dead", now=100.0)
    store.inbox.register("alive", now=100.0)
    store.inbox.accept([item(), item()], event_id="E1", now=100.0)
    taken = store.inbox.take("dead", now=101.0)
    store.inbox.take("alive", now=101.0)
    store.inbox.heartbeat("alive", now=125.0)
    assert store.inbox.reclaim(stale_after=30, now=126.0) == 0  # both leases still run
    assert store.inbox.reclaim(stale_after=15, now=126.0) == 1  # "dead" stopped beating at 100
    again = store.inbox.take("alive", now=127.0)
    assert again["id"] == taken["id"] and again["attempts"] == 2
    assert {r["owner"] for r in store.inbox.items(RUNNING)} == {"alive"}


def test_a_process_taken_for_dead_registers_again_at_its_next_heartbeat(store):
    """Its lease lapsed while the database was out of reach: others took its items back once. Its next
    heartbeat brings its row back, so its new claims are not taken over again and again."""
    store.inbox.register("paused", now=100.0)
    store.inbox.accept([item(), item()], event_id="E1", now=100.0)
    store.inbox.take("paused", now=100.0)
    assert store.inbox.reclaim(stale_after=15, now=130.0) == 1  # its heartbeat lapsed: taken for dead
    store.inbox.heartbeat("paused", now=131.0)  # it was alive after all
    store.inbox.take("paused", now=131.0)
    assert store.inbox.reclaim(stale_after=15, now=132.0) == 0
    assert len(store.inbox.items(RUNNING)) == 1


def test_an_owner_with_no_worker_row_is_dead_and_release_hands_items_back(store):
    store.inbox.accept([item(), item()], event_id="E1", now=1.0)
    store.inbox.take("ghost", now=2.0)  # never registered
    assert store.inbox.reclaim(stale_after=15, now=3.0) == 1
    store.inbox.register("w", now=4.0)
    store.inbox.take("w", now=4.0)
    store.inbox.take("w", now=4.0)
    assert store.inbox.release("w") == 2
    assert store.inbox.depth()[PENDING] == 2
    store.inbox.unregister("w")
    assert store.inbox.reclaim(stale_after=15, now=5.0) == 0


# --- the reply ledger and revoked workspaces ----------------------------------------------------


def test_the_reply_ledger_keeps_one_record_per_key(store):
    key = "answer:C1:111.1"
    store.inbox.post_begin(key, answer_id="a1", channel="C1", thread_ts="111.1", question_ts="111.1",
                           message={"text": "owed"})
    assert store.inbox.owed(key) == {"text": "owed"}
    store.inbox.post_begin(key, answer_id="a1", channel="C1", thread_ts="111.1", question_ts="111.1")  # a take-over
    assert store._read("SELECT count(*) AS n FROM slack_posts WHERE key = ?", (key,)) == [{"n": 1}]
    assert store.inbox.owed(key) is None and not store.inbox.thread_answered("C1", "111.1")
    store.inbox.post_done(key, "222.2")
    record = store.inbox.post_record(key)
    assert (record["ts"], record["answer_id"], record["message"]) == ("222.2", "a1", None)
    assert store.inbox.answer_for_message("C1", "222.2") == "a1"
    assert store.inbox.thread_answered("C1", "111.1") and not store.inbox.thread_answered("C1", "999.9")
    assert store.inbox.post_record("answer:C1:nothing") is None


def test_revoked_workspaces(store):
    assert store.inbox.revoke("T1", "app_uninstalled") is True
    assert store.inbox.revoke("T1", "tokens_revoked") is False
    assert store.inbox.revoked()["T1"]["reason"] == "app_uninstalled"
    assert store.inbox.restore("T1") is True and store.inbox.restore("T1") is False
    assert store.inbox.revoked() == {}


# --- runs, alerts, privacy, read-backs ----------------------------------------------------------


def test_training_runs_and_the_feedback_watermark(store, answer_factory, clock):
    a = answer_factory()
    store.record_answer(a)
    store.record_vote(a.answer_id, "up", user="U1", origin="button")
    first = store.feedback_since()[-1]["time"]
    assert store.feedback_watermark() is None
    run = store.record_training_run(status="promoted", data_until=first, n_feedback=1, metrics={"acc": 0.9}, gate="x")
    store.record_training_run(status="nothing-to-do", data_until="2999-01-01T00:00:00.000000Z")
    assert store.feedback_watermark() == first
    assert store.last_training_run()["id"] == run and store.last_training_run()["gate"] == "x"
    assert store.last_training_run(any_status=True)["status"] == "nothing-to-do"
    assert [r["status"] for r in store.training_runs()] == ["nothing-to-do", "promoted"]
    assert store.feedback_since_last_run() == []
    clock.advance(dt.timedelta(seconds=1))
    store.record_vote(a.answer_id, "down", user="U2", origin="button")
    assert [r["vote"] for r in store.feedback_since_last_run()] == ["down"]


def test_alerts_cool_down_across_calls(store):
    when = dt.datetime(2025, 3, 10, 12, tzinfo=dt.timezone.utc)
    first = store.claim_monitoring_alert("C1", when, dt.timedelta(hours=1), {"recent_n": 5})
    assert isinstance(first, int)
    assert store.claim_monitoring_alert("C1", when + dt.timedelta(minutes=30), dt.timedelta(hours=1)) is None
    assert store.claim_monitoring_alert("C2", when, dt.timedelta(hours=1)) is not None
    assert [a["details"]["recent_n"] for a in store.monitoring_alerts("C1")] == [5]


def test_purge_forget_and_export(store, answer_factory, clock):
    old = answer_factory("old")
    store.record_answer(old, user="U1")
    store.record_vote("old", "up", user="U2", origin="button", event_id="E1")
    clock.advance(dt.timedelta(days=100))
    new = answer_factory("new", question="Where is my parcel?")
    store.record_answer(new, user="U1")
    store.record_answer(answer_factory("other"), user="U3")
    store.record_vote("other", "down", user="U1", origin="button")
    assert store.user_questions("U1") == ["How do I reset my password?", "Where is my parcel?"]
    assert store.purge(dt.timedelta(days=90), dry_run=True) == {"feedback": 1, "answers": 1,
                                                                 "monitored_messages": 0, "processed_events": 1}
    assert store.purge(dt.timedelta(days=90))["answers"] == 1
    assert [r["answer_id"] for r in store.export(kinds=["answers"])] == ["new", "other"]
    assert store.forget_user("U1") == {"feedback": 1, "answers": 1, "monitored_messages": 0}
    assert [r["type"] for r in store.export()] == ["answer"]
    assert store.counts()["answers"] == 1 and store.counts()["feedback"] == 0


def test_answer_outcomes_count_votes_as_integers(store, answer_factory, clock):
    start = clock.now
    a = answer_factory()
    store.record_answer(a)
    store.record_vote(a.answer_id, "up", user="U1", origin="button")
    store.record_vote(a.answer_id, "down", user="U2", origin="modal", doc_id="kb-9")
    store.record_vote(a.answer_id, "up", user="U3", origin="clarify", doc_id="kb-12")
    [row] = store.answer_outcomes(start, clock.now + dt.timedelta(seconds=1))
    assert (row["ups"], row["downs"], row["picks"], row["correct_doc_id"]) == (1, 1, 1, "kb-9")
    assert all(type(row[k]) is int for k in ("ups", "downs", "picks"))
    assert store.most_answered_docs() == [("kb-12", 1)]
