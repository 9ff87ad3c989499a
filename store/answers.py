"""Answers, votes (feedback) and claimed event ids: the Store's answer-and-vote tables (a claim
itself is store/events.py's).

Mixed into store.store.Store, which provides the connection (`_write`, `_read`), `hash_user`,
`redact`, `daily_vote_cap` and `cap_exempt_origins`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from core import clock
from core.clock import parse_since, to_iso
from core.answer import Answer
from core.errors import UserError
from store import events
from store.rows import loads

VOTES = ("up", "down", "retract")
ORIGINS = ("button", "reaction", "modal", "cli", "import", "clarify")
# "clarify": the user picked an article from the bot's "Did you mean…" question; stored as an "up"
# vote whose correction names the picked article (a labelled example, not a complaint).
CORRECTION_ORIGINS = ("modal", "cli", "import", "clarify")
STORED, DUPLICATE, CAPPED, NO_VOTE = "stored", "duplicate", "capped", "no-vote"
DEFAULT_DAILY_VOTE_CAP = 200


class UnknownAnswerError(UserError):
    """A vote names an answer id the store has never recorded."""


class InvalidVoteError(UserError):
    """A vote value, origin or correction is not acceptable."""


@dataclass(frozen=True)
class VoteResult:
    """What happened to one vote.

    status: "stored" (written, durable), "duplicate" (this Slack event id was already
    processed; nothing written), "capped" (the user hit the daily cap; nothing written) or
    "no-vote" (a retraction, but the user had no vote on that answer).
    """

    status: str
    answer_id: str
    vote: str
    feedback_id: int | None = None
    previous: str | None = None  # the user's earlier vote on this answer, if any

    @property
    def stored(self) -> bool:
        return self.status == STORED

    def to_json(self) -> dict:
        return asdict(self)


# --- time helpers -----------------------------------------------------------------------------

FEEDBACK_SINCE_SQL = """
SELECT f.id AS feedback_id, f.answer_id, f.vote, f.correct_intent, f.correct_doc_id,
       f.correct_answer, f.origin, f.user_hash, f.event_id, f.time, f.created,
       a.question, a.intent AS answer_intent, a.doc_id AS answer_doc_id,
       a.confidence, a.model_version, a.answer_text, a.handoff, a.time AS answer_time,
       a.used_context, a.answer_mode, a.composition, a.section AS answer_section
FROM feedback f JOIN answers a ON a.answer_id = f.answer_id
"""


def sources_row(answer: Answer) -> list[dict]:
    """An answer's sources as the answers table stores them (JSON)."""
    return [{"doc_id": s.doc_id, "title": s.title, "url": s.url, "score": round(float(s.score), 4)}
            for s in (answer.sources or [])]


def decode_answer(row: dict) -> dict:
    """An answers row with its JSON and boolean columns decoded."""
    row["sources"] = loads(row["sources"]) or []
    row["sentiment_scores"] = loads(row["sentiment_scores"]) or {}
    row["handoff"] = bool(row["handoff"])
    row["used_context"] = bool(row["used_context"])
    return row


