"""`csbot eval` scores the quoted section when a row names one, and prints a reliability table: a
customer judges the quoted text, and an agent reads the confidence."""

from __future__ import annotations

import json

import pytest

from bot.cli import main
from tests.conftest import copy_home

pytestmark = pytest.mark.slow

QUESTIONS = ["how long does a refund take to arrive", "which items can't be refunded", "smtp port for sending email",
             "how do I cancel my order", "where is my invoice", "is the service down right now",
             "delete my account", "exchange shoes for a bigger size"]


@pytest.fixture
def helpcentre(helpcentre_home, tmp_path, monkeypatch):
    home = copy_home(helpcentre_home, tmp_path / "home")
    monkeypatch.setenv("CSBOT_HOME", str(home))
    from core.settings import Settings
    from serving.engine import Engine

    return Engine(Settings.load(env={}, home=home))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_scores_the_quoted_section_by_id_or_heading(helpcentre, tmp_path, capsys):
    from retrieval.kb import split_sections

    documents = helpcentre.catalogue().articles
    answers = [a for a in helpcentre.answer_batch(QUESTIONS) if not a.handoff and not a.clarify]
    assert len(answers) >= 6
    rows, expected = [], {"right": 0, "wrong_section": 0, "wrong_article": 0}
    for n, a in enumerate(answers):
        quoted = (a.section or {}).get("id") or f"{a.doc_id}#"
        others = [s for s in split_sections(documents[a.doc_id]) if s.id != quoted]
        elsewhere = next(s for d in documents.values() if d.id != a.doc_id for s in split_sections(d))
        if n % 3 == 0:  # the quoted section, by id
            rows.append({"text": a.question, "intent": a.intent, "section": quoted})
            expected["right"] += 1
        elif n % 3 == 1 and (a.section or {}).get("heading"):  # the quoted section, by its heading
            rows.append({"text": a.question, "intent": a.intent, "doc_id": a.doc_id, "section": a.section["heading"]})
            expected["right"] += 1
        elif others:  # another section of the same article
            rows.append({"text": a.question, "intent": a.intent, "section": others[0].id})
            expected["wrong_section"] += 1
        else:
            rows.append({"text": a.question, "intent": a.intent, "section": elsewhere.id})
            expected["wrong_article"] += 1
    rows.append({"text": "write me a poem about the sea", "intent": "out_of_scope"})
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    code, out, _ = run(capsys, "eval", str(path), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["sections"]["counts"] == {**expected, "clarified_right": 0, "clarified_other": 0, "handoff": 0}
    assert report["sections"]["n"] == len(answers)
    assert report["section_accuracy"] == round(expected["right"] / len(answers), 4)
    # The reliability table bins the answered in-scope rows (not the off-topic one) by confidence.
    table = report["reliability"]
    assert table["n"] == len(answers) == sum(b["n"] for b in table["bins"])
    for b in table["bins"]:
        assert b["low"] <= b["confidence"] < b["high"] or b["confidence"] == b["high"] == 1.0
    assert 0.0 <= table["ece"] <= 1.0
    code, text, _ = run(capsys, "eval", str(path))
    assert code == 0 and "quoted section: right" in text and "expected calibration error" in text


def test_eval_refuses_a_heading_without_its_article(helpcentre, tmp_path, capsys):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"text": "refund time", "intent": "refunds"}\n'
                    '{"text": "refund time again", "section": "How long a refund takes"}\n')
    code, out, err = run(capsys, "eval", str(path))
    assert code == 2 and out == ""
    assert f"{path}:2: a section given by its heading needs the row's 'doc_id'" in err and len(err.strip().splitlines()) == 1


def test_feedback_can_correct_to_a_section_by_its_id(helpcentre, capsys):
    from store import Store
    from core.settings import Settings

    code, out, _ = run(capsys, "ask", "how long does a refund take to arrive", "--json")
    answer = json.loads(out)
    assert code == 0 and answer["doc_id"] == "refunds"
    code, _, err = run(capsys, "feedback", answer["answer_id"], "down", "--doc", "refunds#no-such-part")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown section 'refunds#no-such-part' (--doc); refunds's sections: " in err
    assert "refunds#items-that-cannot-be-refunded" in err
    code, _, _ = run(capsys, "feedback", answer["answer_id"], "down", "--doc", "refunds#items-that-cannot-be-refunded")
    assert code == 0
    with Store.from_settings(Settings.load()) as store:
        [row] = store.feedback_since()
    assert row["correct_doc_id"] == "refunds#items-that-cannot-be-refunded" and row["vote"] == "down"
