"""Knowledge-base documents: parsing Markdown/text, HTML, CSV and JSONL files; sections and chunks.

- Markdown / text (`.md`, `.markdown`, `.txt`): one article per file; the title is the first `# `
  heading, else a front-matter `title:`, else the file name (the text is always kept); the id is
  the file name without extension, slugified (or front-matter `id:`; `url:` is read too).
- HTML (`.html`, `.htm`): one article per file, as help centres (Zendesk, Intercom, Freshdesk)
  export them. BeautifulSoup finds the article (`<article>`/`<main>`/`<body>`, without scripts,
  navigation, headers and footers), its title (`<h1>`, else `<title>`) and its canonical URL;
  markdownify turns the rest into Markdown, which is then read like a Markdown article.
- CSV / JSONL rows: `{id, title, answer, intent?, questions?, url?}`. `questions` is a list in JSONL
  or `|`-separated in CSV. A row without `id` gets the slug of its title.
Every error names the file and line; a file with any bad row is rejected whole, so nothing is
half-ingested. An article over `max_article_bytes` (core/settings/serving.py) is such an error, found from a
Markdown file's size before any file is read.

An article's text (Markdown) is split on its headings into `Section`s (markdown-it-py finds the
headings, so a `#` inside a code block is not one). Each section knows its heading path (article
title › heading › sub-heading); the index holds each heading and each section's chunks under the
section's id, and an answer quotes the matching section.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.errors import UserError

TEXT_SUFFIXES = {".md", ".markdown", ".txt"}
HTML_SUFFIXES = {".html", ".htm"}
ROW_SUFFIXES = {".csv", ".jsonl"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | ROW_SUFFIXES
SECTION_SEP = " › "  # between the parts of a heading path
_CSV_FIELD_MAX = 2**31 - 1  # no article size limit: any CSV field the csv module can hold


class KnowledgeBaseError(UserError):
    """A knowledge-base file could not be read; the message names the file and line."""


@dataclass
class Document:
    id: str
    title: str
    answer: str
    intent: str | None = None
    questions: list[str] = field(default_factory=list)
    url: str | None = None
    source: str = ""

    @property
    def label(self) -> str:
        """The intent the classifier learns for this article: its intent, else its id."""
        return self.intent or self.id

    def content_hash(self) -> str:
        data = asdict(self)
        data.pop("source")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Document":
        return cls(**{k: data.get(k) for k in ("id", "title", "answer", "intent", "url", "source")},
                   questions=list(data.get("questions") or []))


@dataclass(frozen=True)
class Section:
    """One part of an article: the text under one heading (or the lead text before the first)."""

    id: str  # "<doc_id>#<heading slug>"; the lead text is "<doc_id>#"
    doc_id: str
    heading: str  # "" for the lead text
    path: tuple[str, ...]  # the article title, then each heading above and including this one
    text: str  # Markdown, without the heading line

    @property
    def label(self) -> str:
        """How the section is named to people: "Article › Heading"."""
        return SECTION_SEP.join(self.path)


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    text: str  # what the index embeds: "<title> › <heading>: <plain text>"
    section: str = ""  # the id of the section it comes from


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:80] or "doc"


def expand_paths(paths: list[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """Files named directly, plus every supported file under named folders (sorted).

    Files under a folder that are not of a supported type are appended to `skipped` (hidden files
    and folders, such as `.git`, are not listed)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if not p.is_file() or any(part.startswith(".") for part in p.relative_to(path).parts):
                    continue
                if p.suffix.lower() in SUPPORTED_SUFFIXES:
                    files.append(p)
                elif skipped is not None:
                    skipped.append(p)
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise KnowledgeBaseError(f"{path}: unsupported file type {path.suffix!r} "
                                         f"(use {', '.join(sorted(SUPPORTED_SUFFIXES))})")
            files.append(path)
        else:
            raise KnowledgeBaseError(f"{path}: no such file or directory")
    return files


def load_documents(paths: list[str | Path], skipped: list[Path] | None = None, *,
                   max_article_bytes: int | None = None) -> list[Document]:
    """Parse every file; duplicate ids across files are an error naming both places.

    Unsupported files found in folders are appended to `skipped` (see `expand_paths`). With
    `max_article_bytes` (None or 0: no limit), an article larger than that is an error naming it
    (`check_size`): every Markdown/text file's size is checked before any file is read."""
    files = expand_paths(paths, skipped)
    if max_article_bytes:
        for path in files:
            if path.suffix.lower() in TEXT_SUFFIXES:
                try:
                    size = path.stat().st_size
                except OSError as exc:
                    raise KnowledgeBaseError(f"{path}: cannot read: {exc.strerror}") from exc
                check_size(str(path), "file", size, max_article_bytes)
    documents: list[Document] = []
    seen: dict[str, str] = {}
    for path in files:
        for doc in parse_file(path, max_article_bytes):
            if doc.id in seen:
                raise KnowledgeBaseError(f"{doc.source}: duplicate article id {doc.id!r} (first at {seen[doc.id]})")
            seen[doc.id] = doc.source
            documents.append(doc)
    return documents


