"""Questions about other products: the names a help centre never mentions (retrieval/scope.py), on the
real demo help centre and the section-level benchmark sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.kb import load_documents
from retrieval.scope import Scope

REPO = Path(__file__).resolve().parent.parent


def scope_of(*paths) -> Scope:
    docs = load_documents([REPO / p for p in paths])
    return Scope([f"{d.title}\n{d.answer}\n" + "\n".join(d.questions) for d in docs])


@pytest.fixture(scope="module")
def shop() -> Scope:
    return scope_of("demo/kb")


@pytest.mark.parametrize("question, names", [
    ("what is the Notion API rate limit", ["notion"]),
    ("how do I set up SAML single sign-on in Salesforce", ["salesforce"]),
    ("can I get a refund from instacart", ["instacart"]),
    ("my Uber Eats driver never came", ["uber eats"]),
    ("how much is Instacart+ a year", ["instacart"]),
    ("is there a Foobar integration for invoices", ["Foobar"]),  # unknown, but followed by a software word
])
def test_other_products_are_named(shop, question, names):
    assert shop.other_products(question) == names


@pytest.mark.parametrize("question", [
    "how do I reset my password",
    "Sarah said I could get a refund",  # a person
    "do you ship to Canada",  # a place
    "the email never reached my gmail",  # what customers use with any product
    "Can I pay with PayPal?",  # the help centre mentions it: ours
    "can I zoom in on the invoice pdf",  # a common word that is also a product's name
    "I ordered on Monday and nothing came",
])
def test_our_own_questions_name_no_other_product(shop, question):
    assert shop.other_products(question) == []


def test_a_question_naming_our_product_is_ours_whatever_else_it_names(shop):
    assert "parcelly" in shop.own_names
    assert shop.other_products("can I link my Parcelly account to Notion") == []


def test_a_menu_label_or_a_pronoun_capitalised_in_every_article_is_not_taken_for_our_product():
    """"Settings › Billing" and "tap You" in every article, but "billing email" and "you" in the text too:
    neither names the product, so a question using them can still be another product's."""
    articles = [f"In the Acme app, open Settings › Billing and tap You › {topic}. The Acme team sends the billing "
                f"email to you when your settings for {topic.lower()} change." for topic in ("Invoices", "Plans", "Seats")]
    scope = Scope(articles)
    assert scope.own_names == {"acme"}
    assert scope.other_products("where do I change billing in Notion for you") == ["notion"]
    assert scope.other_products("where do I change billing in Notion for Acme") == []


def test_a_name_the_help_centre_mentions_is_ours():
    scope = Scope(["Connect Salesforce: open Settings and choose the Salesforce integration.", "Billing basics."])
    assert scope.other_products("how do I connect Salesforce") == []
    assert scope.other_products("how do I connect HubSpot") == ["hubspot"]


@pytest.mark.parametrize("name", ["saas", "delivery"])
def test_benchmark_sets_near_domain_named_and_own_questions_kept(name):
    """The section-level sets (written for csbot): the rule flags near-domain questions that name other
    products and almost none of the help centre's own; the figures are what docs/knowledge-base.md quotes."""
    root = REPO / "benchmarks" / "data" / "helpcentres" / name
    scope = scope_of(root / "articles")
    questions = [json.loads(line)["question"] for line in (root / "questions.jsonl").read_text().splitlines()]
    offtopic = [json.loads(line) for line in (root / "offtopic.jsonl").read_text().splitlines()]
    flagged_own = [q for q in questions if scope.other_products(q)]
    near = [o["question"] for o in offtopic if o["kind"] == "near_domain"]
    generic = [o["question"] for o in offtopic if o["kind"] == "generic"]
    assert len(flagged_own) <= 0.03 * len(questions), flagged_own
    assert sum(bool(scope.other_products(q)) for q in near) >= 0.45 * len(near)
    assert not any(scope.other_products(q) for q in generic)


def _ask(home, question, **env):
    import os
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "bot.cli", "ask", "--json", question], cwd=home.parent,
                         env={**os.environ, "CSBOT_HOME": str(home), **env}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_ask_declines_another_products_question_and_says_which(home):
    answer = _ask(home, "how do I reset my Notion password")
    assert answer["handoff"] is True and answer["doc_id"] is None and answer["intent"] == "out_of_scope"
    assert answer["other_products"] == ["notion"]
    assert "question about Notion" in answer["answer"] and "nobody is notified" in answer["answer"]
    ours = _ask(home, "how do I reset my password")
    assert ours["doc_id"] == "reset-password" and ours["other_products"] == []


def test_other_products_setting_adds_names_and_the_check_can_be_turned_off(home):
    assert _ask(home, "how do I reset my Quuxly password", CSBOT_OTHER_PRODUCTS="Quuxly")["other_products"] == ["quuxly"]
    answered = _ask(home, "how do I reset my Notion password", CSBOT_DECLINE_OTHER_PRODUCTS="false")
    assert answered["other_products"] == [] and answered["doc_id"] == "reset-password"
