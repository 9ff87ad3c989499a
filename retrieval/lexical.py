"""The lexical index: SQLite FTS5 with BM25 over the same entries as the FAISS index.

Dense MiniLM vectors find paraphrases but blur exact terms — product names, error codes, "IMAP",
"port 25". FTS5 (enabled through sqlite-utils, Porter-stemmed unicode61 tokens) ranks entries by
BM25 for those. It lives in the index folder as `lexical.sqlite3`, one row per entry with the
entry's position as rowid, so it is written and swapped atomically with the FAISS index
(retrieval/index.py) and its hits point at the same entries.

Queries are the message's words (lower-cased, stop words dropped, each quoted, so no FTS syntax
from users is ever interpreted) joined with OR; BM25 does the weighting.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

LEXICAL_FILE = "lexical.sqlite3"
TABLE = "entries"

# Words that carry no topic; dropping them keeps OR-queries short and the ranking on the terms that matter.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can cannot could did do does doing down during each few for from further get got had has have
having he her here hers herself him himself his how i if in into is it its itself just let me more most my
myself no nor not now of off on once only or other ought our ours ourselves out over own please same she
should so some such than that the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves hi hello hey thanks thank ok okay im ive dont cant wont
""".split())
MAX_TERMS = 32


def query_terms(text: str) -> list[str]:
    """The searchable words of a message, in order, without duplicates or stop words."""
    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", text.lower()):
        if word not in STOP_WORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


def fts_query(text: str) -> str | None:
    terms = query_terms(text)
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def write_lexical(path: Path, texts: list[str]) -> None:
    """Build the FTS5 table for `texts` (rowid = entry position) at `path`."""
    import sqlite_utils

    db = sqlite_utils.Database(str(path))
    try:
        with db.atomic():
            db[TABLE].insert_all(({"id": i, "text": t} for i, t in enumerate(texts)), pk="id", batch_size=2000)
        db[TABLE].enable_fts(["text"], tokenize="porter", create_triggers=False)
        db.execute(f"INSERT INTO {TABLE}_fts({TABLE}_fts) VALUES ('optimize')")
        db.conn.commit()
    finally:
        db.close()


class LexicalIndex:
    """BM25 search over an index folder's `lexical.sqlite3`, read-only, one connection per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._connect()  # fail now, not at the first question

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            conn.execute(f"SELECT count(*) FROM {TABLE}_fts").fetchone()
            self._local.conn = conn
        return conn

    def search(self, text: str, k: int) -> list[tuple[int, float]]:
        """(entry position, BM25 score — higher is better) for the best `k` entries; [] for no terms."""
        query = fts_query(text)
        if query is None:
            return []
        rows = self._connect().execute(
            f"SELECT rowid, bm25({TABLE}_fts) AS score FROM {TABLE}_fts WHERE {TABLE}_fts MATCH ? "
            "ORDER BY score LIMIT ?", (query, k)).fetchall()
        return [(int(rowid), -float(score)) for rowid, score in rows]
