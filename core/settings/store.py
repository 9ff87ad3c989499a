"""Store settings: the model store (where versions are published, retention, writers), where the
store's database lives, and its privacy knobs (general fields, no prefix)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.errors import ConfigError

MODEL_STORE_SCHEMES = ("s3",)
# Loose on purpose: S3-compatible stores accept more than AWS's own naming rules.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


def model_store_location(url: str) -> tuple[str, str]:
    """(bucket, prefix) of a `model_store` value `s3://bucket/prefix` (prefix without slashes at its
    ends, "" for the bucket's root); ConfigError for any other scheme or a missing bucket."""
    scheme, sep, rest = str(url).strip().partition("://")
    if not sep or scheme.lower() not in MODEL_STORE_SCHEMES:
        raise ConfigError(f"setting model_store must be s3://BUCKET[/PREFIX], not {url!r}")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ConfigError(f"setting model_store {url!r} names no bucket (s3://BUCKET[/PREFIX])")
    return bucket, prefix.strip("/")


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
    # Where model versions are published: unset keeps them in CSBOT_HOME/models only; "s3://bucket/prefix"
    # publishes them to an S3-compatible store (boto3, configured by AWS_ENDPOINT_URL,
    # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) that every replica serves from,
    # CSBOT_HOME/models becoming its local cache (docs/scale-out.md).
    model_store: str | None = None
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
        if self.model_store is not None:
            try:
                model_store_location(self.model_store)
            except ConfigError as exc:
                problems.append(str(exc).removeprefix("setting "))
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
