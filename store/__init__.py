"""The conversation and feedback store (SQLite): the bot writes, the retrain reads.

See docs/store.md for the schema, privacy rules, retention and the CLI commands.
"""

from core.clock import parse_duration, parse_since, to_iso
from store.answers import ORIGINS, VOTES, InvalidVoteError, UnknownAnswerError, VoteResult
from store.redact import KINDS as REDACTION_KINDS
from store.redact import Redactor, redact
from store.runs import CONSUMING_STATUSES
from store.schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    CorruptDatabaseError,
    ForeignDatabaseError,
    SchemaTooNewError,
    StoreBusyError,
    StoreError,
    StoreFullError,
)
from store.store import Store, load_or_create_salt
from store.votes import ImportReport, ImportStoppedError, import_votes, parse_vote

__all__ = [
    "APPLICATION_ID",
    "CONSUMING_STATUSES",
    "ORIGINS",
    "REDACTION_KINDS",
    "SCHEMA_VERSION",
    "VOTES",
    "CorruptDatabaseError",
    "ForeignDatabaseError",
    "ImportReport",
    "ImportStoppedError",
    "InvalidVoteError",
    "Redactor",
    "SchemaTooNewError",
    "Store",
    "StoreBusyError",
    "StoreError",
    "StoreFullError",
    "UnknownAnswerError",
    "VoteResult",
    "import_votes",
    "load_or_create_salt",
    "parse_duration",
    "parse_since",
    "parse_vote",
    "redact",
    "to_iso",
]
