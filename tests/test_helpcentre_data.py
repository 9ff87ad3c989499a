"""The help-centre benchmark's converters (benchmarks/helpcentre_data.py) on a slice of the real
shared data: the Markdown they write is what `retrieval.kb.load_documents` parses, with the right
ids and titles. Skipped when ../shared/data is absent."""

from __future__ import annotations

import sys

from tests.conftest import REPO, shared_data

sys.path.insert(0, str(REPO / "benchmarks"))

import helpcentre_data as hd  # noqa: E402

from retrieval.kb import load_documents  # noqa: E402

try:
    from retrieval.kb import split_sections
except ImportError:  # a KB without section parsing
    split_sections = None


def test_stackfaq_threads_become_one_markdown_article_each(tmp_path):
    data = shared_data("stackfaq").parent
    faqs = hd.load_stackfaq_faqs(data)[:5]
    titles = hd.write_stackfaq(tmp_path / "kb", faqs)
    assert len(list((tmp_path / "kb").glob("*.md"))) == 5

    docs = {doc.id: doc for doc in load_documents([tmp_path / "kb"])}
    assert set(docs) == set(titles) == {hd.stackfaq_doc_id(f["faq_id"]) for f in faqs}
    for faq in faqs:
        doc = docs[hd.stackfaq_doc_id(faq["faq_id"])]
        assert doc.title == " ".join(faq["question"].split())
        assert not doc.questions  # a help-centre article: no example questions
        for answer in faq["all_answers"]:  # every answer is in the article, one paragraph each
            assert " ".join(answer.split())[:40] in doc.answer
        assert doc.answer.count("\n\n") == len(faq["all_answers"]) - 1


def test_stackfaq_queries_point_at_the_written_articles(tmp_path):
    data = shared_data("stackfaq").parent
    group0, group1 = hd.load_stackfaq_queries(data, group=0), hd.load_stackfaq_queries(data, group=1)
    assert (len(group0), len(group1)) == (625, 624)
    ids = set(hd.write_stackfaq(tmp_path / "kb", hd.load_stackfaq_faqs(data)))
    assert {gold for _, gold in group0 + group1} <= ids


def test_clinc_oos_are_the_first_oos_rows_in_file_order():
    data = shared_data("clinc150").parent
    oos = hd.load_clinc_oos(data, n=200)
    assert len(oos) == 200 and len(set(oos)) > 190
    assert oos[:3] == hd.load_clinc_oos(data, n=3)


def test_dstc10_entities_become_articles_with_one_section_per_snippet(tmp_path):
    data = shared_data("dstc10_knowledge_faq").parent
    knowledge = hd.load_dstc10_knowledge(data)
    articles = hd.dstc10_articles(knowledge)
    assert len(articles) == 668
    assert sum(len(a["sections"]) for a in articles.values()) == len(knowledge)
    assert articles["dstc10-train-general"]["title"] == "Trains — general"
    assert articles["dstc10-taxi-general"]["title"] == "Taxis — general"

    some = dict(list(articles.items())[:3])
    some["dstc10-train-general"] = articles["dstc10-train-general"]
    hd.write_dstc10(tmp_path / "kb", some)
    docs = {doc.id: doc for doc in load_documents([tmp_path / "kb"])}
    assert set(docs) == set(some)
    for doc_id, article in some.items():
        assert docs[doc_id].title == article["title"]
        headings = [line[3:] for line in docs[doc_id].answer.splitlines() if line.startswith("## ")]
        assert headings == [h for h, _ in article["sections"]]
        if split_sections is not None:  # the KB's own section split sees one section per snippet
            parsed = [s for s in split_sections(docs[doc_id]) if s.heading]
            assert [s.heading for s in parsed] == [h for h, _ in article["sections"]]
            assert all(s.path[0] == article["title"] for s in parsed)


def test_dstc10_val_turns_resolve_to_articles_and_headings():
    data = shared_data("dstc10_knowledge_faq").parent
    knowledge = hd.load_dstc10_knowledge(data)
    articles = hd.dstc10_articles(knowledge)
    turns = hd.load_dstc10_val(data, knowledge)
    target = [t for t in turns if t.target]
    assert (len(target), len(turns) - len(target)) == (104, 159)
    for turn in target:
        assert turn.gold_doc in articles
        assert turn.gold_heading in [h for h, _ in articles[turn.gold_doc]["sections"]]
        assert turn.context and turn.query
    assert all(t.gold_doc is None for t in turns if not t.target)


def test_benchmark_scoring_counts_clarifications_and_sections_apart():
    """The bench's outcome rules on hand-made answer dicts (no model): a clarification is neither an
    answer nor a hand-off, and the right snippet needs the section heading as well as the article."""
    import bench_helpcentre as bench

    answered = {"handoff": False, "doc_id": "a"}
    assert bench.outcome(answered, "a") == "right" and bench.outcome(answered, "b") == "wrong"
    assert bench.outcome({"handoff": True, "doc_id": None}, "a") == "handoff"
    assert bench.outcome({"handoff": True, "doc_id": None}, None) == "declined"
    assert bench.outcome(answered, None) == "answered"
    asks = {"handoff": True, "doc_id": None, "clarify": [{"doc_id": "a", "title": "A"}, {"doc_id": "b"}]}
    assert bench.outcome(asks, "a") == "clarified-right"
    assert bench.outcome({**asks, "clarify": {"options": ["c"]}}, "a") == "clarified-other"
    assert bench.outcome({**asks, "clarify": []}, None) == "declined"  # an empty clarify is no question

    turn = hd.DialogueTurn(0, "q", [], True, "a", "Can I park?", ("hotel", "1", 3))
    other = hd.DialogueTurn(1, "q", [], False, None, None, None)
    no_sections = bench.score_dstc10([answered, {"handoff": True}], [turn], [other])
    assert no_sections["right_article"] == 1.0 and no_sections["right_snippet"] is None  # "n/a"
    sectioned = {**answered, "section": {"id": "s", "heading": "Can I  park?", "path": ["A", "Can I park?"]}}
    assert bench.score_dstc10([sectioned, {"handoff": True}], [turn], [other])["right_snippet"] == 1.0
    wrong_section = {**answered, "section": {"heading": "Is there wifi?"}}
    scored = bench.score_dstc10([wrong_section, answered], [turn], [other])
    assert scored["right_snippet"] == 0.0 and scored["other_declined"] == 0.0
