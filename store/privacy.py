"""Retention and deletion (purge, forget a user), export and row counts: what touches every table.

Mixed into store.store.Store, which provides the connection (`_write`, `_read`,
`_file_errors`, `_db.snapshot`, `checkpoint`), `path` and `hash_user`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from core import clock
from core.clock import parse_since, to_iso
from core.errors import UserError
from store.answers import decode_answer
from store.monitoring import decode_monitored_message

EXPORT_KINDS = ("answers", "feedback", "monitored_messages")
_EXPORT_TYPES = {"answers": "answer", "feedback": "feedback", "monitored_messages": "monitored_message"}
_EXPORT_DECODE = {"answers": decode_answer, "monitored_messages": decode_monitored_message}


class Privacy:
    """Purge, forget_user, export and counts across the store's tables."""

    def purge(self, older_than: dt.timedelta, *, dry_run: bool = False) -> dict[str, int]:
        """Delete everything older than `older_than`: answers (with every vote on them), votes,
        monitored messages and processed event ids. Training runs are kept. Returns row counts."""
        if not isinstance(older_than, dt.timedelta) or older_than <= dt.timedelta(0):
            raise UserError("purge needs a positive age, e.g. 90d")
        cutoff = to_iso(clock.utcnow() - older_than)
        statements = {
            "feedback": (
                "feedback WHERE time < :c OR answer_id IN (SELECT answer_id FROM answers WHERE time < :c)"
            ),
            "answers": "answers WHERE time < :c",
            "monitored_messages": "monitored_messages WHERE time < :c",
            "processed_events": "processed_events WHERE time < :c",
        }
        extra = {
            "sentiment_corrections": "sentiment_corrections WHERE time < :c",
            "monitoring_alerts": "monitoring_alerts WHERE time < :c",
            "slack_posts": "slack_posts WHERE time < :c",
        }
        return self._delete(statements, {"c": cutoff}, dry_run=dry_run, extra=extra)

    def user_questions(self, user: str) -> list[str]:
        """The (redacted) question texts a user asked or voted on: what `forget` must also remove
        from the examples that model versions learned (training/forget.py)."""
        user_hash = self.hash_user(user)
        if user_hash is None:
            raise UserError("forget needs a user id")
        rows = self._read(
            "SELECT question FROM answers WHERE user_hash = ? AND question IS NOT NULL"
            " UNION SELECT a.question FROM feedback f JOIN answers a ON a.answer_id = f.answer_id"
            " WHERE f.user_hash = ? AND a.question IS NOT NULL"
            " UNION SELECT text FROM sentiment_corrections WHERE user_hash = ? AND text IS NOT NULL",
            (user_hash, user_hash, user_hash),
        )
        return sorted({row["question"] for row in rows})

    def forget_user(self, user: str, *, dry_run: bool = False) -> dict[str, int]:
        """Delete every row of one user: their votes, their questions (answers, with the votes
        others cast on them) and their monitored messages. Returns row counts per table."""
        user_hash = self.hash_user(user)
        if user_hash is None:
            raise UserError("forget needs a user id")
        statements = {
            "feedback": "feedback WHERE user_hash = :u OR answer_id IN (SELECT answer_id FROM answers WHERE user_hash = :u)",
            "answers": "answers WHERE user_hash = :u",
            "monitored_messages": "monitored_messages WHERE user_hash = :u",
        }
        extra = {"sentiment_corrections": "sentiment_corrections WHERE user_hash = :u"}
        return self._delete(statements, {"u": user_hash}, dry_run=dry_run, extra=extra)

    def _delete(self, statements: dict[str, str], params: dict, *, dry_run: bool,
                extra: dict[str, str] | None = None) -> dict[str, int]:
        """Delete (or count) per table. Tables in `extra` are always deleted from too, but appear in
        the returned counts only when rows were found (keeps the historical result shape)."""
        counts: dict[str, int] = {}
        with self._write() as conn:
            for table, clause in {**statements, **(extra or {})}.items():
                if dry_run:
                    n = conn.execute(f"SELECT count(*) FROM {clause}", params).fetchone()[0]
                else:
                    n = conn.execute(f"DELETE FROM {clause}", params).rowcount
                if table in statements or n:
                    counts[table] = n
        if not dry_run and any(counts.values()):
            self.checkpoint()  # best effort: the deleted rows' old page versions leave the WAL too
        return counts

    # -- export and stats ----------------------------------------------------------------------

    def export(self, since: Any = None, *, kinds: Iterable[str] = EXPORT_KINDS) -> Iterator[dict]:
        """Yield every record changed after `since` as JSON-able dicts with a "type" key
        ("answer", "feedback", "monitored_message"), each type oldest first. Reads one
        consistent snapshot on its own read-only connection (transaction), so writers are never blocked."""
        kinds = list(kinds)
        unknown = sorted(set(kinds) - set(EXPORT_KINDS))
        if unknown:
            raise UserError(f"unknown export kind(s) {', '.join(unknown)}")
        bound = parse_since(since)
        with self._db.snapshot() as conn, self._file_errors():  # a damaged page can surface on any row
            for kind in EXPORT_KINDS:
                if kind not in kinds:
                    continue
                sql = f"SELECT * FROM {kind}" + (" WHERE time > ?" if bound else "") + " ORDER BY time, " + (
                    "answer_id" if kind == "answers" else "id")
                cursor = conn.execute(sql, (bound,) if bound else ())
                keys = [d[0] for d in cursor.description]
                for values in cursor:
                    row = dict(zip(keys, values))
                    yield {"type": _EXPORT_TYPES[kind], **_EXPORT_DECODE.get(kind, dict)(row)}

    def counts(self) -> dict[str, int]:
        tables = ("answers", "feedback", "monitored_messages", "processed_events", "training_runs")
        counts = {t: self._read(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in tables}
        for vote in ("up", "down", "retracted"):
            counts[f"votes_{vote}"] = self._read("SELECT count(*) AS n FROM feedback WHERE vote = ?", (vote,))[0]["n"]
        return counts

