"""What a team reads back about its help centre: each stored answer of a period with the votes on it
(the content gaps and the weekly view are built from these rows, in training/gaps.py and
bot/monitoring/weekly.py).

Mixed into store.store.Store, which provides the connection (`_read`).
"""

from __future__ import annotations

from typing import Any

from core.clock import to_iso
from store.rows import loads

# One row per answer: its standing votes counted, and the article a 👎's correction named (the newest
# wins when several users corrected the same answer; a clarifying pick is an 👍, not a correction).
ANSWER_OUTCOMES_SQL = """
SELECT a.answer_id, a.time, a.question, a.intent, a.doc_id, a.confidence, a.handoff, a.sources,
       a.model_version,
       CAST(COALESCE(SUM(CASE WHEN f.vote = 'up' AND f.origin != 'clarify' THEN 1 ELSE 0 END), 0) AS INTEGER) AS ups,
       CAST(COALESCE(SUM(CASE WHEN f.vote = 'down' THEN 1 ELSE 0 END), 0) AS INTEGER) AS downs,
       CAST(COALESCE(SUM(CASE WHEN f.origin = 'clarify' AND f.vote = 'up' THEN 1 ELSE 0 END), 0) AS INTEGER) AS picks,
       (SELECT g.correct_doc_id FROM feedback g
         WHERE g.answer_id = a.answer_id AND g.vote = 'down' AND g.correct_doc_id IS NOT NULL
         ORDER BY g.time DESC, g.id DESC LIMIT 1) AS correct_doc_id
FROM answers a LEFT JOIN feedback f ON f.answer_id = a.answer_id AND f.vote != 'retracted'
WHERE a.time >= ? AND a.time < ?
GROUP BY a.answer_id
ORDER BY a.time, a.answer_id
"""


class Insights:
    """Read-only views over the answers and feedback tables."""

    def answer_outcomes(self, since: Any, until: Any) -> list[dict]:
        """Every answer stored in [since, until), oldest first, with `ups`, `downs` (standing votes),
        `picks` (clarifying picks) and `correct_doc_id` (the article a correction named, if any).
        `question` is as stored: redacted."""
        rows = self._read(ANSWER_OUTCOMES_SQL, (to_iso(since), to_iso(until)))
        for row in rows:
            row["handoff"] = bool(row["handoff"])
            row["sources"] = loads(row["sources"]) or []
        return rows
