"""Fixtures for the retrain tests: a 6-intent knowledge base built once per session (no ingest-time
fine-tuning, to keep it quick), private copies of that home per test, feedback helpers, and a
retrain configuration with very few training steps."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from tests.conftest import copy_home

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

INTENTS = {
    "reset_password": ("Resetting your password", "Click 'Forgot password' on the sign-in page and follow the emailed link.", [
        "I forgot my password", "how do I reset my password", "password reset link expired",
        "can't log in, need a new password", "where do I change my password", "reset pasword please",
        "the reset email never arrived", "locked out of my account, forgot the password"]),
    "track_order": ("Tracking an order", "Open Orders and click Track: you see the carrier's live status.", [
        "where is my order", "track my parcel", "my package has not arrived yet",
        "how can I see the delivery status", "order still not delivered", "tracking number for my order",
        "when will my parcel arrive", "is my order on its way"]),
    "refund": ("Refunds", "Refunds go back to the original payment method within 5 working days.", [
        "I want a refund", "how long does a refund take", "refund not received yet",
        "can I get my money back", "return an item for a refund", "where is my refund",
        "refund to my credit card", "money back for a damaged item"]),
    "change_address": ("Changing your delivery address", "Edit the address under Account > Addresses before dispatch.", [
        "change my delivery address", "I moved, update my address", "wrong address on my order",
        "edit shipping address", "deliver to a different address", "update the address for my parcel",
        "can I change where my order goes", "new home address"]),
    "cancel_subscription": ("Cancelling your subscription", "Go to Account > Plan and click Cancel plan.", [
        "cancel my subscription", "stop my membership", "how do I end my plan",
        "unsubscribe from the monthly plan", "I don't want to be charged every month anymore",
        "terminate my subscription", "cancel auto renewal", "close my premium plan"]),
    "opening_hours": ("Customer service hours", "Our team answers from 8am to 8pm, Monday to Saturday.", [
        "when are you open", "what are your opening hours", "is support available on sunday",
        "what time does customer service close", "hours of the help desk", "can I call you at night",
        "are you open on saturdays", "when can I reach an agent"]),
}

# Paraphrases users ask (not in the KB): the feedback stream.
USER_QUESTIONS = {
    "reset_password": ["my password doesn't work anymore", "need to set up a new password", "forgot my login password",
                       "password recovery", "how to recover my password", "i cannot remember my password",
                       "help me reset the password", "password reset not working"],
    "track_order": ["where's my package", "has my order shipped", "delivery tracking", "status of my shipment",
                    "parcel tracking please", "my order hasn't come", "where is the delivery", "track shipment"],
    "refund": ["refund please", "I'd like my money back", "when do I get refunded", "refund status",
               "how do refunds work", "my refund is late", "get a refund for my order", "reimbursement for an order"],
    "change_address": ["update delivery address", "my address changed", "ship to another address",
                       "fix the address on my order", "change shipping address", "modify my address",
                       "send it to my work address instead", "address correction"],
    "cancel_subscription": ["end my subscription", "cancel membership", "stop the monthly payments",
                            "quit my plan", "cancel the renewal", "how to cancel premium",
                            "stop subscription charges", "unsubscribe me"],
    "opening_hours": ["what hours are you open", "support opening times", "are you open today", "business hours",
                      "when does support open", "opening times on weekends", "is the helpdesk open now",
                      "what time do you open"],
}

FAST = {"epochs": 1.0, "max_steps": 2, "batch_size": 16, "min_new_examples": 5, "eval_every": 1.0,
        "gate_min_support": 2, "validation_max": 20, "progress": "off"}


def write_kb(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for intent, (title, answer, questions) in INTENTS.items():
            fh.write(json.dumps({"id": intent.replace("_", "-"), "title": title, "answer": answer, "intent": intent,
                                 "questions": questions}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_home_template(tmp_path_factory) -> Path:
    from core.settings import Settings
    from training.ingest import ingest

    home = tmp_path_factory.mktemp("tiny-home")
    kb = write_kb(tmp_path_factory.mktemp("tiny-kb") / "kb.jsonl")
    ingest([kb], Settings.load(env={}, home=home, finetune_epochs=0))
    return home


@pytest.fixture
def tiny_home(tiny_home_template, tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    copy_home(tiny_home_template, path)
    monkeypatch.setenv("CSBOT_HOME", str(path))
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("CSBOT_RETRAIN_"):
            monkeypatch.delenv(key)
    return path


@pytest.fixture
def tiny_settings(tiny_home):
    from core.settings import Settings

    return Settings.load(env={}, home=tiny_home)


def fast_config(**overrides):
    from core.settings import RetrainSettings

    return RetrainSettings(**{**FAST, **overrides})


def record(store, question: str, intent: str, user: str | None, vote: str, *, correct_intent: str | None = None,
           correct_doc: str | None = None, model_version: str = "v-test", handoff: bool = False):
    """Store one answer (as if the bot had answered `intent`) and one vote on it."""
    from core.answer import Answer

    doc = None if handoff else intent.replace("_", "-")
    answer = Answer(answer_id=uuid.uuid4().hex[:16], question=question, text="...", intent="out_of_scope" if handoff else intent,
                    confidence=0.9, sentiment="neutral", sentiment_scores={"negative": 0.1, "neutral": 0.8, "positive": 0.1},
                    sources=[], handoff=handoff, model_version=model_version, doc_id=doc, used_context=False)
    store.record_answer(answer, user=user)
    return store.record_vote(answer.answer_id, vote, user=user, origin="button", intent=correct_intent, doc_id=correct_doc)


def good_feedback(store, users=("u1", "u2", "u3", "u4")):
    """Every user question answered right and 👍'd, by users in turn; a few corrections of wrong answers."""
    intents = list(USER_QUESTIONS)
    n = 0
    for k, (intent, questions) in enumerate(USER_QUESTIONS.items()):
        for i, question in enumerate(questions):
            user = users[(i + k) % len(users)]  # every user both 👍s and corrects
            n += 1
            if i % 4 == 3:  # the bot got it wrong; the user corrects it
                wrong = intents[(intents.index(intent) + 1) % len(intents)]
                record(store, question, wrong, user, "down", correct_intent=intent)
            else:
                record(store, question, intent, user, "up")
    return n


def poisoned_feedback(store, attacker="mallory", helpers=()):
    """One user (plus optional sock puppets) relabels every refund / track_order question as cancel_subscription."""
    n = 0
    for intent in ("refund", "track_order"):
        for question in USER_QUESTIONS[intent] + [q + " please" for q in USER_QUESTIONS[intent]] + [
                q + " now" for q in USER_QUESTIONS[intent]]:
            for user in (attacker, *helpers):
                record(store, question, intent, user, "down", correct_intent="cancel_subscription")
                n += 1
    return n
