"""Vote helpers shared by the Slack app, `csbot chat` and `csbot feedback`.

* parse_vote: 👍 / 👎 / reaction names / words -> "up" | "down" | "retract".
* import_votes: the bulk JSONL import behind `csbot feedback --file` (same code path as Slack:
  every line goes through Store.record_vote).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from core.errors import UserError
from store.answers import CAPPED, DUPLICATE, STORED
from store.schema import StoreError
from store.store import Store

_UP = {"up", "+1", "👍", "👍🏻", "👍🏼", "👍🏽", "👍🏾", "👍🏿", ":+1:", "thumbsup", ":thumbsup:", "thumbs_up", "y", "yes", "good", "helpful"}
_DOWN = {"down", "-1", "👎", "👎🏻", "👎🏼", "👎🏽", "👎🏾", "👎🏿", ":-1:", "thumbsdown", ":thumbsdown:", "thumbs_down", "n", "no", "bad", "unhelpful"}
_RETRACT = {"retract", "retracted", "undo", "unvote", "remove", "clear"}

#: Fields a line of a `csbot feedback --file` JSONL file may carry.
IMPORT_FIELDS = ("answer_id", "vote", "intent", "doc_id", "answer", "user")


def parse_vote(token: str | None) -> str | None:
    """Map what a person typed or reacted with to "up", "down" or "retract" (None if neither).

    Slack reaction names may carry a skin-tone suffix ("+1::skin-tone-2"); it is ignored.
    """
    if token is None:
        return None
    text = str(token).strip().lower().split("::")[0]
    if text in _UP or text.rstrip(":") in _UP:
        return "up"
    if text in _DOWN or text.rstrip(":") in _DOWN:
        return "down"
    if text in _RETRACT:
        return "retract"
    return None


@dataclass
class ImportReport:
    """The stable `csbot feedback --file --json` shape (keys are only ever added)."""

    stored: int = 0
    duplicates: int = 0
    capped: int = 0
    rejected: list[dict] = field(default_factory=list)  # {"line": N, "error": "..."}
    lines: int = 0  # non-blank lines read

    def to_json(self) -> dict:
        return {"stored": self.stored, "duplicates": self.duplicates, "capped": self.capped, "rejected": self.rejected}


class ImportStoppedError(StoreError):
    """The store failed part-way through a bulk import (a full disk, a damaged file): `report` says
    what was stored before line `line`, `cause` why it stopped."""

    def __init__(self, report: ImportReport, line: int, cause: StoreError):
        super().__init__(f"stopped at line {line} after storing {report.stored} vote(s): {cause}")
        self.report, self.line, self.cause = report, line, cause


def import_event_id(record: dict) -> str:
    """A deterministic id for an imported vote, so importing the same line twice is a duplicate."""
    key = json.dumps([record.get(k) for k in IMPORT_FIELDS], ensure_ascii=False, separators=(",", ":"))
    return "import:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def parse_import_line(text: str) -> dict:
    """Validate one JSONL line; raises UserError with the reason."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise UserError(f"expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(IMPORT_FIELDS))
    if unknown:
        raise UserError(f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(IMPORT_FIELDS)})")
    answer_id = record.get("answer_id")
    if not isinstance(answer_id, str) or not answer_id.strip():
        raise UserError("missing answer_id")
    vote = record.get("vote")
    if vote not in ("up", "down"):
        raise UserError(f"vote must be \"up\" or \"down\", not {json.dumps(vote)}")
    for name in ("intent", "doc_id", "answer", "user"):
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise UserError(f"{name} must be a string")
    return {k: record.get(k) for k in IMPORT_FIELDS}


def import_votes(store: Store, lines: Iterable[str], *, origin: str = "import") -> ImportReport:
    """Record one vote per JSONL line; bad lines are reported, never fatal. Line numbers are 1-based
    and count blank lines too, so they match an editor's. A store that fails (full disk, damaged
    file) stops the import with ImportStoppedError, which carries the report so far."""
    report = ImportReport()
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        report.lines += 1
        try:
            record = parse_import_line(text)
            result = store.record_vote(
                record["answer_id"].strip(),
                record["vote"],
                user=record["user"],
                origin=origin,
                event_id=import_event_id(record),
                intent=record["intent"],
                doc_id=record["doc_id"],
                answer_text=record["answer"],
            )
        except UserError as exc:
            report.rejected.append({"line": number, "error": str(exc)})
            continue
        except StoreError as exc:  # the file, not the line: later lines would fail the same way
            raise ImportStoppedError(report, number, exc) from exc
        if result.status == STORED:
            report.stored += 1
        elif result.status == DUPLICATE:
            report.duplicates += 1
        elif result.status == CAPPED:
            report.capped += 1
    return report