def check_size(where: str, what: str, size: int, limit: int | None) -> None:
    """One article (a file, an HTML page's text, a CSV/JSONL row) of `size` bytes must fit `limit`:
    a help-centre article is well under a megabyte, and one of many megabytes is a dump that would
    take many minutes to build into thousands of chunks of a single article."""
    if limit and size > limit:
        raise KnowledgeBaseError(f"{where}: {what} of {_bytes(size)}, over the limit of {_bytes(limit)} per article "
                                 "(setting max_article_bytes): split it into smaller articles")


def _bytes(n: int) -> str:
    return f"{n:,} bytes ({n / 1e6:.1f} MB)" if n >= 100_000 else f"{n:,} bytes"


def parse_file(path: Path, max_article_bytes: int | None = None) -> list[Document]:
    suffix = path.suffix.lower()
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise KnowledgeBaseError(f"{path}:{line}: not valid UTF-8 text") from exc
    except OSError as exc:
        raise KnowledgeBaseError(f"{path}: cannot read: {exc.strerror}") from exc
    if suffix in TEXT_SUFFIXES:
        check_size(str(path), "file", len(raw), max_article_bytes)
        return [_parse_markdown(path, text)]
    if suffix in HTML_SUFFIXES:
        return [_parse_html(path, text, max_article_bytes)]
    if suffix == ".jsonl":
        return _parse_jsonl(path, text, max_article_bytes)
    return _parse_csv(path, text, max_article_bytes)


def _parse_markdown(path: Path, text: str, *, title: str | None = None, url: str | None = None) -> Document:
    meta, text, body_line = _front_matter(text)
    doc_id = slugify(meta.get("id") or path.stem)
    url = meta.get("url") or url
    title = meta.get("title") or title
    lines = text.strip("\n").splitlines()
    if not "".join(lines).strip():
        raise KnowledgeBaseError(f"{path}:1: empty article")
    body_lines = lines
    if title is None:
        for number, line in enumerate(lines):
            if line.startswith("# ") and line[2:].strip():
                # The first `# ` heading is the title; text above it is kept as the lead.
                title, body_lines = line[2:].strip(), lines[:number] + lines[number + 1:]
                body_line += number + 1
                break
    if title is None:  # no `# ` heading: the file name is the title, and every line is text
        title = re.sub(r"[-_]+", " ", path.stem).strip().capitalize() or doc_id
    body = "\n".join(body_lines).strip()
    if not body:
        raise KnowledgeBaseError(f"{path}:{body_line + 1}: article {title!r} has a title but no text")
    return Document(id=doc_id, title=title, answer=body, url=url, source=str(path))


