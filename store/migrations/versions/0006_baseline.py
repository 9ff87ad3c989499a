"""Baseline: the schema the legacy SQLite steps 1-6 (store/schema.py LEGACY_STEPS) end at.

Nothing to do here. A database reaches this revision in one of two ways: a new one is created from
store/tables.py and stamped with the head; a SQLite file at user_version 6 (or older, after the
legacy steps) is stamped with this revision. Revisions after it (append them to this folder, numbered
0007, 0008, ...; never edit one that has shipped) run on both dialects, each carrying the previous
revision's schema to the next, and store/tables.py is changed in the same commit.

Revision ID: 0006
Revises:
"""

revision = "0006"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    raise NotImplementedError("csbot migrates forward only: restore a backup to go back")
