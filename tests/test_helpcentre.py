"""Help-centre knowledge bases: plain Markdown or HTML articles with no example questions ingest with
the default settings and answer from the matching section (real MiniLM, FAISS, FTS5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.answer import OUT_OF_SCOPE

pytestmark = pytest.mark.slow

from tests.conftest import HELPCENTRE_HTML as HTML_KB  # noqa: E402
from tests.conftest import HELPCENTRE_MD as MD_KB  # noqa: E402
from tests.conftest import copy_home  # noqa: E402


@pytest.fixture(scope="session")
def md_home(helpcentre_home) -> Path:
    return helpcentre_home


@pytest.fixture(scope="session")
def md_engine(md_home):
    from core.settings import Settings
    from serving.engine import Engine

    return Engine(Settings.load(env={}, home=md_home))


def test_article_only_kb_ingests_with_defaults_and_says_why_it_skipped_fine_tuning(md_home):
    report = json.loads(md_home.joinpath("ingest.json").read_text())
    assert report["built"] and report["documents"] == 8 and report["skipped"] == []
    assert any("no example questions" in note for note in report["notes"])
    assert "not fine-tuning the encoder at ingest" in md_home.joinpath("ingest.err").read_text()
    meta = json.loads(next(md_home.glob("models/v*/meta.json")).read_text())
    decision = meta["decision"]
    assert 0.45 <= decision["cos_threshold"] <= 0.8 and decision["tuned_on"]["offtopic_questions"] > 100
    assert decision["head_threshold"] > 1.0  # a head trained on titles alone is switched off
    assert (next(md_home.glob("models/v*")) / "index" / "lexical.sqlite3").is_file()


def test_a_question_about_one_section_is_answered_with_that_section(md_engine):
    answer = md_engine.answer("when is the weekly maintenance window?")
    assert not answer.handoff and answer.doc_id == "service-status"
    assert answer.section["heading"] == "Maintenance windows"
    assert answer.section["path"] == ["Service status and maintenance", "Planned maintenance", "Maintenance windows"]
    assert "Tuesdays 02:00–04:00 UTC" in answer.text and "Incidents" not in answer.text


def test_slack_gets_the_section_as_markdown_and_the_fallback_text_as_mrkdwn(md_engine):
    from bot.slack.blocks import answer_blocks, answer_text

    answer = md_engine.answer("How long does a refund to my card take?")
    assert answer.doc_id == "refunds" and answer.section["heading"] == "How long a refund takes"
    block = answer_blocks(answer)[0].to_dict()
    # The markdown block renders standard Markdown: the section as the KB has it, under its path.
    assert block["type"] == "markdown" and block["text"].startswith("**How long a refund takes**\n\n")
    assert "- Card payments" in block["text"]
    # The message's `text` (notifications) is mrkdwn, never raw Markdown.
    text = answer_text(answer)
    assert text.startswith("•   Card payments: 3–5 business days")
    assert "•" in text and "- Card payments" not in text and "**" not in text and "##" not in text


def test_exact_terms_are_found_by_the_lexical_index(md_engine):
    index = md_engine.served.index
    [(pos, _score), *_] = index.lexical_search("IMAP port 993", 5)
    assert index.entries[pos].doc_id == "email-settings" and index.entries[pos].section == "email-settings#imap-settings"
    answer = md_engine.answer("which port is IMAP on?")
    assert answer.doc_id == "email-settings" and answer.section["heading"] == "IMAP settings"
    assert "993" in answer.text


def test_off_topic_questions_are_handed_off_with_only_relevant_sources(md_engine):
    for question in ("what is the capital of peru", "tell me a joke about penguins"):
        answer = md_engine.answer(question)
        assert answer.handoff and answer.intent == OUT_OF_SCOPE and answer.doc_id is None
        assert all(s.score >= md_engine.served.params.relevance_floor for s in answer.sources)


def test_sources_are_sorted_by_score(md_engine):
    for question in ("I want to exchange my shoes for a bigger size", "add my VAT number to invoices",
                     "how do I delete my account"):
        scores = [s.score for s in md_engine.answer(question).sources]
        assert scores == sorted(scores, reverse=True) and len(scores) >= 2


def test_close_articles_get_a_clarifying_question(md_home):
    from core.settings import Settings
    from serving.engine import Engine

    engine = Engine(Settings.load(env={}, home=md_home, clarify_margin=0.15))
    answer = engine.answer("I need to change or cancel the order I placed")
    assert {o["doc_id"] for o in answer.clarify} >= {"cancel-an-order", "change-an-order"}
    assert answer.clarify[0]["doc_id"] == answer.doc_id and not answer.handoff
    assert answer.to_json()["clarify"] == answer.clarify
    picked = engine.pick(answer.question, "change-an-order", None)
    assert picked.doc_id == "change-an-order" and picked.confidence == 1.0 and picked.sources[0].doc_id == "change-an-order"


def test_csbot_chat_offers_a_numbered_choice_and_stores_the_pick(md_home, tmp_path):
    from core.settings import Settings
    from store import Store

    home = tmp_path / "home"
    copy_home(md_home, home)
    env = {**os.environ, "CSBOT_HOME": str(home), "CSBOT_CLARIFY_MARGIN": "0.15"}
    run = subprocess.run([sys.executable, "-m", "bot.cli", "chat", "--user", "U7"], cwd=tmp_path, env=env,
                         input="I need to change or cancel the order I placed\n2\n", capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Which one did you mean?" in run.stdout and "1. Cancel an order" in run.stdout
    assert "2. Change an order" in run.stdout
    after = run.stdout.split("(type the number)")[1]
    assert "Answer (change-an-order) · confidence 1.00" in after and "1. Change an order" in after  # the pick
    with Store.from_settings(Settings.load(env={}, home=home)) as store:
        [row] = [r for r in store.feedback_since() if r["origin"] == "clarify"]
    assert row["vote"] == "up" and row["correct_doc_id"] == "change-an-order"
    assert row["question"] == "I need to change or cancel the order I placed"


def test_html_only_kb_ingests_and_answers_from_its_sections(tmp_path):
    from core.settings import Settings
    from serving.engine import Engine
    from training.ingest import ingest

    settings = Settings.load(env={}, home=tmp_path / "home")
    report = ingest([HTML_KB], settings)
    assert report["built"] and report["documents"] == 3
    engine = Engine(settings)
    answer = engine.answer("the password reset email never came")
    assert answer.doc_id == "4401-reset-password" and answer.section["heading"] == "The reset email did not arrive"
    assert "**1 hour**" in answer.text
    assert answer.sources[0].url == "https://help.example.com/hc/articles/4401"
    assert engine.answer("I lost my phone and can't log in with two-factor").doc_id == "4402-two-factor"


def test_a_kb_of_one_article_ingests_answers_and_declines(tmp_path):
    from core.settings import Settings
    from serving.engine import Engine
    from training.ingest import ingest

    settings = Settings.load(env={}, home=tmp_path / "home")
    ingest([MD_KB / "refunds.md"], settings)
    engine = Engine(settings)
    answer = engine.answer("how long until my refund arrives on my card")
    assert answer.doc_id == "refunds" and not answer.handoff
    assert engine.answer("who won the world cup in 1998").handoff


def test_a_csv_without_questions_ingests_with_fine_tuning_on(tmp_path):
    """Ingest-time fine-tuning of a KB with no example questions has nothing to train on and must not crash."""
    from core.settings import Settings
    from training.ingest import ingest

    kb = tmp_path / "faq.csv"
    kb.write_text("title,answer\nOpening hours,We are open 9-17 on weekdays.\n"
                  "Parking,There is free parking behind the shop.\nGift wrapping,We wrap gifts for 2 euro.\n")
    settings = Settings.load(env={}, home=tmp_path / "home")
    assert settings.finetune.epochs > 0
    report = ingest([kb], settings)
    assert report["built"] and report["documents"] == 3
    assert report["notes"] and "no example questions" in report["notes"][0]


def test_a_question_ambiguous_alone_is_settled_by_the_thread(tmp_path):
    """Two hotels answer the same FAQ differently: alone the question could be either; after the
    guest said where they are staying, the bot answers from that hotel's section."""
    from core.settings import Settings
    from serving.engine import Engine
    from training.ingest import ingest

    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "acorn-guest-house.md").write_text(
        "# Acorn Guest House\n\nA family-run guest house near the station.\n\n"
        "## Can I bring my pet?\n\nDogs are welcome for 10 euro a night.\n\n"
        "## Is there parking?\n\nFree parking behind the house.\n")
    (kb / "bridge-hotel.md").write_text(
        "# Bridge Hotel\n\nA riverside hotel in the old town.\n\n"
        "## Can I bring my pet?\n\nSorry, pets are not allowed at the Bridge Hotel.\n\n"
        "## Is there parking?\n\nParking costs 15 euro a day in the public garage.\n")
    settings = Settings.load(env={}, home=tmp_path / "home")
    ingest([kb], settings)
    engine = Engine(settings)
    for hotel, doc_id, says in (("Acorn Guest House", "acorn-guest-house", "Dogs are welcome"),
                                ("Bridge Hotel", "bridge-hotel", "not allowed")):
        thread = [f"hi, I booked two nights at the {hotel} next week", "great, how can I help?"]
        answer = engine.answer("can I bring my dog with me when I come?", thread)
        assert answer.doc_id == doc_id and not answer.clarify, hotel
        assert answer.section["heading"] == "Can I bring my pet?" and says in answer.text
        assert answer.used_context
