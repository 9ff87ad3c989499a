"""Which article a composed answer is about: the first section it cites. A composition that answers
from [2] (another article than the select answer's) is stored under that article, so a 👍 on it
teaches the classifier what the reader actually got. The engine, its passages and the store are
real; the language model replays a fixed reply (tests/compose/test_composer_policy.py says why)."""

from __future__ import annotations

from core.settings import ComposeSettings, Settings
from serving.compose import Composer
from serving.engine import Engine
from store import Store


class Replay:
    name = "replay"

    def __init__(self, text: str):
        self.text = text

    def stream(self, messages, *, max_new_tokens, temperature=0.0, stop=None, cancel=None):
        yield self.text


QUESTION = "How do I delete my account?"


def composed(engine, text_for):
    select = engine.answer(QUESTION)
    passages = engine.passages(select)
    assert len(passages) >= 2 and passages[1].doc_id != select.doc_id
    composition = Composer(Replay(text_for(passages)), ComposeSettings()).compose(QUESTION, passages)
    assert composition.outcome == "composed", composition.reason
    return select, passages, engine.composed_answer(select, passages, composition)


def first_sentence(passage) -> str:
    return passage.text.split(". ")[0].strip().rstrip(".")


def test_an_answer_from_the_second_section_is_that_articles(home):
    settings = Settings.load(env={}, home=home)
    engine = Engine(settings)
    select, passages, answer = composed(engine, lambda ps: f"{first_sentence(ps[1])} [2].")
    second = engine.catalogue().articles[passages[1].doc_id]
    assert answer.doc_id == second.id and answer.intent == second.label != select.intent
    assert [s.doc_id for s in answer.sources] == [p.doc_id for p in passages]  # [n] is still sources[n - 1]
    with Store.from_settings(settings) as store:
        store.record_answer(answer, origin="cli")
        row = store.get_answer(answer.answer_id)
    assert row["doc_id"] == second.id and row["intent"] == second.label


def test_an_answer_citing_the_chosen_section_first_keeps_its_article(home):
    engine = Engine(Settings.load(env={}, home=home))
    select, passages, answer = composed(engine, lambda ps: f"{first_sentence(ps[0])} [1]. {first_sentence(ps[1])} [2].")
    assert answer.doc_id == select.doc_id and answer.intent == select.intent
