"""Feedback rows → datasets: positives, corrections, hard negatives, conflicts, caps, admins, replay."""

from __future__ import annotations

import itertools

import pytest

from core.settings import RetrainSettings
from retrieval.kb import Document
from serving.versions import TrainingExample
from training.feedback_data import build_feedback_data, merge_with_replay, normalize

DOCS = [
    Document("reset-password", "Reset", "a", intent="reset_password", questions=["I forgot my password"]),
    Document("track-order", "Track", "b", intent="track_order", questions=["where is my order"]),
    Document("refund", "Refund", "c", intent="refund", questions=["I want a refund"]),
]
_clock = itertools.count()


def row(question, vote, user, answered="reset_password", *, correct_intent=None, correct_doc=None, handoff=False,
        correct_answer=None):
    doc = None if handoff else answered.replace("_", "-")
    return {"question": question, "vote": vote, "user_hash": user, "answer_intent": "out_of_scope" if handoff else answered,
            "answer_doc_id": doc, "handoff": handoff, "correct_intent": correct_intent, "correct_doc_id": correct_doc,
            "correct_answer": correct_answer, "time": f"2026-01-01T00:00:{next(_clock):09.6f}Z"}


def config(**kw):
    return RetrainSettings(**kw)


def build(rows, **kw):
    admins = kw.pop("admins", set())
    heldout = kw.pop("heldout", set())
    return build_feedback_data(rows, DOCS, config=config(**kw), admin_hashes=admins, heldout_texts=heldout)


def test_thumbs_up_is_a_positive_and_a_correction_is_a_label_with_a_hard_negative():
    data = build([row("pw gone", "up", "u1"),
                  row("parcel late", "down", "u2", answered="refund", correct_intent="track_order")])
    by_text = {q.text: q for q in data.labelled}
    assert by_text["pw gone"].intent == "reset_password" and by_text["pw gone"].origin == "thumbs_up"
    assert by_text["parcel late"].intent == "track_order" and by_text["parcel late"].origin == "correction"
    assert [(h.text, h.negative_doc, h.positive_doc) for h in data.hard_negatives] == [("parcel late", "refund", "track-order")]
    assert data.counts["positives"] == 1 and data.counts["corrections"] == 1
    assert data.data_until == data.data_until and data.n_new == 3


def test_correction_by_article_id_uses_the_articles_intent():
    data = build([row("money back?", "down", "u1", answered="track_order", correct_doc="refund")])
    assert [(q.intent, q.doc_id) for q in data.labelled] == [("refund", "refund")]


SECTIONED = Document("refund", "Refund", "Intro.\n\n## How long it takes\n\nFive days.\n\n## Exceptions\n\nGift cards.",
                     intent="refund")


def test_a_correction_to_a_section_teaches_that_section_and_outranks_an_earlier_thumbs_up():
    docs = [*DOCS[:2], SECTIONED]
    up = {**row("refund timing", "up", "u1", answered="refund"), "answer_section": "refund#exceptions"}
    corrected = row("refund timing", "down", "u2", answered="refund", correct_doc="refund#how-long-it-takes")
    data = build_feedback_data([up, corrected], docs, config=config(), admin_hashes=set(), heldout_texts=set())
    assert [(q.intent, q.doc_id, q.section) for q in data.labelled] == [("refund", "refund", "refund#how-long-it-takes")]
    assert data.hard_negatives == []  # the right article: nothing to push away from
    # A 👍 after the correction confirms the section it quoted again.
    later_up = {**row("refund timing", "up", "u3", answered="refund"), "answer_section": "refund#exceptions"}
    data = build_feedback_data([up, corrected, later_up], docs, config=config(), admin_hashes=set(), heldout_texts=set())
    assert [q.section for q in data.labelled] == ["refund#exceptions"]


def test_a_correction_to_a_section_the_article_no_longer_has_still_names_the_article():
    docs = [*DOCS[:2], SECTIONED]
    data = build_feedback_data([row("money back?", "down", "u1", answered="track_order", correct_doc="refund#gone")],
                               docs, config=config(), admin_hashes=set(), heldout_texts=set())
    assert [(q.intent, q.doc_id, q.section) for q in data.labelled] == [("refund", "refund", None)]
    assert data.counts["unknown_section"] == 1


