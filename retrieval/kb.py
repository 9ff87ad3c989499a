"""Knowledge-base documents: parsing Markdown/text, CSV and JSONL files, and chunking long articles.

- Markdown / text (`.md`, `.markdown`, `.txt`): one article per file; the title is the first `#`
  heading (else the first line); the id is the file name without extension, slugified.
- CSV / JSONL rows: `{id, title, answer, intent?, questions?, url?}`. `questions` is a list in JSONL
  or `|`-separated in CSV. A row without `id` gets the slug of its title.
Every error names the file and line; a file with any bad row is rejected whole, so nothing is
half-ingested.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bot.errors import UserError

TEXT_SUFFIXES = {".md", ".markdown", ".txt"}
ROW_SUFFIXES = {".csv", ".jsonl"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | ROW_SUFFIXES


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
class Chunk:
    doc_id: str
    text: str


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:80] or "doc"


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files named directly, plus every supported file under named folders (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES))
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise KnowledgeBaseError(f"{path}: unsupported file type {path.suffix!r} "
                                         f"(use {', '.join(sorted(SUPPORTED_SUFFIXES))})")
            files.append(path)
        else:
            raise KnowledgeBaseError(f"{path}: no such file or directory")
    return files


def load_documents(paths: list[str | Path]) -> list[Document]:
    """Parse every file; duplicate ids across files are an error naming both places."""
    documents: list[Document] = []
    seen: dict[str, str] = {}
    for path in expand_paths(paths):
        for doc in parse_file(path):
            if doc.id in seen:
                raise KnowledgeBaseError(f"{doc.source}: duplicate article id {doc.id!r} (first at {seen[doc.id]})")
            seen[doc.id] = doc.source
            documents.append(doc)
    return documents


def parse_file(path: Path) -> list[Document]:
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
        return [_parse_markdown(path, text)]
    if suffix == ".jsonl":
        return _parse_jsonl(path, text)
    return _parse_csv(path, text)


def _parse_markdown(path: Path, text: str) -> Document:
    lines = text.strip().splitlines()
    if not lines:
        raise KnowledgeBaseError(f"{path}:1: empty article")
    title, body_start = None, 0
    for number, line in enumerate(lines):
        if line.startswith("# "):
            title, body_start = line[2:].strip(), number + 1
            break
    if title is None:
        title, body_start = lines[0].lstrip("#").strip(), 1
    body = "\n".join(lines[body_start:]).strip()
    if not body:
        raise KnowledgeBaseError(f"{path}:{body_start + 1}: article {title!r} has a title but no text")
    return Document(id=slugify(path.stem), title=title, answer=body, source=str(path))


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


def _parse_jsonl(path: Path, text: str) -> list[Document]:
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KnowledgeBaseError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
        docs.append(_row_to_document(path, number, row))
    if not docs:
        raise KnowledgeBaseError(f"{path}: no articles")
    return docs


def _parse_csv(path: Path, text: str) -> list[Document]:
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
            docs.append(_row_to_document(path, reader.line_num, row))
    except csv.Error as exc:
        raise KnowledgeBaseError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
    if not docs:
        raise KnowledgeBaseError(f"{path}: no articles")
    return docs


def chunk_document(doc: Document, max_words: int = 120) -> list[Chunk]:
    """Split an article into chunks of about `max_words` words along paragraph boundaries.

    Each chunk is prefixed with the article title so it retrieves well on its own.
    """
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc.answer) if p.strip()]
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for paragraph in paragraphs:
        words = paragraph.split()
        while len(words) > max_words:  # a single long paragraph is split on word count
            if current:
                chunks.append(" ".join(current))
                current, count = [], 0
            chunks.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if count + len(words) > max_words and current:
            chunks.append(" ".join(current))
            current, count = [], 0
        current.extend(words)
        count += len(words)
    if current:
        chunks.append(" ".join(current))
    return [Chunk(doc.id, f"{doc.title}: {text.lstrip('#').strip()}") for text in chunks]


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
