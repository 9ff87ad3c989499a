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


LONG_ARTICLE = """# Service status and maintenance

We keep you informed when something breaks.

## Incidents

An incident is any unplanned interruption. **Status updates** are posted every 30 minutes until
the fault is fixed.

## Planned maintenance

We sometimes take parts of the service offline for upgrades.

### Maintenance windows

- Tuesdays 02:00–04:00 UTC
- Announced 7 days ahead on [the status page](https://status.example.com)

```
# not a heading: inside a code block
```

## Incidents

A second section with a repeated heading.
"""


def test_markdown_is_split_on_headings_into_sections_with_their_paths(tmp_path):
    from retrieval.kb import split_sections

    doc, = load_documents([write(tmp_path / "status.md", LONG_ARTICLE)])
    sections = split_sections(doc)
    assert [s.id for s in sections] == ["status#", "status#incidents", "status#planned-maintenance",
                                        "status#maintenance-windows", "status#incidents-2"]
    windows = sections[3]
    assert windows.path == ("Service status and maintenance", "Planned maintenance", "Maintenance windows")
    assert windows.text.startswith("- Tuesdays 02:00–04:00 UTC") and "# not a heading" in windows.text
    incidents = sections[1]
    assert incidents.text.endswith("until\nthe fault is fixed.") and "Planned maintenance" not in incidents.text
    chunks = chunk_document(doc, max_words=120)
    assert {c.section for c in chunks} == {s.id for s in sections}
    # a chunk never runs across a heading, and carries its heading path
    assert any(c.text.startswith("Service status and maintenance › Incidents: An incident is") for c in chunks)
    assert not any("##" in c.text or "**" in c.text for c in chunks)


def test_markdown_without_a_title_heading_keeps_all_its_text_and_takes_the_file_name(tmp_path):
    doc, = load_documents([write(tmp_path / "refund-policy.md", "Refunds take 5 days.\n\n## Exceptions\n\nGift cards.")])
    assert doc.title == "Refund policy" and doc.answer.startswith("Refunds take 5 days.")
    doc, = load_documents([write(tmp_path / "fm.md", "---\ntitle: Opening hours\nurl: https://help.example/hours\n---\nWe open at 9.")])
    assert (doc.title, doc.url, doc.answer) == ("Opening hours", "https://help.example/hours", "We open at 9.")


ZENDESK_EXPORT = """<!DOCTYPE html>
<html><head><title>Change your plan – Help Center</title>
<link rel="canonical" href="https://help.example.com/hc/articles/360-change-plan">
<script>window.analytics = {};</script></head>
<body><header><nav><a href="/">Home</a> &gt; <a href="/billing">Billing</a></nav></header>
<article>
  <h1>Change your plan</h1>
  <p>You can upgrade or downgrade at any time from <strong>Settings &rarr; Billing</strong>.</p>
  <h2>Upgrading</h2>
  <ol><li>Open <em>Billing</em>.</li><li>Click <code>Change plan</code>.</li></ol>
  <h2>Downgrading</h2>
  <p>Downgrades take effect at the end of the period. See <a href="https://help.example.com/refunds">refunds</a>.</p>
</article>
<footer>© Example Inc.</footer></body></html>
"""


def test_html_help_centre_export_becomes_a_markdown_article_with_sections(tmp_path):
    from retrieval.kb import split_sections

    doc, = load_documents([write(tmp_path / "360-change-plan.html", ZENDESK_EXPORT)])
    assert doc.id == "360-change-plan" and doc.title == "Change your plan"
    assert doc.url == "https://help.example.com/hc/articles/360-change-plan"
    assert "analytics" not in doc.answer and "Home" not in doc.answer and "Example Inc" not in doc.answer
    assert "**Settings → Billing**" in doc.answer
    sections = {s.heading: s for s in split_sections(doc)}
    assert set(sections) == {"", "Upgrading", "Downgrading"}
    assert "1. Open *Billing*." in sections["Upgrading"].text and "`Change plan`" in sections["Upgrading"].text
    assert "[refunds](https://help.example.com/refunds)" in sections["Downgrading"].text