def test_thumbs_down_without_correction_is_only_a_hard_negative():
    data = build([row("cancel my plan", "down", "u1", answered="refund")])
    assert data.labelled == []  # never an invented label
    assert [(h.text, h.negative_doc, h.positive_doc) for h in data.hard_negatives] == [("cancel my plan", "refund", None)]


def test_votes_on_declined_answers_and_written_answers_are_counted_not_trained():
    data = build([row("weather?", "up", "u1", handoff=True), row("hmm", "down", "u1", handoff=True),
                  row("other", "down", "u2", handoff=True, correct_answer="call us")])
    assert data.labelled == [] and data.hard_negatives == []
    assert data.counts["up_on_declined"] == 1 and data.counts["written_answer_only"] == 1


def test_conflicts_are_resolved_by_distinct_users():
    rows = [row("refund for parcel", "down", u, answered="track_order", correct_intent="refund") for u in ("a", "b", "c")]
    rows += [row("refund for parcel", "up", "d", answered="track_order")]
    data = build(rows)
    assert [(q.intent, len(q.users)) for q in data.labelled] == [("refund", 3)]


def test_one_user_voting_many_times_counts_once_and_a_tie_is_dropped():
    rows = [row("refund for parcel", "down", "mallory", answered="track_order", correct_intent="refund") for _ in range(5)]
    rows += [row("refund for parcel", "up", "alice", answered="track_order")]
    data = build(rows)
    assert data.labelled == [] and data.counts["conflicts_dropped"] >= 1


def test_latest_vote_of_a_user_wins():
    rows = [row("q1", "down", "u1", answered="refund", correct_intent="track_order"), row("q1", "up", "u1", answered="refund")]
    data = build(rows)
    assert [(q.intent, q.origin) for q in data.labelled] == [("refund", "thumbs_up")]


def test_a_thumbs_down_outweighs_a_lone_thumbs_up_on_the_same_intent():
    data = build([row("q2", "up", "u1", answered="refund"), row("q2", "down", "u2", answered="refund")])
    assert data.labelled == []


def test_kb_questions_win_over_feedback():
    data = build([row("I want a refund", "down", "u1", answered="refund", correct_intent="track_order"),
                  row("where is my order", "up", "u1", answered="track_order")])
    assert data.labelled == []
    assert data.counts["contradicts_kb"] == 1 and data.counts["already_in_kb"] == 1


def test_per_user_cap_limits_uncorroborated_examples():
    rows = [row(f"flip {i}", "down", "mallory", answered="refund", correct_intent="track_order") for i in range(100)]
    rows += [row(f"good {i}", "up", f"user{i % 10}", answered="refund") for i in range(50)]
    data = build(rows, max_user_share=0.2, user_share_floor=10, max_examples_per_user=500)
    from_mallory = [q for q in data.labelled if q.users == ("mallory",)]
    assert len(from_mallory) == int(0.2 * 150)
    assert data.counts["capped_examples"] == 100 - 30 and data.counts["capped_users"] >= 1
    assert sum(q.intent == "refund" for q in data.labelled) == 50


def test_corroborated_examples_are_not_capped():
    rows = [row(f"q {i}", "up", u, answered="refund") for i in range(40) for u in ("a", "b")]
    data = build(rows, max_user_share=0.1, user_share_floor=1, max_examples_per_user=1)
    assert len(data.labelled) == 40


def test_admin_corrections_are_trusted_and_partly_held_out():
    rows = [row(f"admin q {i}", "down", "boss", answered="refund", correct_intent="track_order") for i in range(40)]
    rows += [row("off topic thing", "down", "boss", answered="refund", correct_intent="out_of_scope")]
    rows += [row(f"admin q {i}", "up", u, answered="refund") for i in range(5) for u in ("x", "y")]
    data = build(rows, admins={"boss"}, admin_heldout_fraction=0.5, max_examples_per_user=1)
    held = {r["text"]: r["intent"] for r in data.admin_heldout}
    assert held.pop("off topic thing") == "out_of_scope"
    assert 10 < len(held) < 30 and set(held.values()) == {"track_order"}
    trained = {q.text for q in data.labelled}
    assert not trained & set(held)
    assert len(trained) + len(held) == 40  # admins are not capped, and outrank the two users on "admin q 0..4"
    assert all(q.intent == "track_order" for q in data.labelled)


