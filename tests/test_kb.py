"""Knowledge-base parsing, chunking and merging (no model needed)."""

from __future__ import annotations

import json

import pytest

from retrieval.kb import KnowledgeBaseError, chunk_document, load_documents, merge_documents
from tests.conftest import DEMO_KB


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_demo_kb_parses_with_questions_and_markdown_articles():
    docs = load_documents([DEMO_KB])
    by_id = {d.id: d for d in docs}
    assert len(docs) >= 30
    assert by_id["reset-password"].intent == "reset_password"
    assert len(by_id["reset-password"].questions) >= 6
    policy = by_id["shipping-policy"]
    assert policy.title.startswith("Parcelly Shipping Policy") and policy.questions == []
    assert len(chunk_document(policy, 120)) >= 5


def test_csv_questions_are_pipe_separated_and_ids_default_to_title_slug(tmp_path):
    path = write(tmp_path / "kb.csv", "title,answer,questions,url\n"
                 "Opening hours,We are open 9-5.,when are you open?|are you open on sunday,https://x.example/h\n")
    [doc] = load_documents([path])
    assert doc.id == "opening-hours"
    assert doc.questions == ["when are you open?", "are you open on sunday"]
    assert doc.url == "https://x.example/h" and doc.label == "opening-hours"


@pytest.mark.parametrize("content, where, message", [
    ('{"id": "a", "title": "A", "answer": "x"}\n{"id": "b", "title": "B"\n', ":2:", "invalid JSON"),
    ('{"id": "a", "title": "A", "answer": "x"}\n{"id": "b", "title": "B"}\n', ":2:", "missing answer"),
    ('{"id": "a", "title": "A", "answer": "x", "questions": "not a list"}\n', ":1:", None),
    ('["not", "an", "object"]\n', ":1:", "expected an object"),
    ('{"id": "a", "title": "A", "answer": "x"}\n{"id": "a", "title": "B", "answer": "y"}\n', ":2", "duplicate article id"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, content, where, message):
    path = write(tmp_path / "bad.jsonl", content)
    if message is None:  # a string `questions` is allowed in JSONL only as '|'-separated text
        assert load_documents([path])[0].questions == ["not a list"]
        return
    with pytest.raises(KnowledgeBaseError) as err:
        load_documents([path])
    assert f"{path}{where}" in str(err.value) and message in str(err.value)


def test_csv_without_answer_column_and_binary_file_are_clear_errors(tmp_path):
    with pytest.raises(KnowledgeBaseError, match=r"kb\.csv:1: CSV header lacks answer"):
        load_documents([write(tmp_path / "kb.csv", "title,text\nA,B\n")])
    binary = tmp_path / "x.md"
    binary.write_bytes(b"# T\n\xff\xfe broken")
    with pytest.raises(KnowledgeBaseError, match=r"x\.md:2: not valid UTF-8"):
        load_documents([binary])
    with pytest.raises(KnowledgeBaseError, match="unsupported file type"):
        load_documents([write(tmp_path / "kb.pdf", "%PDF")])
    with pytest.raises(KnowledgeBaseError, match="no such file"):
        load_documents([tmp_path / "missing.md"])


def test_markdown_title_from_first_heading_and_long_articles_chunked(tmp_path):
    body = "\n\n".join(f"Paragraph {i}: " + "word " * 50 for i in range(6))
    doc, = load_documents([write(tmp_path / "Returns Guide.md", f"Intro line\n# Returns guide\n\n{body}")])
    assert doc.id == "returns-guide" and doc.title == "Returns guide"
    chunks = chunk_document(doc, max_words=120)
    assert len(chunks) == 3
    assert all(c.text.startswith("Returns guide: ") and len(c.text.split()) <= 125 for c in chunks)


def test_merge_replaces_changed_adds_new_and_prunes_only_when_asked(tmp_path):
    old = load_documents([write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in [
        {"id": "a", "title": "A", "answer": "1"}, {"id": "b", "title": "B", "answer": "2"}]))])
    new = load_documents([write(tmp_path / "b.jsonl", "\n".join(json.dumps(r) for r in [
        {"id": "b", "title": "B", "answer": "changed"}, {"id": "c", "title": "C", "answer": "3"}]))])
    merged, report = merge_documents(old, new)
    assert [d.id for d in merged] == ["a", "b", "c"] and merged[1].answer == "changed"
    assert (report.added, report.changed, report.removed) == (["c"], ["b"], [])
    merged, report = merge_documents(old, new, prune=True)
    assert [d.id for d in merged] == ["b", "c"] and report.removed == ["a"]
    merged, report = merge_documents(merged, new)
    assert not report.modified
