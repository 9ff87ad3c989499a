"""The gate's decision rules, the frozen held-out set, reports, and the retrain lock (no model training)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.settings import RetrainSettings
from retrieval.kb import Document
from training.gate import BUILTIN_OOS, HeldoutSet, decide, kb_passage_rows, training_documents
from training.report import write_report
from training.lock import LockBusy, RetrainLock

REPO = Path(__file__).resolve().parents[2]
CFG = RetrainSettings(gate_min_support=3, gate_intent_max_drop=0.1)


def report(accuracy, per_class=None, oos=None):
    out = {"accuracy": accuracy, "per_class": {k: {"recall": r, "support": s} for k, (r, s) in (per_class or {}).items()}}
    if oos is not None:
        out["oos_recall"] = oos
    return out


def test_gate_promotes_when_nothing_drops():
    d = decide(report(0.8, {"a": (0.8, 5)}, 0.5), report(0.8, {"a": (0.8, 5)}, 0.5), CFG)
    assert d.promote and d.reasons == []


def test_gate_rejects_an_accuracy_drop():
    d = decide(report(0.80), report(0.79), CFG)
    assert not d.promote and "accuracy" in d.reasons[0]
    assert decide(report(0.80), report(0.79), RetrainSettings(gate_accuracy_tolerance=0.02)).promote


def test_gate_rejects_a_well_supported_intent_that_drops_but_ignores_small_ones():
    champion = report(0.8, {"a": (1.0, 5), "b": (1.0, 2), "out_of_scope": (1.0, 9)})
    assert not decide(champion, report(0.9, {"a": (0.8, 5), "b": (1.0, 2)}), CFG).promote
    d = decide(champion, report(0.9, {"a": (0.95, 5), "b": (0.0, 2)}), CFG)
    assert d.promote, d.reasons  # b has too little support; a lost only 5 points
    assert not decide(champion, report(0.9, {"b": (1.0, 2)}), CFG).promote  # a vanished: recall 0


def test_gate_rejects_an_out_of_scope_recall_drop():
    d = decide(report(0.8, oos=0.6), report(0.85, oos=0.5), CFG)
    assert not d.promote and "out-of-scope" in d.reasons[0]


def test_gate_rejects_a_candidate_that_quotes_worse_sections():
    """The right articles but worse quoted sections is worse for the customer who reads the quote."""
    champion, candidate = report(0.8), report(0.85)
    champion["section_accuracy"], candidate["section_accuracy"] = 0.7, 0.6
    candidate["sections"] = {"n": 20}
    d = decide(champion, candidate, CFG)
    assert not d.promote and d.reasons == ["quoted section right 0.7000 → 0.6000 (n=20)"]
    candidate["section_accuracy"] = 0.7
    assert decide(champion, candidate, CFG).promote
    del champion["section_accuracy"]  # rows naming no section: the rule does not apply
    candidate["section_accuracy"] = 0.0
    assert decide(champion, candidate, CFG).promote


def test_gate_rejects_a_candidate_that_drifts_from_the_kbs_own_sentences():
    """Held-out votes are few; the KB's own sentences are many: a candidate that answers them from other
    articles or sections than the champion does (beyond the tolerance) is rejected, whatever the votes say."""
    def passages(article, section):
        return {"n": 300, "accuracy": article, "section_accuracy": section}

    champion, candidate = report(0.8), report(0.85)
    d = decide(champion, candidate, CFG, (passages(0.79, 0.66), passages(0.71, 0.55)))
    assert not d.promote
    assert d.reasons == ["the KB's own sentences (n=300): article 0.7900 → 0.7100, section 0.6600 → 0.5500 "
                         "(tolerance 0.02)"]
    assert not decide(champion, candidate, CFG, (passages(0.79, 0.66), passages(0.79, 0.63))).promote  # section alone
    assert decide(champion, candidate, CFG, (passages(0.79, 0.66), passages(0.78, 0.65))).promote  # within 0.02
    assert not decide(champion, candidate, RetrainSettings(gate_passage_tolerance=0.0),
                      (passages(0.79, 0.66), passages(0.78, 0.66))).promote
    # A small KB: one sentence of 38 is more than 0.02, and always allowed; two are not.
    small = {"n": 38, "accuracy": 32 / 38, "section_accuracy": 31 / 38}
    assert decide(champion, candidate, CFG, (small, {**small, "section_accuracy": 30 / 38})).promote
    assert not decide(champion, candidate, CFG, (small, {**small, "section_accuracy": 29 / 38})).promote


def test_kb_passage_rows_are_each_sections_sentences_and_a_fixed_sample():
    doc = Document(id="refunds", title="Refunds", answer=(
        "Refunds go back to the card you paid with.\n\n## How long a refund takes\n\n"
        "- Cards take five to ten days. PayPal takes one day.\n- Ok.\n\n## Refund a gift card\n\n"
        "Gift cards are refunded as store credit!"))
    rows = kb_passage_rows([doc], limit=100)
    assert [(r["text"], r["section"]) for r in rows] == [
        ("Refunds go back to the card you paid with.", "refunds#"),
        ("Cards take five to ten days.", "refunds#how-long-a-refund-takes"),
        ("PayPal takes one day.", "refunds#how-long-a-refund-takes"),
        ("Gift cards are refunded as store credit!", "refunds#refund-a-gift-card")]
    assert {r["intent"] for r in rows} == {"refunds"} and {r["doc_id"] for r in rows} == {"refunds"}
    sample = kb_passage_rows([doc], limit=2)
    assert len(sample) == 2 and sample == kb_passage_rows([doc], limit=2) and all(r in rows for r in sample)


def test_heldout_rows_keep_the_section_their_votes_confirmed_while_the_kb_has_it(tmp_path):
    from retrieval.kb import split_sections

    doc = Document("refunds", "Refunds", "Intro.\n\n## How long a refund takes\n\nFive days.\n\n## Other\n\nNo.")
    section_ids = [s.id for s in split_sections(doc)]
    assert "refunds#how-long-a-refund-takes" in section_ids
    h = HeldoutSet.load(tmp_path)
    h.rows = [{"text": "refund time", "intent": "refunds", "doc_id": "refunds", "section": "refunds#how-long-a-refund-takes",
               "source": "feedback"},
              {"text": "old refund row", "intent": "refunds", "doc_id": "refunds", "section": "refunds#gone",
               "source": "feedback"}]
    rows = h.eval_rows([doc], builtin_oos=False)
    assert [r["section"] for r in rows] == ["refunds#how-long-a-refund-takes", None]


def test_gate_refuses_without_heldout_rows():
    assert not decide({"accuracy": None}, {"accuracy": None}, CFG).promote


def docs(n_questions=10):
    return [Document(f"d{i}", f"T{i}", "a", intent=f"i{i}", questions=[f"question {i}-{j}" for j in range(n_questions)])
            for i in range(4)] + [Document("tiny", "Tiny", "a", intent="tiny", questions=["only one", "and two"])]


def test_heldout_set_is_deterministic_frozen_and_grows_only_for_new_intents(tmp_path):
    h = HeldoutSet.load(tmp_path)
    assert h.update_from_kb(docs(), CFG) == 4 * 2  # 20 % of 10; the 2-question intent gives none
    h.save()
    again = HeldoutSet.load(tmp_path)
    assert again.rows == h.rows
    other = HeldoutSet.load(tmp_path / "other")
    other.update_from_kb(docs(), CFG)
    assert {r["text"] for r in other.rows} == {r["text"] for r in h.rows}  # same KB, same choice
    assert again.update_from_kb(docs(20), CFG) == 0  # covered intents stay frozen
    grown = docs() + [Document("new", "New", "a", intent="new", questions=[f"new {j}" for j in range(5)])]
    assert again.update_from_kb(grown, CFG) == 1
    assert again.texts() - h.texts() and h.texts() <= again.texts()  # grew, kept every frozen row
    assert again.add_admin([{"text": "admin says", "intent": "i1", "doc_id": "d1"}]) == 1
    assert again.add_admin([{"text": "Admin  SAYS", "intent": "i2", "doc_id": "d2"}]) == 0


def test_training_documents_drop_heldout_questions_and_eval_rows_add_some_oos(tmp_path):
    h = HeldoutSet.load(tmp_path)
    h.update_from_kb(docs(), CFG)
    train = training_documents(docs(), h.texts())
    assert sum(len(d.questions) for d in train) == 4 * 8 + 2
    assert not {q.lower() for d in train for q in d.questions} & h.texts()
    rows = h.eval_rows(docs())
    oos = [r for r in rows if r["intent"] == "out_of_scope"]
    assert len(rows) - len(oos) == 8 and len(oos) == 5 and all(r["text"] in BUILTIN_OOS for r in oos)
    assert all(r["intent"] != "i0" for r in h.eval_rows(docs()[1:]))  # an intent that left the KB is not scored
    assert not [r for r in h.eval_rows(docs(), builtin_oos=False) if r["intent"] == "out_of_scope"]


def test_report_files_and_latest(tmp_path):
    payload = {"status": "rejected", "message": "rejected vX", "started_at": "now", "counts": {"labelled": 3},
               "champion_metrics": {"accuracy": 0.5, "rows": 4}, "candidate_metrics": {"accuracy": 0.25, "rows": 4},
               "decision": {"checks": [{"rule": "accuracy", "passed": False, "detail": "accuracy 0.5 → 0.25"}]}}
    json_path, md_path = write_report(tmp_path, payload)
    assert json.loads(json_path.read_text())["status"] == "rejected"
    text = md_path.read_text()
    assert "**Outcome: rejected**" in text and "| accuracy | **no** | accuracy 0.5 → 0.25 |" in text
    def latest():
        return json.loads((tmp_path / "reports" / "retrain-latest.json").read_text())

    assert latest()["report_md"] == str(md_path)
    second, _ = write_report(tmp_path, payload)
    assert second != json_path and latest()["report_json"] == str(second)


def test_lock_excludes_a_second_holder_and_is_released(tmp_path):
    with RetrainLock(tmp_path) as first:
        assert first.held and first.holder()["pid"] == os.getpid()
        with pytest.raises(LockBusy, match="another retrain is running"):
            RetrainLock(tmp_path).acquire()
    with RetrainLock(tmp_path):
        pass


def test_lock_of_a_killed_process_is_free_at_once(tmp_path):
    code = ("import sys, time; sys.path.insert(0, %r); from training.lock import RetrainLock; "
            "RetrainLock(%r).acquire(); print('locked', flush=True); time.sleep(60)") % (str(REPO), str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockBusy, match=f"pid {proc.pid}"):
            RetrainLock(tmp_path).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert (tmp_path / "retrain.lock").exists()  # the file stays; the lock does not
        started = time.monotonic()
        with RetrainLock(tmp_path).acquire(wait=True, timeout=5):
            assert time.monotonic() - started < 1
    finally:
        if proc.poll() is None:
            proc.kill()
