"""Index thread_refs by thread: destroying a thread's last email deletes its refs by thread id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_thread_refs_account_id_thread_id", "thread_refs",
                    ["account_id", "thread_id"])


def downgrade() -> None:
    op.drop_index("ix_thread_refs_account_id_thread_id", table_name="thread_refs")
