"""Training runs.

Mixed into store.store.Store, which provides the connection (`_write`, `_read`) and
`feedback_since` (store/answers.py).
"""

from __future__ import annotations

import json
from typing import Any

from store import clock
from store.clock import to_iso
from store.rows import loads

SUCCESS_STATUS = "ok"
RUN_COLUMNS = ("started_at", "finished_at", "status", "model_version", "data_until", "n_feedback", "n_messages",
               "metrics", "notes")


def training_run_watermark(run: dict | None) -> str | None:
    """The time after which feedback is new to the given training run (parse_since of a run dict)."""
    if not run:
        return None
    return run.get("data_until") or run.get("started_at") or run.get("finished_at")


def decode_run(row: dict) -> dict:
    row["metrics"] = loads(row["metrics"])
    extra = loads(row.pop("extra"))
    if extra:
        for key, value in extra.items():
            row.setdefault(key, value)
    return row


class Runs:
    """The training_runs table."""

    def record_training_run(self, **fields: Any) -> int:
        """Record one retrain. Known fields: started_at, finished_at (default now), status
        (default "ok"; only "ok" runs count for last_training_run), model_version,
        data_until (the newest feedback `time` the run learned from), n_feedback, n_messages, metrics
        (JSON-able), notes. Any other field is kept in `extra`. Returns the run id."""
        row: dict[str, Any] = {k: fields.pop(k) for k in list(fields) if k in RUN_COLUMNS}
        now = to_iso(clock.utcnow())
        for key in ("started_at", "finished_at", "data_until"):
            if row.get(key) is not None:
                row[key] = to_iso(row[key])
        row.setdefault("finished_at", now)
        row["status"] = row.get("status") or SUCCESS_STATUS
        if "metrics" in row and row["metrics"] is not None:
            row["metrics"] = json.dumps(row["metrics"], default=str)
        row["extra"] = json.dumps(fields, default=str) if fields else None
        columns = list(row)
        with self._write() as conn:
            cur = conn.execute(
                f"INSERT INTO training_runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [row[c] for c in columns],
            )
            return int(cur.lastrowid)

    def training_runs(self, limit: int = 10) -> list[dict]:
        """The newest runs first."""
        rows = self._read("SELECT * FROM training_runs ORDER BY id DESC LIMIT ?", (int(limit),))
        return [decode_run(r) for r in rows]

    def last_training_run(self, *, any_status: bool = False) -> dict | None:
        """The newest run with status "ok" (any status with any_status=True), or None."""
        if any_status:
            rows = self._read("SELECT * FROM training_runs ORDER BY id DESC LIMIT 1")
        else:
            rows = self._read("SELECT * FROM training_runs WHERE status = ? ORDER BY id DESC LIMIT 1", (SUCCESS_STATUS,))
        return decode_run(rows[0]) if rows else None

    def feedback_since_last_run(self, **kwargs: Any) -> list[dict]:
        """feedback_since(the last successful training run's watermark)."""
        return self.feedback_since(training_run_watermark(self.last_training_run()), **kwargs)
