"""What the Slack front end needs of the engine and of the store, as typed contracts.

Handlers are written against these Protocols, not against whatever attributes the concrete
classes happen to have: `serving.engine.Engine` and `store.Store` implement them (checked in
tests/test_architecture.py and tests/test_contracts.py), and a handler never reaches into the
engine's loaded model (`engine.catalogue()` lists the articles and intents). The store's inbox and
reply ledger are typed by store/inbox.py's `SlackInbox`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol, runtime_checkable

from core.answer import Answer
from store.inbox import SlackInbox


@runtime_checkable
class AnswerEngine(Protocol):
    """serving.engine.Engine as the Slack app uses it."""

    @property
    def model_version(self) -> str: ...

    def answer(self, text: str, context: list[str] | None = None) -> Answer: ...

    def mode_for(self, requested: str | None = None) -> str: ...

    def compose(self, answer: Answer, context: list[str] | None = None) -> Answer: ...

    def compose_stream(self, answer: Answer, context: list[str] | None = None) -> Any: ...  # serving.engine.ComposedStream

    def answer_batch(self, texts: list[str], contexts: list[list[str]] | None = None) -> list[Answer]: ...

    def pick(self, question: str, doc_id: str, section_id: str | None = None) -> Answer: ...

    def sentiment(self, texts: list[str]) -> list[tuple[str, dict[str, float]]]: ...

    def catalogue(self) -> Any: ...  # serving.engine.Catalogue

    def embed(self, texts: list[str]) -> Any: ...  # numpy array: the weekly digest's and App Home's gaps

    def reload(self, force: bool = False) -> bool: ...

    def maybe_reload(self) -> bool: ...

    def store_status(self) -> dict: ...  # /healthz: where versions come from, the last check


@runtime_checkable
class SlackStore(Protocol):
    """store.Store as the Slack app uses it: answers, votes, monitoring, status and the inbox."""

    store_message_text: bool

    @property
    def inbox(self) -> SlackInbox: ...

    def hash_user(self, user: str | None) -> str | None: ...

    def claim_event(self, event_id: str) -> bool: ...

    def answer_outcomes(self, since: Any, until: Any) -> list[dict]: ...

    def redact(self, text: str | None) -> str | None: ...

    def record_answer(self, answer: Answer, **provenance: Any) -> bool: ...

    def record_composition(self, answer: Answer) -> bool: ...

    def get_answer(self, answer_id: str) -> dict | None: ...

    def record_vote(self, answer_id: str, vote: str, **provenance: Any) -> Any: ...  # store.VoteResult

    def record_monitored_message(self, **fields: Any) -> bool: ...

    def monitored_message(self, channel: str, ts: str) -> dict | None: ...

    def monitored_messages(self, channel: str | None = None, since: Any = None) -> list[dict]: ...

    def monitored_sentiment_counts(self, channel: str, start: Any, end: Any) -> dict[str, int]: ...

    def claim_monitoring_alert(self, channel: str, time: Any, cooldown: dt.timedelta,
                               details: dict | None = None) -> int | None: ...

    def monitoring_alerts(self, channel: str | None = None, since: Any = None) -> list[dict]: ...

    def record_sentiment_correction(self, **fields: Any) -> bool: ...

    def last_training_run(self, *, any_status: bool = False) -> dict | None: ...

    def counts(self) -> dict[str, int]: ...

    def database_status(self) -> dict: ...

    def most_answered_docs(self, limit: int = 10) -> list[tuple[str, int]]: ...
