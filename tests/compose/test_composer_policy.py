"""The policy around a language model (serving/compose.py `Composer`): sentences are released only
once checked, a failing sentence stops the stream before it is shown, budgets and backend errors fall
back to the select answer, NO_ANSWER abstains.

The backend here replays a fixed reply: a real model cannot be made to invent a given fact on cue,
and what is under test is the policy, not the model (tests/compose/test_compose_real.py runs the
real SmolLM2 through the same code)."""

from __future__ import annotations

import time

import pytest

from core.settings import ComposeSettings
from serving.compose import Composer, GuardFailure, Passage

PASSAGES = [Passage(1, "refund-policy", "Refund policy", "", None,
                    "Refunds reach your card within 5-10 business days. PayPal refunds arrive within 1-3 days.")]


class Replay:
    """A backend that replays `text` a few characters at a time (optionally slowly, or failing)."""

    name = "replay"

    def __init__(self, text: str, *, delay: float = 0.0, fail_after: int | None = None):
        self.text, self.delay, self.fail_after = text, delay, fail_after
        self.seen: list[dict] = []

    def stream(self, messages, *, max_new_tokens, temperature=0.0, stop=None, cancel=None):
        self.seen = messages
        for i in range(0, len(self.text), 4):
            if self.fail_after is not None and i >= self.fail_after:
                raise ConnectionError("endpoint went away")
            time.sleep(self.delay)
            yield self.text[i:i + 4]


def composer(text, **kwargs) -> Composer:
    backend_args = {k: kwargs.pop(k) for k in ("delay", "fail_after") if k in kwargs}
    return Composer(Replay(text, **backend_args), ComposeSettings(**kwargs))


def drain(stream) -> tuple[list[str], object]:
    shown = []
    try:
        while True:
            shown.append(next(stream))
    except StopIteration as stop:
        return shown, stop.value


GOOD = "Refunds reach your card within 5-10 business days [1]. PayPal refunds arrive within 1-3 days [1]."


def test_a_grounded_reply_streams_sentence_by_sentence():
    shown, result = drain(composer(GOOD).stream("how long do refunds take?", PASSAGES))
    assert shown == ["Refunds reach your card within 5-10 business days [1]. ",
                     "PayPal refunds arrive within 1-3 days [1]."]
    assert result.outcome == "composed" and result.text == GOOD and result.guard.ok
    assert result.first_token_seconds is not None and result.pieces == len(GOOD) // 4 + 1


def test_a_sentence_with_an_invented_number_is_never_shown():
    text = "Refunds reach your card within 5-10 business days [1]. Card refunds over 500 euros take 30 days [1]."
    stream = composer(text).stream("how long do refunds take?", PASSAGES)
    assert next(stream) == "Refunds reach your card within 5-10 business days [1]. "
    with pytest.raises(GuardFailure) as failure:
        next(stream)
    assert failure.value.composition.outcome == "fallback"
    assert failure.value.composition.reason == "guard: number 500 is not in the sections"


def test_the_whole_composition_falls_back_on_the_guard():
    result = composer("You get 100% back within 2 weeks [1].").compose("refund?", PASSAGES)
    assert result.outcome == "fallback" and result.reason.startswith("guard: number 100%")
    assert result.to_dict()["draft"] == "You get 100% back within 2 weeks [1]."  # kept for review, not shown


def test_no_answer_abstains():
    result = composer("NO_ANSWER").compose("what is the capital of France?", PASSAGES)
    assert result.outcome == "abstained"


def test_the_first_token_budget_falls_back_before_anything_is_shown():
    stream = composer(GOOD, delay=0.05, first_token_budget_seconds=0.01).stream("refund?", PASSAGES)
    with pytest.raises(GuardFailure) as failure:
        next(stream)
    assert failure.value.composition.reason == "first token not within 0.01s budget"


def test_the_latency_budget_falls_back():
    result = composer(GOOD, delay=0.02, latency_budget_seconds=0.2).compose("refund?", PASSAGES)
    assert result.outcome == "fallback" and result.reason == "still writing after the 0.2s budget"


def test_a_backend_error_falls_back_to_select():
    result = composer(GOOD, fail_after=8).compose("refund?", PASSAGES)
    assert result.outcome == "fallback" and "ConnectionError: endpoint went away" in result.reason
    stream = composer(GOOD, fail_after=60).stream("refund?", PASSAGES)
    assert next(stream).startswith("Refunds reach")
    with pytest.raises(GuardFailure):  # after something was shown, the front end must replace it
        next(stream)


def test_no_passages_no_composition():
    result = composer(GOOD).compose("refund?", [])
    assert result.outcome == "fallback" and result.reason == "no section to compose from"


def test_the_guard_can_be_turned_off():
    result = composer("You get 100% back within 2 weeks [1].", guard=False).compose("refund?", PASSAGES)
    assert result.outcome == "composed" and not result.guard.ok  # reported, not enforced


def test_a_sentence_citing_a_section_it_was_not_given_is_never_shown():
    stream = composer("[4] Refunds reach your card within 5-10 business days.\nMore.").stream("refund?", PASSAGES)
    with pytest.raises(GuardFailure) as failure:
        next(stream)
    assert failure.value.composition.reason == "guard: cites [4], which it was not given"
