"""Training runs and the feedback watermark: the one place that says which feedback is new.

Mixed into store.store.Store, which provides the connection (`_write`, `_read`) and
`feedback_since` (store/answers.py).

A retrain (training/report.py, for training/pipeline.py) records one run per attempt with its outcome as the status.
The statuses in CONSUMING_STATUSES used up the feedback they read: the next retrain reads only
feedback changed after the newest `data_until` among them (`feedback_watermark`). Every other
status (nothing-to-do, error, or anything else recorded by hand) leaves the watermark where it
was, so that feedback is read again.
"""

from __future__ import annotations

import json
from typing import Any

from core import clock
from core.clock import to_iso, training_run_watermark  # noqa: F401 (re-exported)
from store.rows import loads

PROMOTED, REJECTED = "promoted", "rejected"  # the gate's two verdicts (training/gate.py)
SUCCESS_STATUS = "ok"  # the default status; runs recorded before the retrain named its verdicts
CONSUMING_STATUSES = (PROMOTED, REJECTED, SUCCESS_STATUS)
RUN_COLUMNS = ("started_at", "finished_at", "status", "model_version", "data_until", "n_feedback", "n_messages",
               "metrics", "notes")


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
        (default "ok"; the statuses in CONSUMING_STATUSES move the feedback watermark), model_version,
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
            return self.inserted_id(
                conn,
                f"INSERT INTO training_runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [row[c] for c in columns],
            )

    def training_runs(self, limit: int = 10) -> list[dict]:
        """The newest runs first."""
        rows = self._read("SELECT * FROM training_runs ORDER BY id DESC LIMIT ?", (int(limit),))
        return [decode_run(r) for r in rows]

    def last_training_run(self, *, any_status: bool = False) -> dict | None:
        """The newest run that used up its feedback (status in CONSUMING_STATUSES), or with
        any_status=True the newest run of any status; None if there is none."""
        if any_status:
            rows = self._read("SELECT * FROM training_runs ORDER BY id DESC LIMIT 1")
        else:
            marks = ", ".join("?" * len(CONSUMING_STATUSES))
            rows = self._read(f"SELECT * FROM training_runs WHERE status IN ({marks}) ORDER BY id DESC LIMIT 1",
                              CONSUMING_STATUSES)
        return decode_run(rows[0]) if rows else None

    def feedback_watermark(self) -> str | None:
        """The newest `data_until` of a run that used up its feedback (status in CONSUMING_STATUSES):
        feedback changed after it is new to the next retrain. None if no such run has one."""
        marks = ", ".join("?" * len(CONSUMING_STATUSES))
        rows = self._read(f"SELECT max(data_until) AS mark FROM training_runs WHERE status IN ({marks})",
                          CONSUMING_STATUSES)
        return rows[0]["mark"]

    def feedback_since_last_run(self, **kwargs: Any) -> list[dict]:
        """feedback_since(feedback_watermark()): the feedback no consuming run has learned from yet."""
        return self.feedback_since(self.feedback_watermark(), **kwargs)