def _front_matter(text: str) -> tuple[dict[str, str], str, int]:
    """A leading `---` block of `key: value` lines (as static-site and help-centre exports write):
    (its title/id/url, the text after it, the line number where that text starts)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text, 0
    for end in range(1, min(len(lines), 200)):
        if lines[end].strip() in ("---", "..."):
            meta = {}
            for line in lines[1:end]:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() in ("title", "id", "url"):
                    meta[key.strip().lower()] = value.strip().strip("\"'")
            return {k: v for k, v in meta.items() if v}, "\n".join(lines[end + 1:]), end + 1
    return {}, text, 0


def _parse_html(path: Path, text: str, max_article_bytes: int | None = None) -> Document:
    """One help-centre article exported as HTML → a Markdown article (see the module doc). Its size
    is its article's Markdown, not the page's: exports carry navigation, scripts and inline images."""
    from bs4 import BeautifulSoup
    from markdownify import markdownify

    soup = BeautifulSoup(text, "html.parser")
    canonical = soup.find("link", rel="canonical") or soup.find("meta", attrs={"property": "og:url"})
    url = (canonical.get("href") or canonical.get("content")) if canonical else None
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    root = soup.find("article") or soup.find("main") or soup.body or soup
    for tag in root.find_all(["script", "style", "noscript", "nav", "header", "footer", "form", "iframe", "svg"]):
        tag.decompose()
    h1 = root.find("h1")
    title = h1.get_text(" ", strip=True) if h1 else ""
    if h1:
        h1.decompose()
    title = title or page_title or None
    markdown = markdownify(str(root), heading_style="ATX", bullets="-", strip=["img"])
    markdown = re.sub(r"\n{3,}", "\n\n", markdown).strip()
    if not markdown:
        raise KnowledgeBaseError(f"{path}:1: no article text found in the HTML")
    check_size(str(path), "article text", len(markdown.encode("utf-8")), max_article_bytes)
    return _parse_markdown(path, markdown, title=title, url=url or None)


def _row_to_document(path: Path, line: int, row: dict) -> Document:
    where = f"{path}:{line}"
    if not isinstance(row, dict):
        raise KnowledgeBaseError(f"{where}: expected an object with title and answer, got {type(row).__name__}")
    title = _text_field(row, "title", where)
    answer = _text_field(row, "answer", where)
    if not title or not answer:
        missing = [name for name, value in (("title", title), ("answer", answer)) if not value]
        raise KnowledgeBaseError(f"{where}: missing {' and '.join(missing)}")
    questions = row.get("questions") or []
    if isinstance(questions, str):
        questions = [q.strip() for q in questions.split("|")]
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise KnowledgeBaseError(f"{where}: questions must be a list of strings")
    doc_id = _text_field(row, "id", where) or slugify(title)
    return Document(
        id=doc_id,
        title=title,
        answer=answer,
        intent=_text_field(row, "intent", where) or None,
        questions=[q.strip() for q in questions if q.strip()],
        url=_text_field(row, "url", where) or None,
        source=where,
    )


def _text_field(row: dict, name: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise KnowledgeBaseError(f"{where}: field {name!r} must be text, got {type(value).__name__}")
    return value.strip()


def _parse_jsonl(path: Path, text: str, max_article_bytes: int | None = None) -> list[Document]:
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        check_size(f"{path}:{number}", "row", len(line.encode("utf-8")), max_article_bytes)
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KnowledgeBaseError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
        docs.append(_row_to_document(path, number, row))
    if not docs:
        raise KnowledgeBaseError(f"{path}: no articles")
    return docs


def _parse_csv(path: Path, text: str, max_article_bytes: int | None = None) -> list[Document]:
    # The csv module refuses fields over 128 KiB as malformed; the article size limit is the bound.
    csv.field_size_limit(max(csv.field_size_limit(), max_article_bytes or _CSV_FIELD_MAX))
    try:
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        missing = {"title", "answer"} - set(header)
        if missing:
            raise KnowledgeBaseError(f"{path}:1: CSV header lacks {', '.join(sorted(missing))} (has {', '.join(header)})")
        docs = []
        for row in reader:
            if None in row:
                raise KnowledgeBaseError(f"{path}:{reader.line_num}: more fields than the header has")
            if not any((v or "").strip() for v in row.values()):
                continue
            size = sum(len(v.encode("utf-8")) for v in row.values() if isinstance(v, str)) + len(row) - 1
            check_size(f"{path}:{reader.line_num}", "row", size, max_article_bytes)
            docs.append(_row_to_document(path, reader.line_num, row))
    except csv.Error as exc:
        raise KnowledgeBaseError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
    if not docs:
        raise KnowledgeBaseError(f"{path}: no articles")
    return docs


def split_sections(doc: Document) -> list[Section]:
    """The article's sections, in order: the lead text (if any), then one per heading with text.

    A heading directly followed by a sub-heading has no text of its own; it stays in the path of
    the sections below it. Heading slugs that repeat in an article get "-2", "-3"... suffixes.
    """
    from markdown_it import MarkdownIt

    lines = doc.answer.splitlines()
    tokens = MarkdownIt("commonmark").parse(doc.answer)
    headings = []  # (line, level, text)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            headings.append((token.map[0], token.map[1], int(token.tag[1:]), tokens[i + 1].content.strip()))
    sections: list[Section] = []
    used: dict[str, int] = {}
    stack: list[tuple[int, str]] = []  # (level, heading) above the current one

    def add(heading: str, path: tuple[str, ...], start: int, end: int) -> None:
        text = "\n".join(lines[start:end]).strip()
        if not text:
            return
        slug = slugify(heading) if heading else ""
        if slug:
            used[slug] = used.get(slug, 0) + 1
            if used[slug] > 1:
                slug = f"{slug}-{used[slug]}"
        sections.append(Section(f"{doc.id}#{slug}", doc.id, heading, path, text))

    first = headings[0][0] if headings else len(lines)
    add("", (doc.title,), 0, first)
    for n, (start, body_start, level, heading) in enumerate(headings):
        end = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        add(heading, (doc.title, *(h for _, h in stack)), body_start, end)
    if not sections:  # only headings: the article is its own one section
        sections.append(Section(f"{doc.id}#", doc.id, "", (doc.title,), doc.answer.strip()))
    return sections


def plain_text(markdown: str) -> str:
    """Markdown without its markup, on one line (for embedding and lexical search)."""
    # Links and images → their text. The text holds no `[` and the target no `(` but one pair (a URL
    # such as .../Foo_(bar)), so each bracket scans only up to the next one: with `[^\]]*` every
    # unclosed `[` scanned to the end of the paragraph, quadratic (80 s for 320 kB of them).
    text = re.sub(r"!?\[([^\[\]]*)\]\((?:[^()]|\([^()]*\))*\)", r"\1", markdown)
    text = re.sub(r"`{3,}[^\n]*", " ", text)
    text = re.sub(r"(^|\s)[#>]+\s", " ", text)
    text = re.sub(r"[*_`~|]+", "", text)
    return " ".join(text.split())


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(markdown: str, min_words: int = 3) -> list[str]:
    """A section's sentences as plain text: each line (a paragraph, a list item, a table row) split after
    ".", "!" or "?" before a capital or a digit; fragments under `min_words` words are left out."""
    out = []
    for line in markdown.splitlines():
        line = re.sub(r"^\s*(?:[-*+]|\d+[.)])\s+", "", line)  # a list item's marker
        for sentence in _SENTENCE_END.split(plain_text(line)):
            if len(sentence.split()) >= min_words:
                out.append(sentence)
    return out


def chunk_document(doc: Document, max_words: int = 120) -> list[Chunk]:
    """Split each section of an article into chunks of about `max_words` words along paragraphs.

    Each chunk is prefixed with the article title and the section's heading path, so it retrieves
    well on its own and never runs across two sections.
    """
    chunks: list[Chunk] = []
    for section in split_sections(doc):
        prefix = SECTION_SEP.join(section.path)
        for text in _paragraph_chunks(section.text, max_words):
            chunks.append(Chunk(doc.id, f"{prefix}: {text}", section.id))
    return chunks


def chunk_markdown(documents, max_words: int = 120) -> dict[str, str]:
    """Each chunk's index text → the Markdown it was made from (what an answer quotes)."""
    out: dict[str, str] = {}
    for doc in documents:
        for section in split_sections(doc):
            prefix = SECTION_SEP.join(section.path)
            for text, markdown in _paragraph_groups(section.text, max_words):
                out.setdefault(f"{prefix}: {text}", markdown)
    return out