def test_heldout_questions_are_never_trained_on():
    data = build([row("Secret Question", "up", "u1")], heldout={normalize("secret   question")})
    assert data.labelled == [] and data.counts["skipped_heldout"] == 1


def test_replay_keeps_old_examples_and_new_labels_replace_old_ones():
    old = [TrainingExample("a", "refund"), TrainingExample("b", "refund"), TrainingExample("c", "refund")]
    new = [TrainingExample("B", "track_order")]
    merged, counts = merge_with_replay(new, old, replay_max=10, exclude={"c"})
    assert [(e.text, e.intent) for e in merged] == [("a", "refund"), ("B", "track_order")]
    assert counts["replayed"] == 1
    merged, _ = merge_with_replay([], old, replay_max=2)
    assert [e.text for e in merged] == ["b", "c"]  # the newest


def test_retrain_settings_read_overrides_then_env_then_toml_then_defaults(tmp_path):
    from core.settings import Settings

    toml = tmp_path / "csbot.toml"
    toml.write_text('retrain_min_new_examples = 7\n[retrain]\nmethod = "lora"\npatience = 3\n')
    env = {"CSBOT_CONFIG": str(toml), "CSBOT_RETRAIN_MIN_NEW_EXAMPLES": "9", "CSBOT_RETRAIN_BUILTIN_OOS": "false"}
    cfg = Settings.load(env=env, home=tmp_path, retrain_patience=5).retrain
    assert (cfg.min_new_examples, cfg.method, cfg.gate_intent_max_drop, cfg.builtin_oos, cfg.patience) == (9, "lora", 0.1, False, 5)
    assert Settings.load(env={"CSBOT_CONFIG": str(toml)}, home=tmp_path).retrain.min_new_examples == 7
    assert RetrainSettings().min_new_examples == 20


def test_retrain_settings_reject_bad_values(tmp_path):
    from core.settings import ConfigError, Settings

    with pytest.raises(ConfigError, match="min_new_examples"):
        Settings.load(env={"CSBOT_RETRAIN_MIN_NEW_EXAMPLES": "abc"}, home=tmp_path)
    with pytest.raises(ConfigError, match="method"):
        Settings.load(env={"CSBOT_RETRAIN_METHOD": "qlora"}, home=tmp_path)
    with pytest.raises(ConfigError, match="heldout_fraction"):
        Settings.load(env={"CSBOT_RETRAIN_HELDOUT_FRACTION": "1.5"}, home=tmp_path)
    with pytest.raises(ConfigError, match="retrain_no_such_knob"):
        Settings.load(env={}, home=tmp_path, retrain_no_such_knob=1)


def test_outlier_voters_who_thumbs_down_right_answers_are_ignored():
    rows = []
    for u in range(6):  # honest users: 👎 about one answer in five
        rows += [row(f"h{u}-{i}", "down" if i % 5 == 0 else "up", f"honest{u}", answered="refund",
                     correct_intent="track_order" if i % 5 == 0 else None) for i in range(20)]
    rows += [row(f"m-{i}", "down", "mallory", answered="refund", correct_intent="track_order") for i in range(18)]
    rows += [row(f"m-{i}", "up", "mallory", answered="refund") for i in range(18, 20)]
    rows += [row(f"b-{i}", "down", "boss", answered="refund", correct_intent="track_order") for i in range(20)]
    data = build(rows, admins={"boss"})
    assert data.counts["suspicious_users"] == 1 and data.counts["suspicious_votes"] == 20
    assert not [q for q in data.labelled if "mallory" in q.users]
    assert [q for q in data.labelled if "boss" in q.users]  # admins are never flagged
    few = build(rows[-40:-20] + rows[:20])  # too few voters to tell: nobody is flagged
    assert few.counts["suspicious_users"] == 0
