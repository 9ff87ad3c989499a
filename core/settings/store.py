"""Store settings: the model store's retention and writers, and the SQLite store's privacy knobs
(general fields, no prefix)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StoreSettings:
    """General fields of `Settings` read by the model store (serving/versions.py) and the store (store/)."""

    # Model versions kept besides the champion and its parent (the rollback target): the newest N.
    # `csbot models prune` applies it, and every ingest and retrain runs it after a promotion.
    keep_versions: int = 5
    # Seconds a writer of the model store (ingest, the retrain's promotion, forget, `csbot models
    # promote/rollback/prune`) waits for another one to finish before it gives up (exit 2); 0: not at all.
    writer_wait_seconds: float = 1800
    # Store (store/): salted user hashes, per-user daily vote cap, PII redaction, message text.
    user_hash_salt: str | None = field(default=None, repr=False)  # None: a salt kept in $CSBOT_HOME/salt
    vote_daily_cap: int = 200
    redact_pii: bool = True
    store_message_text: bool = False

    def problems(self) -> list[str]:
        if self.writer_wait_seconds < 0:
            return ["writer_wait_seconds must be 0 (do not wait) or more"]
        return []
