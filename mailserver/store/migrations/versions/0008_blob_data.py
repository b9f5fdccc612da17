"""Small blobs stored in the database (mailserver.blobs.inline).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_data",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blob_data")),
    )
    from mailserver.store.schema import storage_ddl

    for statement in storage_ddl(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    # refuse rather than lose mail: the content of inline blobs exists nowhere else
    if op.get_bind().execute(sa.text("SELECT 1 FROM blob_data LIMIT 1")).first() is not None:
        raise RuntimeError("blob_data holds messages; downgrading below 0008 would lose them")
    op.drop_table("blob_data")
