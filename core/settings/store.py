"""Store settings: the model store's retention and writers, where the store's database lives, and its
privacy knobs (general fields, no prefix)."""

from __future__ import annotations

from dataclasses import dataclass, field

# The URL schemes `database_url` takes (psycopg 3 is the driver either way).
DATABASE_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def without_password(url: str | None) -> str | None:
    """A database URL as it may be shown (messages, logs, reports): its password replaced by ***."""
    scheme, sep, rest = (url or "").partition("://")
    if not sep or "@" not in rest:
        return url
    auth, _, host = rest.rpartition("@")
    return f"{scheme}://{auth.split(':', 1)[0]}{':***' if ':' in auth else ''}@{host}"


@dataclass
class StoreSettings:
    """General fields of `Settings` read by the model store (serving/versions.py) and the store (store/)."""

    # Model versions kept besides the champion and its parent (the rollback target): the newest N.
    # `csbot models prune` applies it, and every ingest and retrain runs it after a promotion.
    keep_versions: int = 5
    # Seconds a writer of the model store (ingest, the retrain's promotion, forget, `csbot models
    # promote/rollback/prune`) waits for another one to finish before it gives up (exit 2); 0: not at all.
    writer_wait_seconds: float = 1800
    # Where the store (store/) keeps answers, votes, monitoring, training runs and the Slack inbox: unset
    # (the default) is the SQLite file $CSBOT_HOME/csbot.sqlite3; "postgresql://user:password@host:5432/db"
    # puts all of it in PostgreSQL, shared by every replica (docs/store.md, docs/scale-out.md).
    database_url: str | None = field(default=None, repr=False)
    # Store (store/): salted user hashes, per-user daily vote cap, PII redaction, message text.
    user_hash_salt: str | None = field(default=None, repr=False)  # None: a salt kept in $CSBOT_HOME/salt
    vote_daily_cap: int = 200
    redact_pii: bool = True
    store_message_text: bool = False

    def problems(self) -> list[str]:
        problems = []
        if self.writer_wait_seconds < 0:
            problems.append("writer_wait_seconds must be 0 (do not wait) or more")
        url = (self.database_url or "").strip()
        if url and not url.lower().startswith(DATABASE_SCHEMES):
            shown = url.split("://", 1)[0] + "://…" if "://" in url else "a value without a scheme"
            problems.append(f"database_url must be a PostgreSQL URL (postgresql://user@host:5432/dbname) or unset "
                            f"for SQLite under CSBOT_HOME, not {shown}")
        return problems

    @property
    def uses_postgres(self) -> bool:
        """Whether the store lives in PostgreSQL (`database_url` set), not in $CSBOT_HOME's SQLite file."""
        return bool((self.database_url or "").strip())