class Answers:
    """The answers, feedback and processed_events tables."""

    def record_answer(
        self,
        answer: Answer,
        *,
        user: str | None = None,
        workspace: str | None = None,
        channel: str | None = None,
        thread: str | None = None,
        origin: str = "cli",
        question: str | None = None,
    ) -> bool:
        """Store one engine answer (question and answer text redacted). Idempotent per answer_id:
        returns False, writing nothing, if the id is already stored (e.g. a replayed event)."""
        if not answer.answer_id:
            raise UserError("cannot record an answer without an answer_id")
        sources = sources_row(answer)
        row = (
            answer.answer_id,
            origin,
            workspace,
            channel,
            thread,
            self.hash_user(user),
            self.redact(answer.question if question is None else question),
            answer.intent,
            None if answer.confidence is None else float(answer.confidence),
            answer.sentiment,
            json.dumps(sources, ensure_ascii=False),
            answer.model_version,
            int(bool(answer.handoff)),
            self.redact(answer.text),
            answer.doc_id,
            json.dumps(dict(answer.sentiment_scores or {})),
            int(bool(answer.used_context)),
            answer.mode,
            json.dumps(answer.composition) if answer.composition else None,
            _quoted_section(answer),
        )
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO answers (answer_id, time, origin, workspace, channel, thread,"
                " user_hash, question, intent, confidence, sentiment, sources, model_version, handoff,"
                " answer_text, doc_id, sentiment_scores, used_context, answer_mode, composition, section)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (answer_id) DO NOTHING",
                (row[0], to_iso(clock.utcnow()), *row[1:]),
            )
            return cur.rowcount == 1

    def record_composition(self, answer: Answer) -> bool:
        """Replace a stored answer's text and outcome with its composed form (Slack streams a
        composition after the select answer was recorded): text, mode, the composition's report,
        intent, doc, sources and hand-off. Returns False when the answer id is not stored."""
        sources = sources_row(answer)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE answers SET answer_text = ?, answer_mode = ?, composition = ?, intent = ?, doc_id = ?,"
                " sources = ?, handoff = ? WHERE answer_id = ?",
                (self.redact(answer.text), answer.mode,
                 json.dumps(answer.composition) if answer.composition else None, answer.intent, answer.doc_id,
                 json.dumps(sources, ensure_ascii=False), int(bool(answer.handoff)), answer.answer_id))
            return cur.rowcount == 1

    def most_answered_docs(self, limit: int = 10) -> list[tuple[str, int]]:
        """(doc id, answers) of the articles answered most often (hand-offs not counted), most first:
        the Slack messages tab suggests them."""
        rows = self._read("SELECT doc_id, count(*) AS n FROM answers WHERE doc_id IS NOT NULL AND handoff = 0"
                          " GROUP BY doc_id ORDER BY n DESC, doc_id LIMIT ?", (int(limit),))
        return [(row["doc_id"], row["n"]) for row in rows]

    def get_answer(self, answer_id: str) -> dict | None:
        rows = self._read("SELECT * FROM answers WHERE answer_id = ?", (answer_id,))
        if not rows:
            return None
        row = decode_answer(rows[0])
        tally = self._read(
            "SELECT vote, count(*) AS n FROM feedback WHERE answer_id = ? GROUP BY vote", (answer_id,)
        )
        votes = {"up": 0, "down": 0}
        votes.update({r["vote"]: r["n"] for r in tally if r["vote"] in votes})
        row["votes"] = votes
        return row

    # -- votes ---------------------------------------------------------------------------------

    def record_vote(
        self,
        answer_id: str,
        vote: str,
        *,
        user: str | None,
        origin: str,
        event_id: str | None = None,
        intent: str | None = None,
        doc_id: str | None = None,
        answer_text: str | None = None,
    ) -> VoteResult:
        """Record 👍/👎 (or a retraction) on an answer; durable before it returns.

        * Last write wins per (answer, user): a new vote replaces the user's earlier one.
          Votes without a user (local CLI use) share one anonymous identity per answer.
        * "retract" marks the user's vote retracted (it no longer counts); corrections are cleared.
        * A user may create at most `daily_vote_cap` new votes per UTC day (changing or
          retracting an existing vote is always allowed; anonymous votes and origins in
          `cap_exempt_origins` are not capped).
        * `event_id` (the Slack event / action id) makes the call idempotent: a replay returns
          status "duplicate". The id is claimed in the same transaction as the vote.
        * Corrections: the right intent, the right article (doc_id) or a written answer text
          (redacted before storage).
        """
        vote = (vote or "").strip().lower()
        if vote not in VOTES:
            raise InvalidVoteError(f"vote must be one of {', '.join(VOTES)}, not {vote!r}")
        if origin not in ORIGINS:
            raise InvalidVoteError(f"origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
        if not answer_id or not isinstance(answer_id, str):
            raise UnknownAnswerError("a vote needs an answer id")
        intent, doc_id, answer_text = (blank_to_none(v) for v in (intent, doc_id, answer_text))
        if vote == "retract" and (intent or doc_id or answer_text):
            raise InvalidVoteError("a retraction cannot carry a correction")
        user_hash = self.hash_user(user)
        if vote == "retract" and user_hash is None:
            raise InvalidVoteError("retracting a vote needs the user who cast it")
        correct_answer = self.redact(answer_text)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM answers WHERE answer_id = ?", (answer_id,)).fetchone() is None:
                raise UnknownAnswerError(f"unknown answer id {answer_id!r}: no answer with that id in {self.path}")
            now = to_iso(clock.utcnow())
            if event_id:
                claimed = events.claim_event(conn, f"vote:{event_id}", now)
                if not claimed or conn.execute("SELECT 1 FROM feedback WHERE event_id = ?", (event_id,)).fetchone():
                    return VoteResult(DUPLICATE, answer_id, vote)
            existing = conn.execute(
                "SELECT id, vote FROM feedback WHERE answer_id = ? AND user_hash IS ?", (answer_id, user_hash)
            ).fetchone()
            stored_vote = "retracted" if vote == "retract" else vote
            if existing is None:
                if vote == "retract":
                    return VoteResult(NO_VOTE, answer_id, vote)
                if self._capped(conn, user_hash, origin, now):
                    return VoteResult(CAPPED, answer_id, vote)
                new_id = self.inserted_id(
                    conn,
                    "INSERT INTO feedback (answer_id, user_hash, vote, origin, event_id, time, created,"
                    " correct_intent, correct_doc_id, correct_answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (answer_id, user_hash, stored_vote, origin, event_id, now, now, intent, doc_id, correct_answer),
                )
                return VoteResult(STORED, answer_id, vote, new_id)
            feedback_id, previous = existing
            if vote == "retract" and previous == "retracted":
                return VoteResult(NO_VOTE, answer_id, vote, feedback_id, previous)
            conn.execute(
                "UPDATE feedback SET vote = ?, origin = ?, event_id = ?, time = ?, correct_intent = ?,"
                " correct_doc_id = ?, correct_answer = ? WHERE id = ?",
                (stored_vote, origin, event_id, now, intent, doc_id, correct_answer, feedback_id),
            )
            return VoteResult(STORED, answer_id, vote, feedback_id, previous)

    def _capped(self, conn: Any, user_hash: str | None, origin: str, now: str) -> bool:
        if not self.daily_vote_cap or user_hash is None or origin in self.cap_exempt_origins:
            return False
        day_start = now[:10] + "T00:00:00.000000Z"
        (today,) = conn.execute(
            "SELECT count(*) FROM feedback WHERE user_hash = ? AND created >= ?", (user_hash, day_start)
        ).fetchone()
        return today >= self.daily_vote_cap

    def claim_event(self, event_id: str) -> bool:
        """Atomically mark a Slack event id processed: True the first time, False on every replay.

        For vote events pass `event_id` to record_vote instead (it claims the id in the same
        transaction as the vote, so a crash cannot lose the vote after claiming it).
        """
        if not event_id:
            raise UserError("claim_event needs an event id")
        with self._write() as conn:
            return events.claim_event(conn, event_id, to_iso(clock.utcnow()))

    def feedback_since(self, since: Any = None, *, include_retracted: bool = False, limit: int | None = None) -> list[dict]:
        """Votes changed strictly after `since` (None: all), oldest first, each joined with its answer.

        Keys: feedback_id, answer_id, vote (up/down; "retracted" only with include_retracted),
        correct_intent, correct_doc_id, correct_answer, origin, user_hash, event_id, time (of the
        vote's last change), created, question (redacted), answer_intent, answer_doc_id,
        confidence, model_version, answer_text, handoff, answer_time, used_context (the answer
        read the question with the thread's earlier turn: a follow-up), answer_mode (select |
        compose: `answer_text` is then the composed text), composition (its report, decoded; with
        "passages": [{n, doc_id, heading}], what the model read; None in select mode) and
        answer_section (the id of the section the answer quoted; None for a hand-off, or answers
        stored before sections were).
        `since` may be a training-run dict (its `data_until`); the newest row's `time` is the
        watermark to record as `data_until` for the next run.
        """
        where, params = [], []
        bound = parse_since(since)
        if bound is not None:
            where.append("f.time > ?")
            params.append(bound)
        if not include_retracted:
            where.append("f.vote != 'retracted'")
        sql = FEEDBACK_SINCE_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY f.time, f.id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = self._read(sql, params)
        for row in rows:
            row["handoff"] = bool(row["handoff"])
            row["used_context"] = bool(row["used_context"])
            row["answer_mode"] = row["answer_mode"] or "select"
            row["composition"] = loads(row["composition"])
        return rows


def _quoted_section(answer: Answer) -> str | None:
    """The id of the section an answer quoted: its lead ("<doc>#") when it showed the whole article;
    None for a hand-off."""
    if answer.handoff or not answer.doc_id:
        return None
    return (answer.section or {}).get("id") or f"{answer.doc_id}#"


def blank_to_none(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidVoteError(f"a correction must be text, not {type(value).__name__}")
    return value.strip() or None