def test_unsupported_files_in_a_folder_are_listed_as_skipped(tmp_path):
    write(tmp_path / "a.md", "# A\n\ntext")
    write(tmp_path / "manual.pdf", "%PDF")
    write(tmp_path / ".DS_Store", "x")
    skipped = []
    docs = load_documents([tmp_path], skipped)
    assert [d.id for d in docs] == ["a"] and skipped == [tmp_path / "manual.pdf"]


# ----- size limit per article (`max_article_bytes`) -------------------------------------------------

def test_a_file_over_the_article_limit_is_refused_by_its_size_before_it_is_read(tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    write(kb / "small.md", "# Small\n\nShort text.\n")
    big = kb / "dump.md"
    big.write_bytes(b"# Dump\n\n" + b"\xff" * 3000)  # not UTF-8: only its size may be looked at
    with pytest.raises(KnowledgeBaseError) as err:
        load_documents([kb], max_article_bytes=2000)
    assert str(err.value) == (f"{big}: file of 3,008 bytes, over the limit of 2,000 bytes per article "
                              "(setting max_article_bytes): split it into smaller articles")
    with pytest.raises(KnowledgeBaseError, match=r"dump\.md:3: not valid UTF-8"):  # 0: no limit, so it is read
        load_documents([kb], max_article_bytes=0)


def test_a_knowledge_base_of_many_articles_may_be_far_larger_than_the_limit(tmp_path):
    for i in range(40):
        write(tmp_path / f"article-{i}.md", f"# Article {i}\n\n" + "A normal paragraph of help text. " * 150)
    docs = load_documents([tmp_path], max_article_bytes=10_000)  # ~5 kB each, ~200 kB in all
    assert len(docs) == 40 and sum(len(d.answer) for d in docs) > 15 * 10_000


def test_a_jsonl_or_csv_row_over_the_limit_names_its_line(tmp_path):
    rows = [{"title": "A", "answer": "short"}, {"title": "B", "answer": "x" * 5000}]
    jsonl = write(tmp_path / "kb.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(KnowledgeBaseError, match=rf"^{jsonl}:2: row of 5,0\d\d bytes, over the limit of 4,000 bytes"):
        load_documents([jsonl], max_article_bytes=4000)
    csv_file = write(tmp_path / "kb.csv", "title,answer\nC,short\nD," + "y" * 5000 + "\n")
    with pytest.raises(KnowledgeBaseError, match=rf"^{csv_file}:3: row of 5,00\d bytes, over the limit"):
        load_documents([csv_file], max_article_bytes=4000)
    assert len(load_documents([jsonl, csv_file], max_article_bytes=6000)) == 4


def test_a_csv_answer_longer_than_the_csv_modules_field_limit_loads(tmp_path):
    # the csv module's own default refuses fields over 131,072 characters as malformed
    csv_file = write(tmp_path / "kb.csv", "title,answer\nLong,\"" + "word " * 40_000 + "\"\n")
    [doc] = load_documents([csv_file], max_article_bytes=2_000_000)
    assert len(doc.answer) == 200_000 - 1


def test_an_html_page_is_measured_by_its_article_text_not_its_markup(tmp_path):
    script = "<script>var x = '" + "z" * 20_000 + "';</script>"
    write(tmp_path / "page.html", f"<html><head>{script}</head><body><nav>{'menu ' * 2000}</nav>"
          "<article><h1>Returns</h1><p>Send it back within 30 days.</p></article></body></html>")
    [doc] = load_documents([tmp_path / "page.html"], max_article_bytes=5000)
    assert doc.title == "Returns" and doc.answer == "Send it back within 30 days."
    long_page = write(tmp_path / "long.html", "<article><h1>Long</h1><p>" + "text " * 2000 + "</p></article>")
    with pytest.raises(KnowledgeBaseError, match=rf"^{long_page}: article text of 9,99\d bytes, over the limit"):
        load_documents([long_page], max_article_bytes=5000)


def test_plain_text_strips_links_and_keeps_unclosed_brackets():
    from retrieval.kb import plain_text

    assert plain_text("See [the guide](https://x.example/a) and ![logo](l.png).") == "See the guide and logo."
    assert plain_text("[Foo](https://en.wikipedia.org/wiki/Foo_(bar)) is a page.") == "Foo is a page."
    assert plain_text("a[i] [unclosed and (open ](x") == "a[i] [unclosed and (open ](x"
