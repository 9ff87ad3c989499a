"""store_meta: values every process of one store shares (the user-hash salt of replicas on PostgreSQL).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("store_meta", sa.Column("key", sa.Text(), primary_key=True),
                    sa.Column("value", sa.Text(), nullable=False))


def downgrade() -> None:
    raise NotImplementedError("csbot migrates forward only: restore a backup to go back")