def _paragraph_chunks(markdown: str, max_words: int) -> list[str]:
    return [text for text, _ in _paragraph_groups(markdown, max_words)]


def _paragraph_groups(markdown: str, max_words: int) -> list[tuple[str, str]]:
    """(plain text, Markdown) of consecutive paragraphs of about `max_words` words."""
    paragraphs = [(plain_text(p), p.strip()) for p in re.split(r"\n\s*\n", markdown) if p.strip()]
    groups: list[tuple[str, str]] = []
    current: list[str] = []
    current_md: list[str] = []
    count = 0

    def flush():
        nonlocal current, current_md, count
        if current:
            groups.append((" ".join(current), "\n\n".join(current_md)))
        current, current_md, count = [], [], 0

    for plain, md in paragraphs:
        words = plain.split()
        if len(words) > max_words:  # a single long paragraph is split on word count
            flush()
            for start in range(0, len(words), max_words):
                piece = " ".join(words[start:start + max_words])
                groups.append((piece, piece))
            continue
        if count + len(words) > max_words and current:
            flush()
        current.append(plain)
        current_md.append(md)
        count += len(words)
    flush()
    return [(t, m) for t, m in groups if t]


@dataclass
class MergeReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def modified(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.changed)} changed, {len(self.unchanged)} unchanged, "
                f"{len(self.removed)} removed")


def merge_documents(existing: list[Document], incoming: list[Document], *, prune: bool = False) -> tuple[list[Document], MergeReport]:
    """Apply an ingest to the current KB: same id replaces, new ids are added.

    With `prune`, articles not in `incoming` are dropped (the KB becomes exactly what was ingested).
    Order: existing articles keep their place, new ones are appended.
    """
    report = MergeReport()
    new_by_id = {doc.id: doc for doc in incoming}
    merged: list[Document] = []
    for doc in existing:
        if doc.id in new_by_id:
            replacement = new_by_id.pop(doc.id)
            (report.unchanged if replacement.content_hash() == doc.content_hash() else report.changed).append(doc.id)
            merged.append(replacement)
        elif prune:
            report.removed.append(doc.id)
        else:
            merged.append(doc)
    for doc in incoming:
        if doc.id in new_by_id:
            report.added.append(doc.id)
            merged.append(doc)
    return merged, report
