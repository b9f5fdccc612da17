"""Outbound delivery queue: queue_messages and queue_recipients (mailserver.queue).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "queue_messages",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("blob_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("ret", sa.String(length=4), nullable=True),
        sa.Column("envid", sa.Text(), nullable=True),
        sa.Column("body", sa.String(length=16), nullable=True),
        sa.Column("smtputf8", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("requiretls", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("is_dsn", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_messages")),
    )
    op.create_index("ix_queue_messages_account_id", "queue_messages", ["account_id"])
    op.create_table(
        "queue_recipients",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("orcpt", sa.Text(), nullable=True),
        sa.Column("notify", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=8), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("last_attempt_at", sa.BigInteger(), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delay_notified", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["queue_messages.id"],
                                name=op.f("fk_queue_recipients_message_id_queue_messages"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_recipients")),
    )
    op.create_index("ix_queue_recipients_state_next_attempt_at", "queue_recipients",
                    ["state", "next_attempt_at"])
    op.create_index("ix_queue_recipients_message_id", "queue_recipients", ["message_id"])
    op.create_index("ix_queue_recipients_domain", "queue_recipients", ["domain"])


def downgrade() -> None:
    op.drop_index("ix_queue_recipients_domain", table_name="queue_recipients")
    op.drop_index("ix_queue_recipients_message_id", table_name="queue_recipients")
    op.drop_index("ix_queue_recipients_state_next_attempt_at", table_name="queue_recipients")
    op.drop_table("queue_recipients")
    op.drop_index("ix_queue_messages_account_id", table_name="queue_messages")
    op.drop_table("queue_messages")
