"""What the composer gate's scoring counts (training/compose_gate.py: `score_composer`), on drafts fixed
in advance: an OpenAI-compatible endpoint on loopback serves them, through the real OpenAI backend.
The real model's drafts vary with the CPU (tests/compose/scripted_endpoint.py), these do not, so each
metric — the off-topic rows' included — is pinned here; tests/training/test_compose_train.py trains
and scores the real model."""

from __future__ import annotations

import pytest

from core.settings import RetrainSettings
from models.composer_openai import OpenAIChat
from serving.compose import Passage
from tests.compose.scripted_endpoint import MODEL, ScriptedEndpoint
from training.compose_gate import ComposerEvalRow, decide_composer, score_composer

REFUND = "Refunds go back to the original payment method within 5 working days."
TRACK = "Open Orders and click Track: you see the carrier's live status."
HOURS = "Our team answers from 8am to 8pm, Monday to Saturday."


def passages(*texts: str) -> list[Passage]:
    ids = {REFUND: "refund", TRACK: "track-order", HOURS: "opening-hours"}
    return [Passage(n, ids[t], ids[t].replace("-", " ").title(), "", None, t) for n, t in enumerate(texts, start=1)]


ROWS = [
    ComposerEvalRow("how long does a refund take", passages(REFUND, HOURS), REFUND, True),
    ComposerEvalRow("where is my parcel", passages(TRACK, HOURS), TRACK, True),
    ComposerEvalRow("what is the capital of australia", passages(HOURS, REFUND), "", False),
    ComposerEvalRow("tell me a joke", passages(HOURS, TRACK), "", False),
]
DRAFTS = {
    "how long does a refund take": REFUND.rstrip(".") + " [1].",  # copied and cited: passes
    "where is my parcel": "Open Orders and click Track [2]; it arrives in 3 days.",  # wrong citation, invented 3
    "what is the capital of australia": "NO_ANSWER",  # abstains
    "tell me a joke": "Our team answers from 8am to 11pm [1].",  # answers off-topic, invents 11
}


def draft_for(messages: list[dict]) -> str:
    [question] = [q for q in DRAFTS if q in messages[-1]["content"]]
    return DRAFTS[question]


@pytest.fixture
def scripted():
    with ScriptedEndpoint(draft_for) as url:
        yield OpenAIChat(url, MODEL)


def test_each_metric_counts_what_the_drafts_do(scripted):
    scores = score_composer(scripted, ROWS, config=RetrainSettings(composer_max_new_tokens=48))
    assert (scores["answerable"], scores["offtopic"]) == (2, 2)
    assert scores["guard_pass_rate"] == 0.5 and scores["citation_accuracy"] == 0.5
    assert scores["false_abstention_rate"] == 0.0 and scores["oos_abstention_rate"] == 0.5
    assert scores["invented_rate"] == 0.5  # of all four rows: the parcel's 3 days and the joke's 11pm
    assert 0.5 < scores["token_f1"] < 1.0 and 0.5 < scores["faithfulness"] < 1.0  # the copy scores 1, the other less
    guard = {s["question"]: s["guard"] for s in scores["samples"]}
    assert guard["what is the capital of australia"] == "abstained" and guard["how long does a refund take"] == []
    assert any(p.startswith("number 11") for p in guard["tell me a joke"])
    assert any(p.startswith("number 3") for p in guard["where is my parcel"])


def test_an_off_topic_answer_that_invents_a_number_keeps_a_composer_out(scripted):
    """The same drafts as a candidate against a current composer that abstains on the off-topic rows
    and copies the answerable ones: more faithful nowhere, and it invents: rejected, with the reason."""
    candidate = score_composer(scripted, ROWS, config=RetrainSettings())
    current = {**candidate, "guard_pass_rate": 1.0, "citation_accuracy": 1.0, "oos_abstention_rate": 1.0,
               "invented_rate": 0.0}
    decision = decide_composer(current, candidate, RetrainSettings())
    assert not decision.promote
    assert "invented facts (numbers, URLs, e-mails the sections lack) 0.000 → 0.500 — rises: never promoted" in decision.reasons
    assert "oos abstention rate 1.000 → 0.500" in decision.reasons
