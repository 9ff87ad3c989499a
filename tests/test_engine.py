"""The answer engine on the real MiniLM encoder, the real FAISS index and the demo KB."""

from __future__ import annotations

import pytest

from bot.answer import OUT_OF_SCOPE

pytestmark = pytest.mark.slow


def test_answers_a_paraphrase_with_the_right_article_and_sources(engine):
    answer = engine.answer("I forgot my password and can't get into my account")
    assert answer.intent == "reset_password" and not answer.handoff
    assert answer.doc_id == "reset-password"
    assert answer.sources[0].doc_id == "reset-password"
    assert answer.sources[0].url.startswith("https://help.parcelly.example/")
    assert 0.0 < answer.confidence <= 1.0
    assert "Forgot password" in answer.text
    assert len({s.doc_id for s in answer.sources}) == len(answer.sources) <= 3


def test_out_of_scope_question_is_declined_and_handed_off(engine):
    answer = engine.answer("What is the capital of France?")
    assert answer.handoff and answer.intent == OUT_OF_SCOPE and answer.doc_id is None
    assert "colleague" in answer.text


def test_json_shape_has_the_documented_keys(engine):
    data = engine.answer("where is my parcel").to_json()
    for key in ("answer_id", "answer", "intent", "confidence", "sentiment", "sources", "handoff", "model_version"):
        assert key in data
    assert set(data["sources"][0]) == {"doc_id", "title", "url", "score"}
    assert data["sentiment"] in ("negative", "neutral", "positive")


def test_batch_path_gives_the_same_answers_as_single_questions(engine):
    questions = ["how do I change my email address", "my package arrived broken", "do you ship to Canada?"]
    batch = engine.answer_batch(questions)
    single = [engine.answer(q) for q in questions]
    assert [a.intent for a in batch] == [a.intent for a in single]
    for a, b in zip(batch, single):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
    assert len({a.answer_id for a in batch + single}) == 6


def test_short_follow_up_uses_the_thread(engine):
    alone = engine.answer("and for express?")
    followed = engine.answer("and for express?", ["How long does delivery take to Germany?"])
    assert followed.used_context and followed.intent in ("shipping_times", "shipping_costs")
    assert followed.confidence > alone.confidence


def test_long_markdown_article_answers_with_its_matching_part(engine):
    answer = engine.answer("Do I have to pay customs duties on orders shipped outside the EU?")
    assert not answer.handoff
    assert answer.sources[0].doc_id in ("shipping-policy", "international-shipping")
    if answer.doc_id == "shipping-policy":
        assert len(answer.text.split()) <= 130


def test_sentiment_of_an_angry_message_is_negative(engine):
    answer = engine.answer("This is the third time my package is lost, absolutely furious, worst service ever!")
    assert answer.sentiment == "negative"
    [(label, scores)] = engine.sentiment(["Thank you so much, the refund arrived, you are great!"])
    assert label == "positive" and scores["positive"] > 0.5
