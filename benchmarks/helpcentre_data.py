"""Help-centre test knowledge bases built from the shared public data (for bench_helpcentre.py and
tests/test_helpcentre_data.py). Nothing here is copied into the repository: the data is read from
`../shared/data` (or `CSBOT_DATA_DIR`) and the Markdown files are written to a temp folder.

- StackFAQ (`stackfaq/`): one Markdown article per FAQ thread. A help centre's article is a title
  and body text, with headings only where the writer chose them; a StackExchange thread has no
  headings, so the article is `# <thread question>` followed by every answer of `all_answers` as a
  paragraph (top answer first). Synthetic `## Answer k` headings would put a meaningless heading in
  every section's path, which no real help centre has. File `stackfaq-<faq_id:03d>.md`, article id
  the same stem.
- DSTC10 Track 2 knowledge (`dstc10_knowledge_faq/`): one article per (domain, entity_id), title the
  entity name (domain-wide `*` entities: "Trains — general", "Taxis — general"), one
  `## <FAQ title>` section per snippet with its body. File / article id
  `dstc10-<domain>-<entity_id>` (`general` for `*`).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOMAIN_PLURAL = {"hotel": "Hotels", "restaurant": "Restaurants", "attraction": "Attractions",
                 "taxi": "Taxis", "train": "Trains"}


def data_dir() -> Path:
    return Path(os.environ.get("CSBOT_DATA_DIR", REPO.parent / "shared" / "data"))


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _paragraph(text: str) -> str:
    """One Markdown paragraph: whitespace collapsed, and a leading `#` escaped so that the text never
    turns into a heading."""
    text = _one_line(text)
    return "\\" + text if text.startswith("#") else text


# ----- StackFAQ -----------------------------------------------------------------------------------

def stackfaq_doc_id(faq_id: int | str) -> str:
    return f"stackfaq-{int(faq_id):03d}"


def load_stackfaq_faqs(data: Path | None = None) -> list[dict]:
    return _jsonl((data or data_dir()) / "stackfaq" / "faqs.jsonl")


def load_stackfaq_queries(data: Path | None = None, group: int | None = None) -> list[tuple[str, str]]:
    """(query, gold article id) in file order, optionally of one rephrase_group."""
    with open((data or data_dir()) / "stackfaq" / "queries.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [(_one_line(r["query"]), stackfaq_doc_id(r["faq_id"])) for r in rows
            if group is None or int(r["rephrase_group"]) == group]


def stackfaq_markdown(faq: dict) -> str:
    answers = [_paragraph(a) for a in (faq.get("all_answers") or [faq["answer"]]) if _one_line(a)]
    return f"# {_one_line(faq['question'])}\n\n" + "\n\n".join(answers) + "\n"


def write_stackfaq(folder: Path, faqs: list[dict]) -> dict[str, str]:
    """Write one `.md` per thread into `folder`; returns {article id: title}."""
    folder.mkdir(parents=True, exist_ok=True)
    titles = {}
    for faq in faqs:
        doc_id = stackfaq_doc_id(faq["faq_id"])
        (folder / f"{doc_id}.md").write_text(stackfaq_markdown(faq), encoding="utf-8")
        titles[doc_id] = _one_line(faq["question"])
    return titles


# ----- CLINC150 out-of-scope ----------------------------------------------------------------------

def load_clinc_oos(data: Path | None = None, n: int = 200) -> list[str]:
    """The first `n` `oos` rows of CLINC150's test.csv, in file order."""
    with open((data or data_dir()) / "clinc150" / "test.csv", newline="", encoding="utf-8") as fh:
        rows = [r["text"] for r in csv.DictReader(fh) if r["label"] == "oos"]
    return [_one_line(t) for t in rows[:n]]


# ----- DSTC10 -------------------------------------------------------------------------------------

def dstc10_doc_id(domain: str, entity_id: str) -> str:
    entity = "general" if str(entity_id) == "*" else re.sub(r"[^a-z0-9]+", "-", str(entity_id).lower()).strip("-")
    return f"dstc10-{domain}-{entity}"


def load_dstc10_knowledge(data: Path | None = None) -> list[dict]:
    return _jsonl((data or data_dir()) / "dstc10_knowledge_faq" / "knowledge.jsonl")


def dstc10_articles(knowledge: list[dict]) -> dict[str, dict]:
    """{article id: {"title", "domain", "entity_id", "sections": [(heading, body), ...]}}, snippets in
    file order (sorted by doc_id within an entity)."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in knowledge:
        grouped[(row["domain"], str(row["entity_id"]))].append(row)
    articles = {}
    for (domain, entity_id), rows in grouped.items():
        rows = sorted(rows, key=lambda r: int(r["doc_id"]))
        if entity_id == "*":
            title = f"{DOMAIN_PLURAL.get(domain, domain.title() + 's')} — general"
        else:
            title = _one_line(rows[0].get("entity_name") or f"{domain} {entity_id}")
        articles[dstc10_doc_id(domain, entity_id)] = {
            "title": title, "domain": domain, "entity_id": entity_id,
            "sections": [(_one_line(r["title"]), _paragraph(r["body"])) for r in rows],
            "snippet_ids": [int(r["doc_id"]) for r in rows],
        }
    return articles


def dstc10_markdown(article: dict) -> str:
    parts = [f"# {article['title']}"]
    for heading, body in article["sections"]:
        parts.append(f"## {heading}\n\n{body}")
    return "\n\n".join(parts) + "\n"


def write_dstc10(folder: Path, articles: dict[str, dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, article in articles.items():
        (folder / f"{doc_id}.md").write_text(dstc10_markdown(article), encoding="utf-8")


def dstc10_snippet_titles(knowledge: list[dict]) -> dict[tuple[str, str, int], str]:
    """(domain, entity_id, doc_id) → the snippet's FAQ title (its section heading)."""
    return {(r["domain"], str(r["entity_id"]), int(r["doc_id"])): _one_line(r["title"]) for r in knowledge}


@dataclass
class DialogueTurn:
    instance_id: int
    query: str  # the last user turn
    context: list[str]  # the earlier turns, oldest first (newest last)
    target: bool  # knowledge-seeking
    gold_doc: str | None  # the gold article id
    gold_heading: str | None  # the gold snippet's title (section heading)
    gold_key: tuple | None  # (domain, entity_id, doc_id)


def load_dstc10_val(data: Path | None = None, knowledge: list[dict] | None = None) -> list[DialogueTurn]:
    data = data or data_dir()
    titles = dstc10_snippet_titles(knowledge if knowledge is not None else load_dstc10_knowledge(data))
    turns = []
    for row in _jsonl(data / "dstc10_knowledge_faq" / "val.jsonl"):
        texts = [_one_line(t["text"]) for t in row["context"]]
        gold = (row.get("knowledge") or [None])[0] if row.get("target") else None
        key = (gold["domain"], str(gold["entity_id"]), int(gold["doc_id"])) if gold else None
        turns.append(DialogueTurn(
            instance_id=int(row["instance_id"]), query=texts[-1], context=texts[:-1], target=bool(row.get("target")),
            gold_doc=dstc10_doc_id(key[0], key[1]) if key else None,
            gold_heading=titles.get(key) if key else None, gold_key=key))
    return turns
