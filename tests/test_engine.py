"""The answer engine on the real MiniLM encoder, the real FAISS index and the demo KB."""

from __future__ import annotations

import pytest

from core.answer import OUT_OF_SCOPE

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


@pytest.mark.parametrize("runtime", ["torch", "auto"])  # auto: the demo version serves int8
def test_batch_path_gives_the_same_answers_as_single_questions(demo_home, runtime):
    from core.settings import Settings
    from serving.engine import Engine

    engine = Engine(Settings.load(env={}, home=demo_home, runtime=runtime))
    assert engine.runtime == {"torch": "torch", "auto": "onnx-int8"}[runtime]
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
    assert followed.used_context and followed.intent == "shipping_times"  # how long, now for express
    assert followed.confidence > alone.confidence


def test_long_markdown_article_answers_with_its_matching_section(engine):
    answer = engine.answer("Shipping policy: are orders to Zone 3 shipped duties paid or duties unpaid?")
    assert not answer.handoff
    assert answer.doc_id == "shipping-policy" and answer.sources[0].doc_id == "shipping-policy"
    assert answer.section["heading"] == "Customs, duties and taxes"
    assert answer.section["path"] == ["Parcelly Shipping Policy: Carriers, Zones and Customs", "Customs, duties and taxes"]
    section = engine.section_text(answer.section["id"])
    assert answer.text == section and "Zone 3" in answer.text  # the whole section, figures included
    assert "## " not in answer.text  # it never runs into the next section's heading
    article = engine.served.documents["shipping-policy"].answer
    assert len(answer.text.split()) < len(article.split()) / 2


def test_sentiment_of_an_angry_message_is_negative(engine):
    answer = engine.answer("This is the third time my package is lost, absolutely furious, worst service ever!")
    assert answer.sentiment == "negative"
    [(label, scores)] = engine.sentiment(["Thank you so much, the refund arrived, you are great!"])
    assert label == "positive" and scores["positive"] > 0.5


def test_text_no_tokenizer_should_see_is_cleaned_where_it_enters_the_engine(engine):
    from core.text import clean_text

    assert clean_text("a\ud800b\x00c\r\n\td \ud83d\ude00 é") == "a\ufffdbc\n\td \U0001f600 é"  # a pair joins
    raw = "I forgot my\x00 password and can't get \ud800into my account\x1b"
    answer = engine.answer(raw)  # a lone surrogate made the tokenizer raise
    assert answer.question == "I forgot my password and can't get \ufffdinto my account"
    assert answer.doc_id == "reset-password" and not answer.handoff
    [(label, _)] = engine.sentiment(["\ud800 absolutely furious, worst service ever!\x00"])
    assert label == "negative"


def test_questions_learned_from_feedback_join_the_index_and_vote_for_their_intent(settings):
    """A retrain's labelled feedback questions are indexed as `learned` entries, filed under the
    first article of their intent, and feed the nearest-neighbour vote for that intent."""
    from retrieval.index import LEARNED
    from retrieval.kb import load_documents
    from serving.engine import Engine
    from serving.versions import TrainingExample
    from tests.conftest import DEMO_KB
    from training.build import build_version

    question = "Can I send back a sweater that doesn't fit and get my money back?"
    before = Engine(settings).answer(question)
    learned = [TrainingExample("can I send back a jumper that is too small and get my money back", "return_item"),
               TrainingExample("sweater doesn't fit, how do I send it back for a refund", "return_item")]
    result = build_version(load_documents([DEMO_KB]), settings, extra_examples=learned)
    entries = [e for e in Engine(settings, version=result.version.name).served.index.entries if e.kind == LEARNED]
    assert [(e.doc_id, e.text) for e in entries] == [("return-item", ex.text) for ex in learned]

    after = Engine(settings, version=result.version.name).answer(question)
    assert after.intent == "return_item" and not after.handoff
    assert after.confidence > before.confidence
    assert after.sources[0].doc_id == "return-item"


def test_answering_commands_apply_the_configured_torch_threads(home):
    import torch

    from bot.runtime import open_engine
    from core.settings import Settings

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        open_engine(Settings.load(env={}, home=home, torch_threads=0))
        assert torch.get_num_threads() == 2  # 0 leaves torch's setting alone
        engine = open_engine(Settings.load(env={"CSBOT_TORCH_THREADS": "1"}, home=home))
        assert torch.get_num_threads() == 1
        assert engine.answer("I forgot my password").intent == "reset_password"
    finally:
        torch.set_num_threads(before)
